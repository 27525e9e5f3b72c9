"""Error analysis: worst cases, Bland-Altman agreement, and whether the flags catch big errors."""
import json

import numpy as np
import pandas as pd
import pytest

from boneage.evidence import error_analysis as E
from boneage.training.splits import age_band

pytestmark = pytest.mark.unit


def _table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0, 228, n)
    male = rng.random(n) < 0.5
    pred = ref + rng.normal(0, 6, n)
    df = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "split": "test", "male": male,
                       "sex": np.where(male, "M", "F"), "boneage": ref, "age_band": age_band(ref).to_numpy(),
                       "boneage_pred": pred, "uncertainty": rng.uniform(3, 9, n),
                       "outlier_score": rng.uniform(0.9, 1.5, n), "is_outlier": rng.random(n) < 0.05})
    df["residual"] = df["boneage_pred"] - df["boneage"]
    df["abs_error"] = df["residual"].abs()
    return df


def test_planted_big_error_is_first():
    df = _table()
    df.loc[17, "boneage_pred"] = df.loc[17, "boneage"] + 90.0  # error far beyond N(0, 6) noise
    df.loc[17, "abs_error"] = 0.0  # stale column: must be recomputed, not trusted
    junk = _table(3, seed=1).assign(boneage=np.nan, boneage_pred=999.0, id=["x0", "x1", "x2"])
    w_all = E.worst_cases(pd.concat([df, junk], ignore_index=True), by=[], k=5)
    assert w_all["id"].iloc[0] == "c17" and w_all["rank"].iloc[0] == 1
    assert w_all["abs_error"].iloc[0] == pytest.approx(90.0)
    assert len(w_all) == 5 and w_all["abs_error"].is_monotonic_decreasing
    assert not w_all["id"].str.startswith("x").any()

    w = E.worst_cases(df, k=3)
    planted = w[w["id"] == "c17"].iloc[0]
    assert planted["rank"] == 1
    assert planted["sex"] == df.loc[17, "sex"] and planted["age_band"] == df.loc[17, "age_band"]
    assert (w.groupby(["sex", "age_band"]).size() <= 3).all()
    assert list(w.columns[:3]) == ["sex", "age_band", "rank"]
    for _, g in w.groupby(["sex", "age_band"]):
        assert g["abs_error"].is_monotonic_decreasing


def test_bland_altman_on_known_table():
    ref = np.array([100.0, 110.0, 120.0, 130.0])
    df = pd.DataFrame({"id": list("abcde"), "boneage": np.r_[ref, np.nan], "boneage_pred": np.r_[ref + [2, 4, 6, 8], 5.0]})
    ba = E.bland_altman(df)
    sd = np.sqrt(20 / 3)  # deviations -3, -1, 1, 3 from the mean difference 5, ddof=1
    s = ba.summary
    assert s["n"] == 4
    assert s["bias"] == pytest.approx(5.0)
    assert s["sd"] == pytest.approx(sd)
    assert s["loa_lower"] == pytest.approx(5 - 1.96 * sd) and s["loa_upper"] == pytest.approx(5 + 1.96 * sd)
    assert s["bias_ci"][0] < 5 < s["bias_ci"][1]
    assert s["slope"] == pytest.approx(2 / 11)  # diff 2,4,6,8 against mean 101,112,123,134
    np.testing.assert_allclose(ba.points["mean"], [101, 112, 123, 134])
    np.testing.assert_allclose(ba.points["diff"], [2, 4, 6, 8])
    json.dumps(ba.to_dict(), allow_nan=False)


def test_flags_perfect_when_score_is_the_error():
    df = _table(400, seed=2)
    df.loc[:19, "boneage_pred"] = df.loc[:19, "boneage"] + 40.0  # 20 big errors
    err = (df["boneage_pred"] - df["boneage"]).abs()
    df["outlier_score"] = err
    df["uncertainty"] = err
    df["is_outlier"] = err > 24
    rep = E.flag_effectiveness(df, big_error=24.0)
    s = rep.summary
    assert s["n"] == 400 and s["n_big"] == 20
    for name in ("outlier_score", "uncertainty"):
        assert s["scores"][name]["roc_auc"] == pytest.approx(1.0)
        assert s["scores"][name]["average_precision"] == pytest.approx(1.0)
        assert s["scores"][name]["spearman_rho"] == pytest.approx(1.0)
    f = s["flags"]["is_outlier"]
    assert f["n_flagged"] == 20 and f["recall_big"] == 1.0 and f["precision_big"] == 1.0
    assert f["mae_flagged"] == pytest.approx(40.0) and f["mae_unflagged"] < 10
    top = s["flags"]["uncertainty_top10"]
    assert top["n_flagged"] == 40 and top["recall_big"] == 1.0 and top["precision_big"] == pytest.approx(0.5)
    dec = rep.deciles[rep.deciles["score"] == "uncertainty"]
    assert dec["decile"].tolist() == list(range(1, 11)) and (dec["n"] == 40).all()
    assert dec["mae"].is_monotonic_increasing and dec["share_big"].iloc[-1] == 0.5
    json.dumps(rep.summary, allow_nan=False)


def test_uninformative_score_has_auc_near_half_and_nan_reference_ignored():
    df = _table(2000, seed=3)
    df.loc[:99, "boneage_pred"] += 40.0  # big errors unrelated to the random scores
    junk = _table(5, seed=4).assign(boneage=np.nan, boneage_pred=900.0, is_outlier=True, uncertainty=100.0)
    rep = E.flag_effectiveness(pd.concat([df, junk], ignore_index=True))
    assert rep.summary["n"] == 2000
    assert abs(rep.summary["scores"]["outlier_score"]["roc_auc"] - 0.5) < 0.1
    assert abs(rep.summary["scores"]["uncertainty"]["spearman_rho"]) < 0.1
    assert rep.deciles.groupby("score")["n"].sum().tolist() == [2000, 2000]
