"""Where the bone-age model goes wrong, and whether its own warning signs point there.

All functions take the *predictions table* (schema: :data:`boneage.evaluation.predictions_table.COLUMNS`). Rows with an
unknown reference are dropped first (:func:`boneage.evaluation.predictions_table.with_reference`, which also recomputes
residual and abs_error, so they can never disagree with the reference used).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from boneage.evaluation.predictions_table import with_reference

CASE_COLUMNS = ("id", "split", "sex", "age_band", "boneage", "boneage_pred", "residual", "abs_error",
                "uncertainty", "lower_90", "upper_90", "stage_true", "stage_pred", "outlier_score", "is_outlier")


def worst_cases(df: pd.DataFrame, by: Sequence[str] = ("sex", "age_band"), k: int = 5) -> pd.DataFrame:
    """The ``k`` largest absolute errors in each group (``by=[]``: overall), for case review.

    Columns: the ``by`` columns, ``rank`` (1 = worst in its group), then whichever of :data:`CASE_COLUMNS`
    the table has. Groups are in sex / age order, cases by rank within a group.
    """
    by = list(by)
    d = with_reference(df).sort_values("abs_error", ascending=False, kind="stable")
    d["rank"] = (d.groupby(by, sort=False).cumcount() if by else pd.Series(np.arange(len(d)), index=d.index)) + 1
    d = d[d["rank"] <= k]
    if by:
        d = d.sort_values([*by, "rank"], kind="stable")  # age bands sort in age order (ordered categorical)
    cols = [*by, "rank"] + [c for c in CASE_COLUMNS if c in d.columns and c not in by]
    return d[cols].reset_index(drop=True)


@dataclass
class BlandAltman:
    """Bland-Altman agreement of predicted vs reference age.

    ``points``: one row per case with ``mean`` = (ref + pred) / 2 and ``diff`` = pred - ref (plus id, sex,
    age_band where present). ``summary``: n, bias, sd, loa_lower / loa_upper (bias -/+ 1.96 SD) with
    approximate 95% CIs (Bland & Altman 1999: SE(bias) = SD/sqrt(n), SE(limit) = SD*sqrt(3/n)), and the
    slope of diff on mean with its p-value: a non-zero slope is proportional bias, the classic sign of a
    model regressing towards the mean age (too old for the young, too young for the old).
    """

    points: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "points": self.points.to_dict(orient="list")}


def bland_altman(df: pd.DataFrame) -> BlandAltman:
    d = with_reference(df)
    ref, pred = d["boneage"].to_numpy(float), d["boneage_pred"].to_numpy(float)
    mean, diff = (ref + pred) / 2, pred - ref
    points = pd.DataFrame({c: d[c].to_numpy() for c in ("id", "sex", "age_band") if c in d.columns})
    points["mean"], points["diff"] = mean, diff
    n = len(diff)
    nan = float("nan")
    summary = {"n": int(n), "bias": nan, "sd": nan, "loa_lower": nan, "loa_upper": nan,
               "bias_ci": [nan, nan], "loa_lower_ci": [nan, nan], "loa_upper_ci": [nan, nan],
               "slope": nan, "intercept": nan, "slope_p": nan}
    if n >= 2:
        bias, sd = float(diff.mean()), float(diff.std(ddof=1))
        t = float(stats.t.ppf(0.975, n - 1))
        se_b, se_l = sd / np.sqrt(n), sd * np.sqrt(3.0 / n)
        lo, hi = bias - 1.96 * sd, bias + 1.96 * sd
        summary.update(bias=bias, sd=sd, loa_lower=lo, loa_upper=hi,
                       bias_ci=[float(bias - t * se_b), float(bias + t * se_b)],
                       loa_lower_ci=[float(lo - t * se_l), float(lo + t * se_l)],
                       loa_upper_ci=[float(hi - t * se_l), float(hi + t * se_l)])
        if np.ptp(mean) > 0:
            fit = stats.linregress(mean, diff)
            summary.update(slope=float(fit.slope), intercept=float(fit.intercept), slope_p=float(fit.pvalue))
    return BlandAltman(points, summary)


@dataclass
class FlagReport:
    """Do the model's warning signs catch its big errors?

    ``summary`` (JSON-ready): n, big_error, n_big, share_big; ``scores`` per continuous score (n,
    spearman_rho, spearman_p against abs_error, roc_auc and average_precision for abs_error > big_error);
    ``flags`` per binary flag (n_flagged, share_flagged, mae_flagged, mae_unflagged, recall_big = share of
    big errors flagged, precision_big = share of flagged that are big errors, and for the uncertainty flag
    its threshold). ``deciles``: long table (score, decile 1 = lowest score, n, score_min, score_max, mae,
    median_abs_error, share_big).
    """

    summary: dict
    deciles: pd.DataFrame

    def to_dict(self) -> dict:
        return {**self.summary, "deciles": self.deciles.to_dict(orient="records")}


def _nan_dict(keys) -> dict:
    return {k: float("nan") for k in keys}


def _score_stats(score: np.ndarray, err: np.ndarray, big: np.ndarray) -> dict:
    ok = ~np.isnan(score)
    s, e, b = score[ok], err[ok], big[ok]
    out = {"n": int(ok.sum()), **_nan_dict(["spearman_rho", "spearman_p", "roc_auc", "average_precision"])}
    if len(s) >= 3 and np.ptp(s) > 0 and np.ptp(e) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho, p = stats.spearmanr(s, e)
        out.update(spearman_rho=float(rho), spearman_p=float(p))
    if 0 < b.sum() < len(b):
        out.update(roc_auc=float(roc_auc_score(b, s)), average_precision=float(average_precision_score(b, s)))
    return out


def _flag_stats(flag: np.ndarray, err: np.ndarray, big: np.ndarray) -> dict:
    nf = int(flag.sum())
    return {"n_flagged": nf, "share_flagged": float(flag.mean()) if len(flag) else float("nan"),
            "mae_flagged": float(err[flag].mean()) if nf else float("nan"),
            "mae_unflagged": float(err[~flag].mean()) if nf < len(flag) else float("nan"),
            "recall_big": float(flag[big].mean()) if big.any() else float("nan"),
            "precision_big": float(big[flag].mean()) if nf else float("nan")}


def _deciles(name: str, score: np.ndarray, err: np.ndarray, big: np.ndarray, n_bins: int) -> pd.DataFrame:
    ok = ~np.isnan(score)
    s, e, b = score[ok], err[ok], big[ok]
    if len(s) == 0:
        return pd.DataFrame()
    # Rank first so ties never collapse bins: every decile holds (almost) the same number of cases.
    q = pd.qcut(pd.Series(s).rank(method="first"), min(n_bins, len(s)), labels=False)
    t = pd.DataFrame({"q": q.to_numpy(), "s": s, "e": e, "b": b.astype(float)})
    g = t.groupby("q").agg(n=("e", "size"), score_min=("s", "min"), score_max=("s", "max"), mae=("e", "mean"),
                           median_abs_error=("e", "median"), share_big=("b", "mean")).reset_index()
    g.insert(0, "score", name)
    g["decile"] = g.pop("q").astype(int) + 1
    return g[["score", "decile", "n", "score_min", "score_max", "mae", "median_abs_error", "share_big"]]


def flag_effectiveness(df: pd.DataFrame, big_error: float = 24.0, top_frac: float = 0.10,
                       n_bins: int = 10, scores: Sequence[str] = ("outlier_score", "uncertainty")) -> FlagReport:
    """How well ``outlier_score``/``uncertainty`` rank the errors and whether the flags catch big ones.

    Flags: ``is_outlier`` as stored, and ``uncertainty_top{10}``: the ``top_frac`` most uncertain cases
    (uncertainty >= its (1 - top_frac) quantile).
    """
    d = with_reference(df)
    err = d["abs_error"].to_numpy(float)
    big = err > big_error
    summary = {"n": int(len(d)), "big_error": float(big_error), "n_big": int(big.sum()),
               "share_big": float(big.mean()) if len(d) else float("nan"), "scores": {}, "flags": {}}
    tables = []
    for name in scores:
        if name not in d.columns:
            continue
        s = d[name].to_numpy(float)
        summary["scores"][name] = _score_stats(s, err, big)
        tables.append(_deciles(name, s, err, big, n_bins))
    if "is_outlier" in d.columns:
        flag = d["is_outlier"].fillna(False).astype(bool).to_numpy()
        summary["flags"]["is_outlier"] = _flag_stats(flag, err, big)
    if "uncertainty" in d.columns and d["uncertainty"].notna().any():
        u = d["uncertainty"].to_numpy(float)
        thr = float(np.nanquantile(u, 1 - top_frac))
        flag = np.nan_to_num(u, nan=-np.inf) >= thr
        summary["flags"][f"uncertainty_top{round(top_frac * 100)}"] = {**_flag_stats(flag, err, big), "threshold": thr}
    deciles = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) \
        else pd.DataFrame(columns=["score", "decile", "n", "score_min", "score_max", "mae", "median_abs_error", "share_big"])
    return FlagReport(summary, deciles)
