"""Stage-classifier calibration: ECE, Brier, entropy, ROC and the thresholded-regression comparison."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from boneage.evaluation import calibration as C
from boneage.config import StageConfig

pytestmark = pytest.mark.unit


def _calibrated(n=20000, seed=0):
    """Probabilities from a Dirichlet and labels drawn *from those probabilities*: calibrated by design."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1.0, 1.0, 1.0], n)
    y = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    return y, p


def test_ece_near_zero_when_calibrated_and_larger_when_overconfident():
    y, p = _calibrated()
    ece = C.expected_calibration_error(y, p)
    sharp = p ** 3 / (p ** 3).sum(1, keepdims=True)  # same ranking, more extreme: overconfident
    ece_sharp = C.expected_calibration_error(y, sharp)
    assert ece < 0.02
    assert ece_sharp > 0.08 and ece_sharp > 4 * ece
    rel = C.reliability_data(y, sharp)
    used = rel[rel["count"] > 0]
    assert (used["gap"].iloc[-3:] > 0).all()  # confident bins claim more than they deliver


def test_reliability_bins_match_sklearn_and_unknown_stage_dropped():
    y, p = _calibrated(3000, seed=1)
    rel = C.reliability_data(y, p, n_bins=10)
    assert len(rel) == 10 and rel["count"].sum() == 3000
    assert rel.loc[rel["bin_upper"] <= 1 / 3, "count"].sum() == 0  # top label of 3 classes is >= 1/3
    conf, correct = p.max(1), (p.argmax(1) == y)
    acc_sk, conf_sk = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    used = rel[rel["count"] > 0]
    np.testing.assert_allclose(used["accuracy"], acc_sk)
    np.testing.assert_allclose(used["confidence"], conf_sk)
    y2 = np.r_[y, [-1, -1]]
    p2 = np.vstack([p, [[1, 0, 0], [0, 0, 1]]])
    pd.testing.assert_frame_equal(C.reliability_data(y2, p2), rel)


def test_brier_score():
    y = np.array([0, 1, 2, 1])
    onehot = np.eye(3)[y]
    assert C.brier_score(y, onehot) == 0.0
    assert C.brier_score(y, np.eye(3)[(y + 1) % 3]) == pytest.approx(2.0)
    assert C.brier_score(y, np.full((4, 3), 1 / 3)) == pytest.approx(2 / 3)
    assert C.brier_score(np.r_[y, -1], np.vstack([onehot, [0, 0, 1]])) == 0.0  # unknown stage ignored


def test_predictive_entropy():
    ent = C.predictive_entropy([[1 / 3] * 3, [1, 0, 0], [0.5, 0.5, 0]])
    np.testing.assert_allclose(ent, [math.log(3), 0.0, math.log(2)])


def test_confusion_accepts_codes_and_names():
    names = StageConfig().names
    y, pred = [0, 0, 1, 2, 2, -1], [0, 1, 1, 2, 0, 2]
    cm = C.confusion(y, pred, names)
    assert cm.loc["Child"].tolist() == [1, 1, 0]
    assert cm.loc["Adolescent"].tolist() == [0, 1, 0]
    assert cm.loc["Adult"].tolist() == [1, 0, 1]
    assert cm.to_numpy().sum() == 5
    by_name = C.confusion([names[i] for i in y[:5]], [names[i] for i in pred[:5]], names)
    pd.testing.assert_frame_equal(cm, by_name)


def test_roc_curves():
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y] * 0.8 + 0.2 / 3
    curves, aucs = C.roc_curves(y, perfect, StageConfig().names)
    assert aucs == {"Child": 1.0, "Adolescent": 1.0, "Adult": 1.0}
    assert set(curves.columns) >= {"class", "fpr", "tpr"}
    assert set(curves["class"]) == {"Child", "Adolescent", "Adult"}
    _, aucs2 = C.roc_curves(np.array([0, 0, 1, 1]), perfect[:4], StageConfig().names)
    assert math.isnan(aucs2["Adult"]) and aucs2["Child"] == 1.0  # no adults: no curve


def _hand_table():
    """Seven cases around the 96 / 180 month thresholds plus one without a reference."""
    pred = [50.0, 95.9, 96.0, 150.0, 179.9, 180.0, 200.0, 120.0]
    truth = [0, 1, 1, 1, 2, 2, 2, -1]
    clf = [0, 0, 1, 1, 2, 2, 1, 0]  # classifier head's argmax stage
    prob = np.full((8, 3), 0.1)
    prob[np.arange(8), clf] = 0.8
    return pd.DataFrame({"id": [f"c{i}" for i in range(8)], "boneage": [40, 100, 100, 150, 185, 190, 210, np.nan],
                         "boneage_pred": pred, "stage_true": truth,
                         "p_child": prob[:, 0], "p_adolescent": prob[:, 1], "p_adult": prob[:, 2]})


def test_thresholded_regression_on_hand_table():
    cmp = C.compare_with_thresholded_regression(_hand_table(), StageConfig())
    assert cmp["n"] == 7
    # thresholding: 50->C, 95.9->C, 96->A, 150->A, 179.9->A, 180->Ad, 200->Ad; truth C A A A Ad Ad Ad
    reg = cmp["thresholded_regression"]
    assert reg["accuracy"] == pytest.approx(5 / 7)
    assert reg["confusion"] == [[1, 0, 0], [1, 2, 0], [0, 1, 2]]
    # classifier: C C A A Ad Ad A vs the same truth
    cl = cmp["classifier"]
    assert cl["accuracy"] == pytest.approx(5 / 7)
    assert cl["confusion"] == [[1, 0, 0], [1, 2, 0], [0, 1, 2]]
    assert cmp["agreement"] == pytest.approx(5 / 7)  # differ on 179.9 and 200
    assert cmp["discordant"] == {"classifier_right_regression_wrong": 1, "regression_right_classifier_wrong": 1}
    assert cmp["mcnemar_p"] == pytest.approx(1.0)
    # macro-F1 by hand: Child P=1/2 R=1 F=2/3; Adolescent P=2/3 R=2/3; Adult P=1 R=2/3 F=0.8
    assert reg["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.8) / 3)


def test_custom_thresholds_are_used():
    cmp = C.compare_with_thresholded_regression(_hand_table(), StageConfig(child_below_months=60, adult_from_months=190))
    # thresholding now: 50->C, 95.9->A, 96->A, 150->A, 179.9->A, 180->A, 200->Ad
    assert cmp["thresholded_regression"]["confusion"] == [[1, 0, 0], [0, 3, 0], [0, 2, 1]]
    assert cmp["thresholds_months"] == [60.0, 190.0]


def test_report_is_strict_json():
    y, p = _calibrated(600, seed=2)
    df = pd.DataFrame({"boneage": np.where(y == 0, 50.0, np.where(y == 1, 130.0, 200.0)), "stage_true": y,
                       "boneage_pred": np.where(y == 0, 60.0, np.where(y == 1, 120.0, 190.0)),
                       "p_child": p[:, 0], "p_adolescent": p[:, 1], "p_adult": p[:, 2]})
    df.loc[len(df)] = [np.nan, -1, 100.0, 0.2, 0.3, 0.5]
    rep = C.stage_calibration_report(df)
    text = json.dumps(rep, allow_nan=False)  # empty bins carry None, not NaN
    assert rep["n"] == 600 and rep["n_unknown_stage"] == 1
    assert rep["ece"] == pytest.approx(C.expected_calibration_error(y, p))
    assert rep["brier"] == pytest.approx(C.brier_score(y, p))
    assert rep["vs_thresholded_regression"]["thresholded_regression"]["accuracy"] == 1.0
    assert len(rep["reliability"]) == 10 and set(rep["roc_curves"]) == {"Child", "Adolescent", "Adult"}
    assert rep["mean_entropy_wrong"] > rep["mean_entropy_correct"]
    assert "NaN" not in text
