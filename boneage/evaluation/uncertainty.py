"""Summaries of how sure the model is, per case, read off the predictions table.

The model gives three kinds of uncertainty for a case: the Laplace scale of the age head (``uncertainty``,
in months: the absolute error the model expects), the width of its conformal interval, and the entropy
of the stage probabilities. These helpers rank and bin cases by them; they compute nothing new about the
model, only arrange what ``pipelines.precompute`` stored.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from boneage.config import StageConfig
from scipy.stats import spearmanr

# name -> (column or derived quantity, readable label)
UNCERTAINTY_MEASURES = {
    "uncertainty": "Laplace scale of the age head (months)",
    "width_90": "Width of the 90% conformal interval (months)",
    "entropy": "Entropy of the stage probabilities (nats)",
}

CASE_COLUMNS = ("id", "split", "sex", "boneage", "boneage_pred", "abs_error", "uncertainty", "lower_90", "upper_90",
                "width_90", "stage_pred", "entropy", "outlier_score", "is_outlier")


def with_measures(df: pd.DataFrame) -> pd.DataFrame:
    """The table plus ``width_90`` (upper_90 - lower_90) where the bounds exist."""
    out = df.copy()
    if {"lower_90", "upper_90"} <= set(out.columns):
        out["width_90"] = out["upper_90"].astype(float) - out["lower_90"].astype(float)
    return out


def least_certain(df: pd.DataFrame, by: str = "uncertainty", k: int = 20) -> pd.DataFrame:
    """The ``k`` cases with the highest ``by`` (one of :data:`UNCERTAINTY_MEASURES`), highest first.

    Cases without a reference age are kept: the model is unsure about them all the same.
    """
    if by not in UNCERTAINTY_MEASURES:
        raise ValueError(f"by must be one of {tuple(UNCERTAINTY_MEASURES)}, got {by!r}")
    d = with_measures(df)
    if by not in d.columns:
        raise KeyError(f"the predictions table has no {by!r} column")
    d = d[d[by].notna()].sort_values(by, ascending=False, kind="stable").head(k)
    return d[[c for c in CASE_COLUMNS if c in d.columns]].reset_index(drop=True)


def stage_outcome(df: pd.DataFrame, stages: StageConfig = StageConfig()) -> pd.Series:
    """Per case 'correct' / 'wrong' for the predicted stage, or 'unknown' where the true stage is (-1)."""
    names = np.asarray(stages.names, dtype=object)
    true = df["stage_true"].to_numpy(int)
    known = true >= 0
    true_name = np.where(known, names[np.clip(true, 0, len(names) - 1)], None)
    correct = df["stage_pred"].to_numpy(object) == true_name
    return pd.Series(np.where(~known, "unknown", np.where(correct, "correct", "wrong")), index=df.index, name="stage")


def error_by_uncertainty(df: pd.DataFrame, n_bins: int = 10, by: str = "uncertainty") -> pd.DataFrame:
    """Mean absolute error in equal-count bins of an uncertainty measure (cases with a reference only).

    For the Laplace scale the expected absolute error *is* the scale, so a well-calibrated head puts the
    bins' ``mae`` on the line ``mae = measure_mean``. Columns: bin (1 = least uncertain), n, measure_min,
    measure_max, measure_mean, mae, mae_lo, mae_hi (normal-approximation 95% CI of the mean), median_abs_error.
    """
    d = with_measures(df)
    d = d[d["boneage"].notna() & d[by].notna()]
    cols = ["bin", "n", "measure_min", "measure_max", "measure_mean", "mae", "mae_lo", "mae_hi", "median_abs_error"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    err = (d["boneage_pred"].astype(float) - d["boneage"].astype(float)).abs().to_numpy()
    s = d[by].to_numpy(float)
    q = pd.qcut(pd.Series(s).rank(method="first"), min(n_bins, len(s)), labels=False).to_numpy()
    t = pd.DataFrame({"bin": q + 1, "s": s, "e": err})
    g = t.groupby("bin").agg(n=("e", "size"), measure_min=("s", "min"), measure_max=("s", "max"),
                             measure_mean=("s", "mean"), mae=("e", "mean"), sd=("e", "std"),
                             median_abs_error=("e", "median")).reset_index()
    half = 1.96 * g["sd"].fillna(0) / np.sqrt(g["n"])
    g["mae_lo"], g["mae_hi"] = g["mae"] - half, g["mae"] + half
    return g[cols]


def rank_correlation(df: pd.DataFrame, by: str = "uncertainty") -> dict:
    """Spearman correlation of an uncertainty measure with the absolute error (cases with a reference).

    Returns n, rho and its p-value (NaN with fewer than 3 cases or a constant measure).
    """
    d = with_measures(df)
    d = d[d["boneage"].notna() & d[by].notna()]
    err = (d["boneage_pred"].astype(float) - d["boneage"].astype(float)).abs().to_numpy()
    s = d[by].to_numpy(float)
    out = {"n": int(len(d)), "rho": float("nan"), "p_value": float("nan")}
    if len(d) >= 3 and np.ptp(s) > 0 and np.ptp(err) > 0:
        res = spearmanr(s, err)
        out.update(rho=float(res.statistic), p_value=float(res.pvalue))
    return out
