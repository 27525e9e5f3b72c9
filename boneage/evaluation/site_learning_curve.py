"""How a site profile's benefit grows with the number of site cases: the learning curve behind the minimum
number of cases ``pipelines.calibrate_site`` recommends.

For each n, many random draws of n labelled site cases; each draw's profile (:func:`fit_site_procedure`,
exactly what ``calibrate_site`` applies) is judged on the labelled cases it did not see, against the model as
shipped on the same cases. When n is the whole labelled set, repeated K-fold cross-validation instead
(fitted on n (K-1)/K cases, judged on the held-out fold; each repetition's held-out cases pooled into one row). Pure: arrays in, a table out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from boneage.evaluation.site_calibration import K_FOLDS, _folds, fit_site_procedure

LEVEL = "90"
TARGET_COVERAGE = (0.85, 0.97)
MAX_MAE_LOSS = 0.1  # months: the recommended n and every larger one lose at most this much on average
MIN_COVERAGE_P10 = 0.80  # ... and 9 profiles in 10 cover at least this share of the unseen cases


@dataclass
class Draw:
    """One profile judged on unseen cases: means over those cases."""

    n: int
    n_fit: int
    corrected: float  # 1 / 0: whether the profile corrects (pooled K-fold rows: the share of folds)
    mae_before: float
    mae_after: float
    bias_before: float
    bias_after: float
    coverage_before: float
    coverage_after: float
    width_before: float
    width_after: float


def _held_out(y, pred, scale, male, fit: np.ndarray, test: np.ndarray, k_folds: int, seed: int):
    """(corrected, lower, upper, corrected?) on the ``test`` cases of a profile fitted on the ``fit`` cases."""
    site, _, _ = fit_site_procedure(y[fit], pred[fit], scale[fit], male[fit], k_folds, seed)
    corrected, ivs = site.predict(pred[test], scale[test], male[test], (LEVEL,))
    return corrected, *ivs[LEVEL], not site.correction.is_identity


def _draw(n, n_fit, corrected_share, yt, pred, lower, upper, corrected, lo, hi) -> Draw:
    return Draw(n, int(n_fit), float(corrected_share),
                float(np.mean(np.abs(pred - yt))), float(np.mean(np.abs(corrected - yt))),
                float(np.mean(pred - yt)), float(np.mean(corrected - yt)),
                float(np.mean((yt >= lower) & (yt <= upper))), float(np.mean((yt >= lo) & (yt <= hi))),
                float(np.mean(upper - lower)), float(np.mean(hi - lo)))


def learning_curve(y, pred, scale, male, lower, upper, ns=(10, 20, 30, 50, 100), draws: int = 200,
                   k_folds: int = K_FOLDS, seed: int = 0) -> pd.DataFrame:
    """One row per draw (:class:`Draw` fields). ``n`` below the number of cases: ``draws`` random subsets of
    n cases, each judged on the rest; ``n`` equal to it: ``draws / k_folds`` repetitions of K-fold CV, each
    repetition one row (its held-out predictions of every case pooled; ``corrected`` the share of its folds)."""
    y, pred, scale, lower, upper = (np.asarray(a, float) for a in (y, pred, scale, lower, upper))
    male = np.asarray(male).astype(bool)
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        if n > len(y):
            raise ValueError(f"n = {n} is more than the {len(y)} labelled cases")
        if n == len(y):
            for rep in range(max(1, draws // k_folds)):
                c, lo, hi = np.empty(n), np.empty(n), np.empty(n)
                flags, sizes = [], []
                for tr, te in _folds(len(y), k_folds, seed + 100 + rep, male):
                    c[te], lo[te], hi[te], flag = _held_out(y, pred, scale, male, tr, te, k_folds, seed)
                    flags.append(flag)
                    sizes.append(len(tr))
                rows.append(_draw(n, np.mean(sizes), np.mean(flags), y, pred, lower, upper, c, lo, hi))
            continue
        for _ in range(draws):
            perm = rng.permutation(len(y))
            fit, test = perm[:n], perm[n:]
            c, lo, hi, flag = _held_out(y, pred, scale, male, fit, test, k_folds, seed)
            rows.append(_draw(n, n, flag, y[test], pred[test], lower[test], upper[test], c, lo, hi))
    return pd.DataFrame([r.__dict__ for r in rows])


def curve_table(draws: pd.DataFrame) -> pd.DataFrame:
    """Per n: draws, share corrected, mean out-of-sample MAE change (after - before) with its 10th / 90th
    percentile over draws and the share of draws more than 0.3 months worse, bias, coverage and width
    before / after, and the width ratio."""
    d = draws.assign(mae_change=draws["mae_after"] - draws["mae_before"])
    g = d.groupby("n")
    out = pd.DataFrame({
        "draws": g.size(), "n_fit": g["n_fit"].mean(), "corrected": g["corrected"].mean(),
        "mae_before": g["mae_before"].mean(), "mae_change": g["mae_change"].mean(),
        "mae_change_p10": g["mae_change"].quantile(0.1), "mae_change_p90": g["mae_change"].quantile(0.9),
        "worse_by_0.3": g["mae_change"].apply(lambda s: float(np.mean(s > 0.3))),
        "bias_before": g["bias_before"].mean(), "bias_after": g["bias_after"].mean(),
        "coverage_before": g["coverage_before"].mean(), "coverage_after": g["coverage_after"].mean(),
        "coverage_after_p10": g["coverage_after"].quantile(0.1),
        "width_before": g["width_before"].mean(), "width_after": g["width_after"].mean()})
    out["width_ratio"] = out["width_after"] / out["width_before"]
    return out.reset_index()


def recommended_min_n(table: pd.DataFrame, floor: int = 0) -> int | None:
    """The smallest n (at least ``floor``) from which on every n of the table has mean coverage within
    :data:`TARGET_COVERAGE`, a 10th-percentile coverage over draws of at least :data:`MIN_COVERAGE_P10` and a
    mean MAE change of at most :data:`MAX_MAE_LOSS`; None when even the largest does not."""
    table = table[table["n"] >= floor]
    ok = (table["coverage_after"].between(*TARGET_COVERAGE) & (table["mae_change"] <= MAX_MAE_LOSS)
          & (table["coverage_after_p10"] >= MIN_COVERAGE_P10)).to_numpy()
    ns = table["n"].to_numpy()
    best = None
    for i in range(len(ns) - 1, -1, -1):
        if not ok[i]:
            break
        best = int(ns[i])
    return best
