"""Site calibration in the dashboard: the Predict page's site selector and the Uncertainty page's section,
run headless with Streamlit's AppTest on the shipped profile artifacts/sites/rsna-official.json."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.dashboard.app_driver import open_page

from boneage.store.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "views"
FIRST = 120
TEST_CASE = "4361"  # official test radiograph, a boy
STORE = ArtifactStore.default()


@pytest.fixture(autouse=True)
def _profile_present():
    if not STORE.exists("sites/rsna-official.json"):
        pytest.fail(f"{STORE.root}/sites/rsna-official.json missing: see docs/operations.md, Site calibration", pytrace=False)


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_uncertainty_page_shows_the_sites_before_and_after(data_dir, monkeypatch):
    monkeypatch.setenv("BONEAGE_DATA", str(data_dir))
    at = open_page(PAGES / "5_Uncertainty.py", timeout=FIRST)
    assert not at.exception, [e.message for e in at.exception]
    ev = STORE.json("sites/rsna-official.json")["evaluation"]
    shown = _texts(at)
    assert f"90 % interval coverage {ev['after']['coverage']['value']:.1%}" in shown
    assert f"90 % interval mean width (months) {ev['after']['width']['value']:.1f} mo" in shown
    assert "10-fold cross-validated" in shown and "Site calibration" in [h.value for h in at.header]
    tables = [d.value for d in at.dataframe if "difference_ci" in d.value.columns]
    assert len(tables) == 1 and tables[0]["after"].iloc[0] == pytest.approx(ev["after"]["mae"]["value"])


def test_predict_page_site_selector_changes_the_prediction(data_dir, monkeypatch):
    monkeypatch.setenv("BONEAGE_DATA", str(data_dir))
    at = open_page(PAGES / "7_Predict.py", timeout=FIRST)
    assert at.selectbox(key="pr_site").value == "none"
    at.radio(key="pr_sex").set_value("male")
    at.file_uploader(key="pr_files").set_value([(f"{TEST_CASE}.png", (data_dir / "test" / f"{TEST_CASE}.png").read_bytes(),
                                                 "image/png")])
    at.run(timeout=FIRST)
    assert not at.exception, [e.message for e in at.exception]
    plain = at.dataframe[-1].value.iloc[0]
    assert pd.isna(plain["site"])  # the shared row schema (boneage.inference.assess.row_columns) always has the column
    at.selectbox(key="pr_site").set_value("rsna-official").run(timeout=FIRST)
    assert not at.exception, [e.message for e in at.exception]
    res = at.dataframe[-1].value.iloc[0]
    assert res["site"] == "rsna-official"
    from boneage.evaluation.site_calibration import load_site

    profile = load_site(STORE.root / "sites" / "rsna-official.json")
    age, ivs = profile.apply([plain["boneage_pred"]], [plain["uncertainty"]], [True])
    assert res["boneage_pred"] == pytest.approx(age[0], abs=0.02)
    assert res["upper_90"] == pytest.approx(ivs["90"][1][0], abs=0.05)
    assert any("Site **rsna-official**" in c.value for c in at.caption)
