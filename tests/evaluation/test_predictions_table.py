"""The predictions table's one schema module: derived columns, reference rows, ordered age bands, storage, and the
committed table rebuilt byte for byte from its model outputs."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from boneage.store.artifacts import ArtifactStore
from boneage.config import StageConfig, to_jsonable
from boneage.evaluation.conformal import add_intervals, coverage_report
from boneage.evaluation.predictions_table import (COLUMNS, for_storage, from_storage, model_columns, read_predictions,
                                       with_reference, write_predictions)
from boneage.training.splits import AGE_BAND, AGE_BAND_LABELS, age_band

pytestmark = pytest.mark.integration

STORE = ArtifactStore.default()
STAGE_COLUMNS = [f"p_{n.lower()}" for n in StageConfig().names]


def _cases() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c"], "male": [True, False, True], "boneage": [10.0, 210.0, np.nan],
                         "split": ["test", "test", "official_test"]})


def test_model_columns_derive_every_column_in_schema_order():
    prob = np.array([[0.9, 0.08, 0.02], [0.0, 0.5, 0.5], [0.2, 0.7, 0.1]], np.float32)
    df = model_columns(_cases(), np.array([12.0, 200.0, 150.0]), np.array([5.0, 6.0, 7.0]), prob)
    named = ["id", "male", "boneage", "split", "sex", "age_band", "boneage_pred", "residual", "abs_error",
             "uncertainty", "stage_true", "stage_pred"]
    assert list(df.columns) == [*named, *STAGE_COLUMNS, "entropy"]
    assert [c for c in COLUMNS if "<" not in c][:len(named)] == named  # the documented schema, same order
    assert df["sex"].tolist() == ["M", "F", "M"]
    assert df["age_band"].dtype == AGE_BAND and df["age_band"].tolist()[:2] == ["0-2y", "17y+"]
    assert pd.isna(df["age_band"].iloc[2]) and pd.isna(df["residual"].iloc[2])
    assert df["residual"].tolist()[:2] == [2.0, -10.0] and df["abs_error"].tolist()[:2] == [2.0, 10.0]
    assert df["stage_true"].tolist() == [0, 2, -1]
    assert df["stage_pred"].tolist() == ["Child", "Adolescent", "Adolescent"]
    assert df["entropy"].iloc[1] == pytest.approx(np.log(2), abs=1e-6)  # two equal stages, one impossible


def test_with_reference_drops_unknown_references_and_recomputes_errors():
    df = _cases().assign(boneage_pred=[12.0, 200.0, 150.0], residual=[99.0, 99.0, 99.0],
                         age_band=[None, "17y+", None])
    d = with_reference(df)
    assert d["id"].tolist() == ["a", "b"]
    assert d["residual"].tolist() == [2.0, -10.0] and d["abs_error"].tolist() == [2.0, 10.0]
    assert d["sex"].tolist() == ["M", "F"]
    assert d["age_band"].dtype == AGE_BAND and d["age_band"].tolist() == ["0-2y", "17y+"]  # the missing band filled
    assert df["residual"].tolist() == [99.0, 99.0, 99.0]  # the input is left alone


def test_age_bands_are_an_ordered_categorical_that_sorts_in_age_order():
    bands = age_band([210, 10, 140, 60, np.nan])
    assert bands.dtype == AGE_BAND and bands.cat.ordered
    assert bands.sort_values().dropna().tolist() == ["0-2y", "5-8y", "11-14y", "17y+"]
    assert list(AGE_BAND.categories) == list(AGE_BAND_LABELS)


def test_storage_keeps_bands_as_text_and_reads_them_back_ordered(tmp_path):
    df = model_columns(_cases(), np.array([12.0, 200.0, 150.0]), np.ones(3), np.full((3, 3), 1 / 3, np.float32))
    stored = for_storage(df)
    assert stored["age_band"].dtype != AGE_BAND and stored["age_band"].tolist()[:2] == ["0-2y", "17y+"]
    assert df["age_band"].dtype == AGE_BAND  # for_storage copies
    write_predictions(df, tmp_path / "p.parquet")
    back = read_predictions(tmp_path / "p.parquet")
    assert back["age_band"].dtype == AGE_BAND and back["age_band"].isna().tolist() == [False, False, True]
    pd.testing.assert_frame_equal(back, from_storage(stored))
    assert not list(tmp_path.glob("*.tmp"))


def test_committed_table_is_rebuilt_byte_for_byte_from_its_model_outputs(tmp_path):
    """The shipped predictions.parquet and model/conformal.json follow from the stored model outputs (age, scale,
    stage probabilities) through model_columns and add_intervals: nothing else derives a column."""
    path = STORE.path("predictions.parquet")
    stored = pd.read_parquet(path)
    prob = stored[STAGE_COLUMNS].to_numpy().astype(np.float32)
    df = model_columns(stored[["id", "male", "boneage", "split"]], stored["boneage_pred"].to_numpy(),
                       stored["uncertainty"].to_numpy(), prob)
    add_intervals(df, tmp_path / "conformal.json")
    df["outlier_score"], df["is_outlier"] = stored["outlier_score"], stored["is_outlier"]
    write_predictions(df, tmp_path / "predictions.parquet")

    def sha(p):
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert sha(tmp_path / "predictions.parquet") == sha(path)
    assert sha(tmp_path / "conformal.json") == sha(STORE.path("model/conformal.json"))
    report = json.dumps(to_jsonable(coverage_report(read_predictions(path))), indent=2)
    assert report == STORE.path("coverage.json").read_text()  # what write_json_atomic wrote
