"""The follow-up batch's pieces: the measured test-retest SD and the demonstration series."""
import json

import pytest

from boneage.inference.series import DEMO_NOTE, demo_series, films_of_rows, measured_retest_sd
from boneage.growth.followup import follow_up
from boneage.store.artifacts import ArtifactMissingError, ArtifactStore

pytestmark = pytest.mark.unit


def test_retest_sd_is_the_precision_benchmarks_official_test_figure(tmp_path):
    store = ArtifactStore.default()
    assert measured_retest_sd(store) == store.json("precision.json")["test_retest_sd"]["official_test"]
    assert 0.5 < measured_retest_sd(store) < 5
    with pytest.raises(ArtifactMissingError):
        measured_retest_sd(ArtifactStore(tmp_path))
    (tmp_path / "precision.json").write_text(json.dumps({"test_retest_sd": {"internal_test": 3.0}}))
    with pytest.raises(ValueError, match="no test_retest_sd for 'official_test'"):
        measured_retest_sd(ArtifactStore(tmp_path))


def test_demo_series_is_four_test_films_a_year_apart_and_says_what_it_is():
    preds = ArtifactStore.default().predictions()
    rows = demo_series(preds, male=False)
    assert len(rows) == 4 and rows["id"].is_unique and (rows["patient_id"] == "DEMO").all()
    test_ids = set(preds.loc[preds["split"] == "test", "id"].astype(str))
    assert set(rows["id"]) <= test_ids and not rows["male"].any()
    assert rows["chronological_age_months"].is_monotonic_increasing and "DEMONSTRATION" in DEMO_NOTE
    fu = follow_up(films_of_rows(rows), 2.0)
    assert len(fu.steps) == 3 and fu.velocity is not None
