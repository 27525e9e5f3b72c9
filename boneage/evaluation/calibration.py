"""Calibration and discrimination of the developmental-stage classifier head.

A stage probability shown to a clinician is only useful if "80% Adolescent" is right about 80% of the time,
so this module measures top-label reliability (ECE), the multiclass Brier score, predictive entropy,
one-vs-rest ROC curves, and compares the classifier head with the simpler rule of thresholding the
regressed bone age at the stage boundaries (the approach of one of the original studies).

Cases with an unknown true stage (``stage_true == -1``, i.e. no reference age) are left out everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from scipy.stats import entropy as _entropy
from sklearn.metrics import brier_score_loss, confusion_matrix, f1_score, roc_auc_score, roc_curve

from boneage.config import StageConfig
from boneage.evaluation.metrics import stages_from_months


def _known(y_true_stage, prob) -> tuple[np.ndarray, np.ndarray]:
    """Drop cases with an unknown stage (-1/NaN) or missing probabilities."""
    y = np.asarray(y_true_stage, float)
    p = np.asarray(prob, float)
    keep = ~np.isnan(y) & (y >= 0) & np.isfinite(p).all(1)
    p = p[keep]
    # Stored float32 softmax outputs sum to 1 only to ~1e-7; renormalise in float64 so scikit-learn's
    # probability checks see exact distributions.
    p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None) if len(p) else p
    return y[keep].astype(int), p


def prob_columns(stages: StageConfig = StageConfig()) -> list[str]:
    return [f"p_{n.lower()}" for n in stages.names]


def reliability_data(y_true_stage, prob, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability diagram data: per confidence bin, mean confidence vs accuracy.

    Confidence is the highest class probability, "correct" whether that class is the true one. Bins are
    equal-width on [0, 1], closed on the right (the same binning as ``sklearn.calibration.calibration_curve``
    with ``strategy='uniform'``). Empty bins are kept with ``count`` 0 and NaN confidence/accuracy so a
    plot has a fixed axis. Columns: bin, bin_lower, bin_upper, count, confidence, accuracy, gap
    (confidence - accuracy; positive = overconfident).
    """
    y, p = _known(y_true_stage, prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = p.max(1) if len(p) else np.zeros(0)
    correct = (p.argmax(1) == y).astype(float) if len(p) else np.zeros(0)
    ids = np.searchsorted(edges[1:-1], conf)
    count = np.bincount(ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(ids, weights=conf, minlength=n_bins) / count
        acc = np.bincount(ids, weights=correct, minlength=n_bins) / count
    return pd.DataFrame({"bin": np.arange(n_bins), "bin_lower": edges[:-1], "bin_upper": edges[1:],
                         "count": count.astype(int), "confidence": mean_conf, "accuracy": acc,
                         "gap": mean_conf - acc})


def expected_calibration_error(y_true_stage, prob, n_bins: int = 10) -> float:
    """Top-label ECE: count-weighted mean |confidence - accuracy| over the bins of :func:`reliability_data`."""
    rel = reliability_data(y_true_stage, prob, n_bins)
    total = rel["count"].sum()
    if total == 0:
        return float("nan")
    used = rel[rel["count"] > 0]
    return float(np.sum(used["count"] * np.abs(used["gap"])) / total)


def brier_score(y, prob) -> float:
    """Multiclass Brier score, mean over cases of sum_k (p_k - 1[y = k])^2; 0 is perfect, 2 the worst."""
    y, p = _known(y, prob)
    if len(y) == 0:
        return float("nan")
    return float(brier_score_loss(y, p, labels=list(range(p.shape[1])), scale_by_half=False))


def predictive_entropy(prob) -> np.ndarray:
    """Shannon entropy (nats) of each row of probabilities; log(K) for a uniform row, 0 for a one-hot row."""
    p = np.atleast_2d(np.asarray(prob, float))
    return _entropy(p, axis=1)


def _as_names(values, labels: Sequence[str]) -> np.ndarray:
    """Stage codes (0..K-1) or names to names; unknown codes (-1, NaN) become None."""
    out = []
    for v in np.asarray(values, dtype=object):
        if isinstance(v, str):
            out.append(v if v in labels else None)
        elif v is None or (isinstance(v, float) and math.isnan(v)) or not 0 <= int(v) < len(labels):
            out.append(None)
        else:
            out.append(labels[int(v)])
    return np.array(out, dtype=object)


def confusion(y, pred, labels: Sequence[str] = StageConfig().names) -> pd.DataFrame:
    """Confusion matrix (rows = true, columns = predicted) as a labelled DataFrame.

    ``y`` and ``pred`` may be stage codes or names; cases where either is unknown are left out.
    """
    labels = list(labels)
    yt, yp = _as_names(y, labels), _as_names(pred, labels)
    keep = np.array([a is not None and b is not None for a, b in zip(yt, yp)], bool)
    cm = confusion_matrix(yt[keep].astype(str), yp[keep].astype(str), labels=labels) if keep.any() \
        else np.zeros((len(labels), len(labels)), int)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def roc_curves(y, prob, names: Sequence[str] = StageConfig().names) -> tuple[pd.DataFrame, dict[str, float]]:
    """One-vs-rest ROC curve per class: a long DataFrame (class, fpr, tpr, threshold) and AUC per class.

    A class that is absent (or the only class present) has no curve and AUC NaN.
    """
    y, p = _known(y, prob)
    frames, aucs = [], {}
    for k, name in enumerate(names):
        pos = y == k
        if pos.all() or not pos.any():
            aucs[name] = float("nan")
            continue
        fpr, tpr, thr = roc_curve(pos, p[:, k])
        frames.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr, "threshold": thr}))
        aucs[name] = float(roc_auc_score(pos, p[:, k]))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["class", "fpr", "tpr", "threshold"])
    return curves, aucs


def _stage_rows(df: pd.DataFrame) -> pd.DataFrame:
    d = df[df["boneage"].notna()] if "boneage" in df.columns else df
    return d[d["stage_true"].astype(float) >= 0]


def _summary(y: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict:
    present = np.unique(y)
    return {"accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
            "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)) if len(y) else float("nan"),
            "confusion": confusion(y, pred, names).to_numpy().tolist()}


def compare_with_thresholded_regression(df: pd.DataFrame, stages: StageConfig = StageConfig()) -> dict:
    """Stage from the classifier head (argmax) vs stage from thresholding ``boneage_pred``.

    Both are scored against ``stage_true`` on the same cases (accuracy, macro-F1 over the stages present,
    confusion matrix with rows = true). ``discordant`` counts the cases only one method gets right, and
    ``mcnemar_p`` is the exact McNemar test on them: are the two methods really different?
    """
    d = _stage_rows(df)
    names = list(stages.names)
    y = d["stage_true"].to_numpy(int)
    clf = d[prob_columns(stages)].to_numpy(float).argmax(1) if len(d) else np.zeros(0, int)
    reg = stages_from_months(d["boneage_pred"].to_numpy(float), stages)
    c_ok, r_ok = clf == y, reg == y
    b, c = int(np.sum(c_ok & ~r_ok)), int(np.sum(r_ok & ~c_ok))
    return {"n": int(len(d)), "labels": names,
            "thresholds_months": [float(stages.child_below_months), float(stages.adult_from_months)],
            "classifier": _summary(y, clf, names),
            "thresholded_regression": _summary(y, reg, names),
            "agreement": float(np.mean(clf == reg)) if len(d) else float("nan"),
            "discordant": {"classifier_right_regression_wrong": b, "regression_right_classifier_wrong": c},
            "mcnemar_p": float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0}


def to_jsonable(obj):
    """Recursively turn numpy scalars/arrays into Python values and NaN/inf into None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def stage_calibration_report(df: pd.DataFrame, stages: StageConfig = StageConfig(), n_bins: int = 10) -> dict:
    """Everything above for one predictions table, as plain JSON-serialisable Python (NaN -> None).

    Keys: n, n_unknown_stage, accuracy, ece, brier, mean_entropy, mean_entropy_correct, mean_entropy_wrong,
    reliability (list of bin records), confusion {labels, matrix}, roc_auc {class: auc}, roc_auc_macro,
    roc_curves {class: {fpr, tpr}}, vs_thresholded_regression (see
    :func:`compare_with_thresholded_regression`).
    """
    d = _stage_rows(df)
    names = list(stages.names)
    y = d["stage_true"].to_numpy(int)
    p = d[prob_columns(stages)].to_numpy(float)
    pred = p.argmax(1) if len(d) else np.zeros(0, int)
    ent = predictive_entropy(p) if len(d) else np.zeros(0)
    correct = pred == y
    curves, aucs = roc_curves(y, p, names)
    finite_aucs = [a for a in aucs.values() if math.isfinite(a)]
    report = {
        "n": int(len(d)), "n_unknown_stage": int(len(df) - len(d)),
        "accuracy": float(np.mean(correct)) if len(d) else float("nan"),
        "ece": expected_calibration_error(y, p, n_bins), "brier": brier_score(y, p),
        "mean_entropy": float(ent.mean()) if len(ent) else float("nan"),
        "mean_entropy_correct": float(ent[correct].mean()) if correct.any() else float("nan"),
        "mean_entropy_wrong": float(ent[~correct].mean()) if (~correct).any() else float("nan"),
        "reliability": reliability_data(y, p, n_bins),
        "confusion": {"labels": names, "matrix": confusion(y, pred, names).to_numpy()},
        "roc_auc": aucs, "roc_auc_macro": float(np.mean(finite_aucs)) if finite_aucs else float("nan"),
        "roc_curves": {k: {"fpr": g["fpr"].to_numpy(), "tpr": g["tpr"].to_numpy()}
                       for k, g in curves.groupby("class", sort=False)},
        "vs_thresholded_regression": compare_with_thresholded_regression(df, stages),
    }
    return to_jsonable(report)
