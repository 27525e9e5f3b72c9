"""Known answers for the metric functions on small hand-made arrays."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from boneage.config import StageConfig
from boneage.evaluation.metrics import all_metrics, grouped_metrics, regression_metrics, stage_metrics, stages_from_months

pytestmark = pytest.mark.unit


def test_regression_metrics_known_answer():
    m = regression_metrics([10, 20, 30, 40], [12, 18, 30, 50])  # errors +2, -2, 0, +10
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(3.5)
    assert m["rmse"] == pytest.approx(math.sqrt(27.0))  # (4 + 4 + 0 + 100) / 4
    assert m["bias"] == pytest.approx(2.5)
    assert m["r2"] == pytest.approx(1 - 108 / 500)  # SS_res 108, SS_tot 500
    assert m["within_6"] == pytest.approx(0.75)
    assert m["within_12"] == pytest.approx(1.0) and m["within_24"] == pytest.approx(1.0)


def test_regression_metrics_perfect_and_biased():
    y = np.array([5.0, 50.0, 150.0, 200.0])
    perfect = regression_metrics(y, y)
    assert perfect["mae"] == 0 and perfect["rmse"] == 0 and perfect["bias"] == 0 and perfect["r2"] == 1.0
    shifted = regression_metrics(y, y - 12)
    assert shifted["mae"] == pytest.approx(12) and shifted["bias"] == pytest.approx(-12)
    assert shifted["within_6"] == 0.0 and shifted["within_12"] == 1.0  # the bound is inclusive


def test_regression_metrics_degenerate_inputs():
    empty = regression_metrics([], [])
    assert empty["n"] == 0
    assert all(math.isnan(empty[k]) for k in ("mae", "rmse", "bias", "r2", "within_6"))
    one = regression_metrics([100], [90])
    assert one["mae"] == 10 and math.isnan(one["r2"])  # R^2 undefined for one case
    const = regression_metrics([100, 100], [90, 110])
    assert const["mae"] == 10 and math.isnan(const["r2"])  # ... and for a constant reference


PROB = np.array([[0.8, 0.1, 0.1],
                 [0.2, 0.5, 0.3],
                 [0.1, 0.2, 0.7],
                 [0.1, 0.6, 0.3]])
Y_STAGE = np.array([0, 1, 2, 2])  # predictions (argmax): 0, 1, 2, 1


def test_stage_metrics_known_answer():
    m = stage_metrics(Y_STAGE, PROB)
    assert m["stage_accuracy"] == pytest.approx(0.75)
    # F1 per class: 1, 2/3 (P .5, R 1), 2/3 (P 1, R .5)
    assert m["stage_macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # quadratic weights (i-j)^2/4: observed disagreement 0.25, expected 1.25
    assert m["stage_qwk"] == pytest.approx(0.8)
    # one-vs-rest AUC: class 0 -> 1, class 1 -> 2/3, class 2 -> 3.5/4
    assert m["stage_roc_auc"] == pytest.approx((1 + 2 / 3 + 0.875) / 3)


def test_stage_metrics_perfect_and_degenerate():
    perfect = stage_metrics([0, 1, 2], np.eye(3))
    assert perfect["stage_accuracy"] == 1 and perfect["stage_macro_f1"] == 1
    assert perfect["stage_qwk"] == 1 and perfect["stage_roc_auc"] == 1
    single = stage_metrics([1, 1], np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1]]))
    assert single["stage_accuracy"] == 1.0
    assert math.isnan(single["stage_roc_auc"]) and math.isnan(single["stage_qwk"])  # one class only
    empty = stage_metrics([], np.zeros((0, 3)))
    assert all(math.isnan(v) for v in empty.values())


def test_stages_from_months_thresholds():
    months = [0, 95.9, 96, 179.9, 180, 228]
    np.testing.assert_array_equal(stages_from_months(months), [0, 0, 1, 1, 2, 2])
    cfg = StageConfig()
    assert [cfg.stage_of(m) for m in months] == [0, 0, 1, 1, 2, 2]
    custom = StageConfig(child_below_months=50, adult_from_months=100)
    np.testing.assert_array_equal(stages_from_months([49, 50, 99, 100], custom), [0, 1, 1, 2])


def _pred_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": list("abcdef"),
        "male": [True, True, False, False, True, False],
        "boneage": [30.0, 120.0, 200.0, 100.0, np.nan, 60.0],
        "boneage_pred": [36.0, 110.0, 200.0, 100.0, 50.0, 64.0],
        "p_child": [0.9, 0.1, 0.0, 0.2, 0.5, 0.8],
        "p_adolescent": [0.1, 0.8, 0.3, 0.7, 0.4, 0.2],
        "p_adult": [0.0, 0.1, 0.7, 0.1, 0.1, 0.0],
    })


def test_all_and_grouped_metrics():
    df = _pred_frame()
    g = grouped_metrics(df)
    overall = g["overall"]
    assert overall["n"] == 5  # the unlabelled row is left out
    assert overall["mae"] == pytest.approx((6 + 10 + 0 + 0 + 4) / 5)
    assert overall["stage_accuracy"] == 1.0
    assert set(g["by_sex"]) == {"M", "F"}
    assert g["by_sex"]["M"]["n"] == 2 and g["by_sex"]["M"]["mae"] == pytest.approx(8.0)
    assert g["by_sex"]["F"]["n"] == 3 and g["by_sex"]["F"]["mae"] == pytest.approx(4 / 3)
    assert g["by_age_band"]["2-5y"]["n"] == 1 and g["by_age_band"]["2-5y"]["mae"] == pytest.approx(6.0)
    assert sum(v["n"] for v in g["by_age_band"].values()) == 5
    direct = all_metrics(df.dropna(subset=["boneage"]))
    assert direct["mae"] == pytest.approx(overall["mae"]) and direct["stage_qwk"] == pytest.approx(1.0)
