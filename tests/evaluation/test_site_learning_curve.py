"""The site-calibration learning curve (boneage.evaluation.site_learning_curve) on a synthetic site."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage.evaluation.site_learning_curve import curve_table, learning_curve, recommended_min_n

pytestmark = pytest.mark.unit


def _site(rng, n, shift):
    male = rng.random(n) < 0.5
    pred = rng.uniform(20, 220, n)
    scale = rng.uniform(4, 12, n)
    y = pred + shift + rng.laplace(0, 1, n) * scale * 0.5
    return y, pred, scale, male, pred - 2 * scale, pred + 2 * scale


def test_learning_curve_judges_each_draw_on_cases_it_did_not_see():
    rng = np.random.default_rng(0)
    y, pred, scale, male, lo, hi = _site(rng, 60, shift=10.0)
    draws = learning_curve(y, pred, scale, male, lo, hi, ns=(20, 60), draws=5, k_folds=5)
    t = curve_table(draws).set_index("n")
    assert t.loc[20, "draws"] == 5 and t.loc[20, "n_fit"] == 20
    assert t.loc[60, "draws"] == 1 and t.loc[60, "n_fit"] == 48  # one 5-fold CV pooled, fitted on 4/5
    assert t.loc[20, "coverage_after_p10"] <= t.loc[20, "coverage_after"]
    # A 10-month shift: the profile corrects it and its out-of-sample MAE is lower, bias near zero.
    assert t.loc[60, "corrected"] == 1.0 and t.loc[60, "mae_change"] < -2
    assert abs(t.loc[60, "bias_after"]) < 2 < abs(t.loc[60, "bias_before"])
    assert 0.75 <= t.loc[60, "coverage_after"] <= 1.0
    with pytest.raises(ValueError, match="more than the 60"):
        learning_curve(y, pred, scale, male, lo, hi, ns=(61,), draws=1)


def test_recommended_min_n_is_where_every_larger_n_meets_the_targets():
    t = pd.DataFrame({"n": [10, 20, 30, 50], "coverage_after": [0.80, 0.90, 0.84, 0.90],
                      "coverage_after_p10": [0.7, 0.85, 0.8, 0.85], "mae_change": [0.0, 0.0, 0.0, 0.05]})
    assert recommended_min_n(t) == 50  # 30 misses the coverage target, so 20 does not count
    t["coverage_after"] = 0.9
    assert recommended_min_n(t) == 20  # 10: a tenth of its profiles cover less than 80 %
    assert recommended_min_n(t, floor=25) == 30
    t.loc[3, "mae_change"] = 0.5
    assert recommended_min_n(t) is None
