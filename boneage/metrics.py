"""Pure metric functions for bone-age regression and developmental-stage classification."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score, f1_score, r2_score, roc_auc_score

from .config import StageConfig
from .splits import age_band


def stages_from_months(months, stages: StageConfig = StageConfig()) -> np.ndarray:
    m = np.asarray(months, dtype=float)
    return (m >= stages.child_below_months).astype(int) + (m >= stages.adult_from_months).astype(int)


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
    df = df[df["boneage"].notna()].copy()
    df["sex"] = np.where(df["male"].astype(bool), "M", "F")
    df["age_band"] = age_band(df["boneage"].to_numpy()).to_numpy()
    out = {"overall": all_metrics(df, stages), "by_sex": {}, "by_age_band": {}}
    for sex, g in df.groupby("sex"):
        out["by_sex"][sex] = all_metrics(g, stages)
    for band, g in df.groupby("age_band", sort=False):
        out["by_age_band"][band] = all_metrics(g, stages)
    return out
