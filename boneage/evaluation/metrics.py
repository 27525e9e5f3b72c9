"""Pure metric functions for bone-age regression and developmental-stage classification."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, f1_score, r2_score, roc_auc_score

from boneage.config import StageConfig, stages_from_months  # noqa: F401 (part of the metrics surface)
from boneage.evaluation.predictions_table import with_reference
from boneage.training.splits import AGE_BAND


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    y, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    err = p - y
    out = {"n": int(len(y)), "mae": float(np.mean(np.abs(err))) if len(y) else np.nan,
           "rmse": float(np.sqrt(np.mean(err ** 2))) if len(y) else np.nan,
           "bias": float(np.mean(err)) if len(y) else np.nan,
           "r2": float(r2_score(y, p)) if len(y) > 1 and np.var(y) > 0 else np.nan}
    for k in (6, 12, 24):
        out[f"within_{k}"] = float(np.mean(np.abs(err) <= k)) if len(y) else np.nan
    return out


def stage_metrics(y_stage, prob: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1, quadratic weighted kappa and macro one-vs-rest ROC-AUC of stage probabilities."""
    y = np.asarray(y_stage, int)
    prob = np.asarray(prob, float)
    if len(y) == 0:
        return {"stage_accuracy": np.nan, "stage_macro_f1": np.nan, "stage_qwk": np.nan, "stage_roc_auc": np.nan}
    pred = prob.argmax(1)
    labels = list(range(prob.shape[1]))
    present = np.unique(y)
    auc = np.nan
    if len(present) >= 2:
        aucs = [roc_auc_score(y == c, prob[:, c]) for c in present]
        auc = float(np.mean(aucs))
    qwk = float(cohen_kappa_score(y, pred, weights="quadratic", labels=labels)) if len(np.unique(np.r_[y, pred])) > 1 else np.nan
    return {"stage_accuracy": float(np.mean(pred == y)),
            "stage_macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
            "stage_qwk": qwk, "stage_roc_auc": auc}


def all_metrics(df: pd.DataFrame, stages: StageConfig = StageConfig()) -> dict[str, float]:
    """Metrics of a prediction frame with ``boneage``, ``boneage_pred`` and ``p_<stage>`` columns."""
    prob = df[[f"p_{n.lower()}" for n in stages.names]].to_numpy()
    return {**regression_metrics(df["boneage"], df["boneage_pred"]),
            **stage_metrics(stages_from_months(df["boneage"], stages), prob)}


def grouped_metrics(df: pd.DataFrame, stages: StageConfig = StageConfig()) -> dict:
    """Overall, by sex and by age band; rows without a reference age are left out."""
    df = with_reference(df.drop(columns=["sex", "age_band"], errors="ignore"))
    out = {"overall": all_metrics(df, stages), "by_sex": {}, "by_age_band": {}}
    for sex, g in df.groupby("sex"):
        out["by_sex"][sex] = all_metrics(g, stages)
    for band, g in df.groupby("age_band", sort=False, observed=True):
        out["by_age_band"][band] = all_metrics(g, stages)
    return out


def bootstrap(values, stat=np.mean, n_boot: int = 1000, rng: np.random.Generator | int = 0,
              max_elems: int = 4_000_000) -> np.ndarray:
    """``stat`` of ``n_boot`` resamples (rows drawn with replacement) of ``values``: the one bootstrap of the project.

    ``values`` is (n,) or (n, k); ``stat`` reduces with ``axis=1`` over the resampled rows (``np.mean``,
    ``np.median``, :func:`nanmean` ...), so the result is (n_boot,) or (n_boot, k). Resamples are drawn and
    evaluated in chunks of at most ``max_elems`` gathered values, so memory stays bounded on big tables; the
    chunking does not change the result. ``rng`` is a generator (continued by the caller) or a seed. With no
    rows every replicate is NaN.
    """
    x = np.asarray(values, float)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    n = len(x)
    out = np.full((n_boot, *x.shape[1:]), np.nan)
    if n == 0:
        return out
    step = max(1, max_elems // x.size)
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        out[s:s + b] = stat(x[rng.integers(0, n, size=(b, n))], axis=1)
    return out


def nanmean(x: np.ndarray, axis=None):
    """Mean that skips NaNs (NaN, without a warning, where nothing is left): the bootstrap statistic of metrics
    defined only on some rows (a known stage, both interval bounds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates (rows), NaN replicates skipped; NaN where all are NaN."""
    a = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column (e.g. no known stages in a group)
        lo, hi = np.nanpercentile(samples, [a, 100 - a], axis=0)
    return lo, hi


def bootstrap_ci(values, fn=np.mean, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 max_elems: int = 4_000_000) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap confidence interval of ``fn`` over ``values`` (see :func:`bootstrap`).

    NaNs are dropped first. Returns ``(estimate, lower, upper)``; all NaN when there are no values, a zero-width
    interval for one value.
    """
    x = np.asarray(values, float).ravel()
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = percentile_ci(bootstrap(x, fn, n_boot, seed, max_elems), level)
    return float(fn(x)), float(lo), float(hi)


def mae_ci_table(df: pd.DataFrame, by: str | list[str] | None = None, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> pd.DataFrame:
    """MAE with a bootstrap CI per group of ``by`` (``None``: one overall row) for rows with a reference.

    Columns: the ``by`` columns, ``n``, ``mae``, ``mae_lo``, ``mae_hi``. Age bands come in age order.
    """
    d = with_reference(df)
    err = (d["boneage_pred"].astype(float) - d["boneage"].astype(float)).abs()
    by = [by] if isinstance(by, str) else list(by or [])
    groups = d.groupby(by, sort=True, observed=True) if by else [((), d)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        est, lo, hi = bootstrap_ci(err.loc[g.index], np.mean, n_boot=n_boot, seed=seed, level=level)
        rows.append({**dict(zip(by, key)), "n": int(len(g)), "mae": est, "mae_lo": lo, "mae_hi": hi})
    out = pd.DataFrame(rows, columns=[*by, "n", "mae", "mae_lo", "mae_hi"])
    if "age_band" in by:  # the ordered categorical: age order within each of the other groups
        out["age_band"] = out["age_band"].astype(AGE_BAND)
        out = out.sort_values([c for c in by if c != "age_band"] + ["age_band"], kind="stable")
    return out.reset_index(drop=True)
