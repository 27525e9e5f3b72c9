"""Site calibration: adapt the shipped model's predicted age and intervals to one hospital's patients.

A clinic that reads its own radiographs differently (another reading protocol, other scanners, another
population) sees the shipped model biased and its intervals too wide or too narrow. From a few dozen of its
own labelled radiographs this module fits a **site profile**:

* **Correction of the predicted age**: ``corrected = pred + shift + slope * (pred - centre)``; four
  candidates, none / global shift / per-sex shift (each sex from ``MIN_CORRECTION_CASES``) / age-linear (a
  shift and a slope on the prediction, from ``MIN_SLOPE_CASES``), each coefficient shrunk towards zero by
  its uncertainty (positive-part James-Stein, :func:`shrink_factor`), the one with the lowest K-fold
  cross-validated MAE kept (ties to the simpler). The whole procedure is then judged by an outer K-fold
  cross-validation (:func:`correction_gain`; the choice made inside each outer fold, so the estimate is
  honest) and the profile keeps no correction, saying why, when that expected gain is not negative.
* **Local split-conformal intervals**: the local cases are the calibration set. Score = the model's
  normalised absolute error ``|y - corrected| / scale`` (scale = the model's Laplace scale, the
  normalisation the shipped calibrator uses), interval ``corrected +- q * scale`` with q the
  ``ceil((n+1) c)``-th smallest score. Per sex (Mondrian) for a level when *each* sex has at least
  ``MIN_MONDRIAN_CASES`` cases and :func:`min_cases` for it, pooled over both sexes otherwise. The scores are
  *cross-fitted*: each case's score uses a correction fitted without its fold (CV+ style), so the scores
  are out-of-sample errors like those of a new patient rather than the smaller in-sample residuals of a
  correction fitted on the case itself.

Honest evaluation (:func:`cross_validate`): K outer folds; in each, the whole procedure above (correction
selection, cross-fitted scores, quantiles) is fitted on the other folds and evaluated on the held-out fold.
"Before" is the shipped model as it is (its prediction and its own conformal interval) on the same cases;
every number gets a bootstrap CI over cases, and the differences a paired one.

The promise: marginal coverage, on average over patients *like the calibration cases* (same site, same
population, same reading), not for each child, and not for each age band (the shipped model's Mondrian
intervals give per-band coverage on the RSNA population; a site's few dozen cases cannot).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.model_selection import KFold, StratifiedKFold

from boneage.config import ARTIFACTS_DIR, write_atomic, write_json_atomic
from boneage.evaluation.metrics import bootstrap_ci
from boneage.io.tables import REFERENCE_RANGE  # accepted local reference bone ages (months): one range for every door
import pandas as pd

SITES_DIR = ARTIFACTS_DIR / "sites"
LEVELS = ("80", "90", "95")  # the levels every prediction carries (columns lower_80 ... upper_95)
Y_MIN, Y_MAX = 0.0, 300.0  # months: as boneage.evaluation.conformal
# Fewer cases: calibrate_site warns (the profile is written). From the learning curve, docs/site-calibration-curve.md.
RECOMMENDED_MIN_CASES = 30
MIN_MONDRIAN_CASES = 30  # fewer cases of a sex: intervals pooled over both sexes
MIN_CORRECTION_CASES = 10  # fewer cases of a sex: no correction for it
MIN_SLOPE_CASES = 30  # fewer cases of a sex: shift only, no slope
K_FOLDS = 10
SCHEMA_VERSION = 1
DEFAULT_REFERENCE = "the site's own reference readings"
HISTORY_DIR = "history"  # earlier versions of the profiles: <sites>/history/<name>.<created>.json
YEARS_MAX_MONTHS = 25.0  # every reference below this: ages given in years, refused


class SiteProfileError(ValueError):
    """A site profile that cannot be used: missing, damaged, or made for another model."""


def min_cases(level: str | float) -> int:
    """Fewest calibration cases giving a finite split-conformal bound at ``level``: ``(n+1) c <= n``,
    i.e. ``n >= c / (1 - c)`` (80 % 4, 90 % 9, 95 % 19)."""
    c = _conf(level)
    return int(math.ceil(c / (1 - c) - 1e-9))


def min_cases_all(levels=LEVELS) -> int:
    """Fewest cases for a profile: every level pooled over both sexes."""
    return max(min_cases(lvl) for lvl in levels)


def _conf(level: str | float) -> float:
    return float(level) / 100 if float(level) > 1 else float(level)


def conformal_quantile(scores: np.ndarray, level: str | float) -> float:
    """Split-conformal quantile: the ``ceil((n+1) c)``-th smallest score; ``inf`` when there are too few."""
    s, n = np.sort(np.asarray(scores, float)), len(scores)
    k = math.ceil((n + 1) * _conf(level) - 1e-9)
    return float(s[k - 1]) if 1 <= k <= n else math.inf


# -- correction ------------------------------------------------------------------------------------------
@dataclass
class SexCorrection:
    """``corrected = pred + shift + slope * (pred - centre)`` for one sex; ``kind`` identity / shift /
    shift+slope; ``cv_mae`` the inner cross-validated MAE of each candidate; ``reason`` why this one."""

    sex: str  # "F" or "M"
    kind: str = "identity"
    shift: float = 0.0
    slope: float = 0.0
    centre: float = 0.0
    n: int = 0
    cv_mae: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def apply(self, pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred, float)
        return np.clip(pred + self.shift + self.slope * (pred - self.centre), Y_MIN, Y_MAX)


@dataclass
class Correction:
    """Both sexes' corrections; ``kind`` one of :data:`CANDIDATES`, ``cv_mae`` the inner cross-validated MAE
    of each candidate tried, ``shrinkage`` the empirical-Bayes factor of each coefficient, ``reason`` why."""

    F: SexCorrection
    M: SexCorrection
    kind: str = "none"
    cv_mae: dict[str, float] = field(default_factory=dict)
    shrinkage: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def apply(self, pred: np.ndarray, male: np.ndarray) -> np.ndarray:
        pred, male = np.asarray(pred, float), np.asarray(male).astype(bool)
        return np.where(male, self.M.apply(pred), self.F.apply(pred))

    @property
    def is_identity(self) -> bool:
        return all(c.kind == "identity" or (c.shift == 0 and c.slope == 0) for c in (self.F, self.M))


CANDIDATES = ("none", "global shift", "per-sex shift", "age-linear")


def shrink_factor(estimate: float, se: float) -> float:
    """Positive-part James-Stein / empirical-Bayes factor for one coefficient: ``max(0, 1 - se^2 / b^2)``.

    With a normal prior of unknown spread on the true coefficient, its moment estimate ``b^2 - se^2`` gives
    the posterior mean ``b * tau^2 / (tau^2 + se^2)`` = this factor times ``b``: a shift no larger than its
    standard error is dropped, one of many standard errors is kept almost in full."""
    if not math.isfinite(se) or estimate == 0:
        return 0.0
    return max(0.0, 1.0 - se * se / (estimate * estimate))


def _shift(r: np.ndarray) -> tuple[float, float]:
    """(shrunk mean residual, its factor): the empirical-Bayes shift of residuals ``r``."""
    n = len(r)
    if n < 2:
        return 0.0, 0.0
    b, se = float(np.mean(r)), float(np.std(r, ddof=1) / math.sqrt(n))
    f = shrink_factor(b, se)
    return b * f, f


def _fit_candidate(y: np.ndarray, pred: np.ndarray, male: np.ndarray, kind: str) -> Correction:
    """One candidate fitted on (y, pred, male), every coefficient shrunk by :func:`shrink_factor`."""
    r = y - pred
    n_m = int(male.sum())
    n_f = len(y) - n_m
    if kind == "global shift":
        b, f = _shift(r)
        return Correction(SexCorrection("F", "shift", b, n=n_f), SexCorrection("M", "shift", b, n=n_m), kind,
                          shrinkage={"shift": round(f, 4)})
    if kind == "per-sex shift":
        (bf, ff), (bm, fm) = _shift(r[~male]), _shift(r[male])
        return Correction(SexCorrection("F", "shift", bf, n=n_f), SexCorrection("M", "shift", bm, n=n_m), kind,
                          shrinkage={"shift F": round(ff, 4), "shift M": round(fm, 4)})
    if kind == "age-linear":
        centre = float(np.mean(pred))
        x = pred - centre
        sxx = float(np.sum(x * x))
        b0 = float(np.mean(r))
        b1 = float(np.sum(x * r) / sxx) if sxx > 0 else 0.0
        dof = max(len(y) - 2, 1)
        sigma = float(np.sqrt(np.sum((r - b0 - b1 * x) ** 2) / dof))
        f0 = shrink_factor(b0, sigma / math.sqrt(len(y)))
        f1 = shrink_factor(b1, sigma / math.sqrt(sxx)) if sxx > 0 else 0.0
        return Correction(SexCorrection("F", "shift+slope", b0 * f0, b1 * f1, centre, n_f),
                          SexCorrection("M", "shift+slope", b0 * f0, b1 * f1, centre, n_m), kind,
                          shrinkage={"shift": round(f0, 4), "slope": round(f1, 4)})
    return Correction(SexCorrection("F", n=n_f), SexCorrection("M", n=n_m), "none")


def _folds(n: int, k: int, seed: int, strata: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds (stratified by ``strata`` when every stratum has k cases), at most one per case."""
    k = max(2, min(k, n))
    idx = np.arange(n)
    if strata is not None and np.min(np.unique(strata, return_counts=True)[1]) >= k:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, strata))
    return list(KFold(k, shuffle=True, random_state=seed).split(idx))


def candidates_for(n: int, n_male: int) -> list[str]:
    """The candidates the cases can support: a correction from ``MIN_CORRECTION_CASES`` cases, per sex when
    each sex has that many, a slope from ``MIN_SLOPE_CASES``."""
    kinds = ["none"]
    if n >= MIN_CORRECTION_CASES:
        kinds.append("global shift")
    if min(n_male, n - n_male) >= MIN_CORRECTION_CASES:
        kinds.append("per-sex shift")
    if n >= MIN_SLOPE_CASES:
        kinds.append("age-linear")
    return kinds


def fit_correction(y, pred, male, k_folds: int = K_FOLDS, seed: int = 0) -> Correction:
    """The site's correction: the candidate (:data:`CANDIDATES`, those :func:`candidates_for` allows) with the
    lowest K-fold cross-validated MAE on the cases, each fitted with empirical-Bayes shrinkage; ties go to
    the simpler one, so ``none`` unless a correction beats it. Its ``reason`` says why."""
    y, pred, male = np.asarray(y, float), np.asarray(pred, float), np.asarray(male).astype(bool)
    n = len(y)
    kinds = candidates_for(n, int(male.sum()))
    if kinds == ["none"]:
        out = _fit_candidate(y, pred, male, "none")
        out.reason = f"no correction: too few cases ({n} < {MIN_CORRECTION_CASES})"
        return out
    folds = _folds(n, k_folds, seed, male)
    cv = {}
    for kind in kinds:
        err = np.empty(n)
        for tr, te in folds:
            err[te] = np.abs(y[te] - _fit_candidate(y[tr], pred[tr], male[tr], kind).apply(pred[te], male[te]))
        cv[kind] = float(err.mean())
    best = min(kinds, key=lambda k: (round(cv[k], 9), kinds.index(k)))
    out = _fit_candidate(y, pred, male, best)
    out.cv_mae = {k: round(v, 4) for k, v in cv.items()}
    others = ", ".join(f"{k} {cv[k]:.2f}" for k in kinds if k != best)
    out.reason = (f"{best}: lowest {len(folds)}-fold cross-validated MAE ({cv[best]:.2f} months; {others}), "
                  "shrunk by its uncertainty")
    if best == "none":
        out.reason = f"no correction: none lowered the {len(folds)}-fold cross-validated MAE ({cv[best]:.2f}; {others})"
    for sex in (out.F, out.M):
        sex.reason = out.reason
    return out


# -- conformal -------------------------------------------------------------------------------------------
@dataclass
class SiteConformal:
    """Split-conformal intervals ``corrected +- q * scale`` from the site's (cross-fitted) scores."""

    scores: np.ndarray  # |y - corrected| / scale, one per calibration case
    male: np.ndarray

    def __post_init__(self):
        self.scores = np.asarray(self.scores, float)
        self.male = np.asarray(self.male).astype(bool)

    def by_sex(self, level: str | float) -> bool:
        """Per sex (Mondrian) when each sex has ``MIN_MONDRIAN_CASES`` cases and enough for the level, else
        pooled: a per-sex quantile from a handful of scores is too variable to be worth its group."""
        n_m = int(self.male.sum())
        return min(n_m, len(self.male) - n_m) >= max(min_cases(level), MIN_MONDRIAN_CASES)

    def quantiles(self, level: str | float) -> dict[str, float]:
        """{"F": q, "M": q}: the same pooled q for both when the level is pooled."""
        if self.by_sex(level):
            return {s: conformal_quantile(self.scores[self.male == m], level) for s, m in (("F", False), ("M", True))}
        q = conformal_quantile(self.scores, level)
        return {"F": q, "M": q}

    def interval(self, corrected, scale, male, level) -> tuple[np.ndarray, np.ndarray]:
        corrected, scale, male = np.asarray(corrected, float), np.asarray(scale, float), np.asarray(male).astype(bool)
        q = self.quantiles(level)
        half = scale * np.where(male, q["M"], q["F"])
        # Too few scores give q = inf: the honest interval is then the whole range.
        lo = np.clip(np.nan_to_num(corrected - half, nan=Y_MIN, neginf=Y_MIN, posinf=Y_MAX), Y_MIN, Y_MAX)
        hi = np.clip(np.nan_to_num(corrected + half, nan=Y_MAX, posinf=Y_MAX, neginf=Y_MIN), Y_MIN, Y_MAX)
        return lo, hi

    def intervals(self, corrected, scale, male, levels=LEVELS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {lvl: self.interval(corrected, scale, male, lvl) for lvl in levels}


@dataclass
class SiteModel:
    correction: Correction
    conformal: SiteConformal

    def predict(self, pred, scale, male, levels=LEVELS) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
        corrected = self.correction.apply(pred, male)
        return corrected, self.conformal.intervals(corrected, scale, male, levels)


def fit_site(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0, correct: bool = True) -> SiteModel:
    """Correction (on all cases; none when ``correct`` is False) + conformal scores cross-fitted over K folds
    (each fold's scores from a correction fitted, selection included, on the other folds; without a
    correction the scores are the plain split-conformal ones)."""
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    if not correct:
        correction = _fit_candidate(y, pred, male, "none")
        return SiteModel(correction, SiteConformal(np.abs(y - pred) / scale, male))
    correction = fit_correction(y, pred, male, k_folds, seed)
    scores = np.empty(len(y))
    for tr, te in _folds(len(y), k_folds, seed + 1, male):
        corr = fit_correction(y[tr], pred[tr], male[tr], k_folds, seed)
        scores[te] = np.abs(y[te] - corr.apply(pred[te], male[te])) / scale[te]
    return SiteModel(correction, SiteConformal(scores, male))


# -- honest evaluation -----------------------------------------------------------------------------------
@dataclass
class CaseResults:
    """Per-case predictions and intervals of one method (before or after) on the evaluation cases."""

    pred: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def cross_validate(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0, correct: bool = True,
                   level: str = "90") -> tuple[CaseResults, np.ndarray]:
    """Held-out site predictions and ``level`` intervals for every case: in each outer fold the whole
    procedure is fitted on the other folds. Returns (results, fold number of each case)."""
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    out = CaseResults(np.empty(len(y)), np.empty(len(y)), np.empty(len(y)))
    fold_of = np.empty(len(y), int)
    for f, (tr, te) in enumerate(_folds(len(y), k_folds, seed + 2, male)):
        site = fit_site(y[tr], pred[tr], scale[tr], male[tr], k_folds, seed, correct)
        corrected, ivs = site.predict(pred[te], scale[te], male[te], (level,))
        out.pred[te], (out.lower[te], out.upper[te]) = corrected, ivs[level]
        fold_of[te] = f
    return out, fold_of


def _ci(values, n_boot: int, seed: int) -> dict[str, float]:
    est, lo, hi = bootstrap_ci(values, np.mean, n_boot=n_boot, seed=seed)
    return {"value": round(est, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4)}


def _case_metrics(y, r: CaseResults) -> dict[str, np.ndarray]:
    return {"mae": np.abs(r.pred - y), "bias": r.pred - y,
            "coverage": ((y >= r.lower) & (y <= r.upper)).astype(float), "width": r.upper - r.lower}


def compare(y, before: CaseResults, after: CaseResults, n_boot: int = 2000, seed: int = 0) -> dict:
    """MAE, bias (predicted - reference), coverage and mean width before and after, with percentile bootstrap
    95 % CIs over cases, and the paired differences (after - before) with paired bootstrap CIs; the relative
    change of the mean width with a paired CI (scipy.stats.bootstrap)."""
    y = np.asarray(y, float)
    b, a = _case_metrics(y, before), _case_metrics(y, after)
    out = {"n": int(len(y)), "before": {}, "after": {}, "difference": {}}
    for k in b:
        out["before"][k] = _ci(b[k], n_boot, seed)
        out["after"][k] = _ci(a[k], n_boot, seed)
        out["difference"][k] = _ci(a[k] - b[k], n_boot, seed)
    res = stats.bootstrap((a["width"], b["width"]), lambda x, z, axis=-1: x.mean(axis) / z.mean(axis) - 1,
                          paired=True, vectorized=True, n_resamples=n_boot, method="percentile",
                          rng=np.random.default_rng(seed))
    out["width_change_relative"] = {"value": round(float(a["width"].mean() / b["width"].mean() - 1), 4),
                                    "ci_low": round(float(res.confidence_interval.low), 4),
                                    "ci_high": round(float(res.confidence_interval.high), 4)}
    return out


# -- the profile -----------------------------------------------------------------------------------------
@dataclass
class SiteProfile:
    """What a site calibration produced; saved as JSON (``artifacts/sites/<name>.json``)."""

    name: str
    created: str
    n_cases: int
    n_ids: int
    n_male: int
    model_sha256: str
    tta: bool
    correction: Correction
    conformal: SiteConformal
    evaluation: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # The phase views its predictions averaged (boneage.geometry.framing); a profile written before they existed
    # was fitted on one-view readings.
    phases: int = 1
    # Whether its predictions read right hands mirrored (boneage.geometry.laterality); older profiles read films as-is.
    laterality: str = "as-is"
    # What the profile's user must know (one sex only, ...): printed by calibrate_site, shown with the profile.
    notes: list[str] = field(default_factory=list)
    # What the site's reference ages are (single reader, consensus of six readers, ...): what the intervals cover.
    reference: str = DEFAULT_REFERENCE

    @property
    def site_model(self) -> SiteModel:
        return SiteModel(self.correction, self.conformal)

    def apply(self, pred, scale, male, levels=LEVELS):
        """(corrected ages, {level: (lower, upper)}) for raw model predictions and scales."""
        return self.site_model.predict(pred, scale, male, levels)

    def check_model(self, fingerprint: str, tta: bool | None = None, phases: int | None = None,
                    laterality: str | None = None) -> None:
        """Refuse a profile made for other networks, or on predictions made otherwise (test-time
        augmentation switched, native films read at another number of phase views)."""
        refit = (f"Refit it with `python -m pipelines.calibrate_site --name {self.name} ...` (docs/operations.md, "
                 "Site calibration).")
        if fingerprint != self.model_sha256:
            raise SiteProfileError(
                f"site profile '{self.name}' was fitted for another model (sha256 {self.model_sha256[:12]}..., this "
                f"model {fingerprint[:12]}...): its correction and intervals do not apply. {refit}")
        if tta is not None and tta != self.tta:
            raise SiteProfileError(
                f"site profile '{self.name}' was fitted on predictions {'with' if self.tta else 'without'} test-time "
                f"augmentation; predict {'with' if self.tta else 'without'} it (--tta / --no-tta) or refit the profile.")
        if phases is not None and phases != self.phases:
            raise SiteProfileError(
                f"site profile '{self.name}' was fitted on readings of {self.phases}x{self.phases} phase view(s) per "
                f"native film, this model reads {phases}x{phases}: its correction does not apply. {refit}")
        if laterality is not None and laterality != self.laterality:
            raise SiteProfileError(
                f"site profile '{self.name}' was fitted on readings with laterality {self.laterality!r}, this model "
                f"reads with {laterality!r} (right hands {'mirrored' if laterality == 'left' else 'as they are'}): "
                f"its correction does not apply. {refit}")

    def to_dict(self) -> dict:
        conf = {"method": "split-conformal, score |y - corrected| / model scale, cross-fitted over the local "
                          "cases; per sex where each sex has enough cases for the level, else pooled",
                "scores": np.round(self.conformal.scores, 5).tolist(), "male": self.conformal.male.tolist(),
                "levels": {lvl: {"by_sex": self.conformal.by_sex(lvl), "min_cases": min_cases(lvl),
                                 "quantile": {s: (round(q, 5) if math.isfinite(q) else None)
                                              for s, q in self.conformal.quantiles(lvl).items()}}
                           for lvl in LEVELS}}
        return {"schema_version": self.schema_version, "name": self.name, "created": self.created,
                "n_cases": self.n_cases, "n_ids": self.n_ids, "n_male": self.n_male,
                "model_sha256": self.model_sha256, "tta": self.tta, "phases": self.phases,
                "laterality": self.laterality,
                "correction": {"formula": "corrected = pred + shift + slope * (pred - centre), per sex",
                               "kind": self.correction.kind, "reason": self.correction.reason,
                               "cv_mae": self.correction.cv_mae, "shrinkage": self.correction.shrinkage,
                               "F": asdict(self.correction.F), "M": asdict(self.correction.M)},
                "conformal": conf, "evaluation": self.evaluation, "settings": self.settings, "notes": self.notes,
                "reference": self.reference, "promise": coverage_promise(self.conformal, self.reference)}

    @classmethod
    def from_dict(cls, d: dict) -> "SiteProfile":
        try:
            if d.get("schema_version") != SCHEMA_VERSION:
                raise SiteProfileError(f"site profile schema {d.get('schema_version')!r}, expected {SCHEMA_VERSION}")
            c = d["correction"]
            corr = Correction(SexCorrection(**c["F"]), SexCorrection(**c["M"]), c.get("kind", "per sex"),
                              c.get("cv_mae", {}), c.get("shrinkage", {}), c.get("reason", ""))
            conf = SiteConformal(np.array(d["conformal"]["scores"], float), np.array(d["conformal"]["male"], bool))
            if len(conf.scores) != len(conf.male) or len(conf.scores) == 0:
                raise SiteProfileError("site profile: calibration scores and sexes missing or of different lengths")
            return cls(d["name"], d["created"], int(d["n_cases"]), int(d["n_ids"]), int(d["n_male"]),
                       d["model_sha256"], bool(d["tta"]), corr, conf, d.get("evaluation", {}), d.get("settings", {}),
                       phases=int(d.get("phases", 1)), laterality=str(d.get("laterality", "as-is")),
                       notes=list(d.get("notes", [])),
                       reference=str(d.get("reference", DEFAULT_REFERENCE)))
        except (KeyError, TypeError) as exc:
            raise SiteProfileError(f"site profile is damaged or incomplete ({type(exc).__name__}: {exc})") from exc

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SiteProfile":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise SiteProfileError(f"site profile {path} not found") from None
        except ValueError as exc:
            raise SiteProfileError(f"site profile {path} is not valid JSON ({exc})") from exc
        try:
            return cls.from_dict(d)
        except SiteProfileError as exc:
            raise SiteProfileError(f"{path}: {exc}") from exc


def archive_profile(path: str | os.PathLike) -> Path:
    """Copy an existing profile to ``<folder>/history/<name>.<created>.json`` (its creation time, made
    file-name safe) before it is replaced, so every earlier version stays; returns the copy's path."""
    path = Path(path)
    text = path.read_text()
    try:
        stamp = str(json.loads(text).get("created", ""))
    except ValueError:
        stamp = ""
    stamp = re.sub(r"[^0-9A-Za-z]", "", stamp) or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    dest = path.parent / HISTORY_DIR / f"{path.stem}.{stamp}.json"
    write_atomic(dest, lambda tmp: tmp.write_text(text))
    return dest


def available_sites(sites_dir: str | os.PathLike = SITES_DIR) -> list[str]:
    """Names of the profiles in a folder, sorted."""
    d = Path(sites_dir)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def site_path(site: str | os.PathLike, sites_dir: str | os.PathLike = SITES_DIR) -> Path:
    """A profile's file: ``site`` is a name in ``sites_dir`` or a path to a JSON file."""
    s = str(site)
    if s.endswith(".json") or os.sep in s or "/" in s:
        return Path(s)
    return Path(sites_dir) / f"{s}.json"


def load_site(site: "str | os.PathLike | SiteProfile", sites_dir: str | os.PathLike = SITES_DIR) -> SiteProfile:
    """A :class:`SiteProfile` from a name (``artifacts/sites/<name>.json``), a path, or as is."""
    if isinstance(site, SiteProfile):
        return site
    path = site_path(site, sites_dir)
    if not path.is_file():
        names = available_sites(sites_dir)
        raise SiteProfileError(f"site profile {path} not found; available: {', '.join(names) or 'none'} (make one with "
                               "`python -m pipelines.calibrate_site`)")
    return SiteProfile.load(path)


def correction_gain(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0) -> tuple[dict, CaseResults]:
    """Expected out-of-sample MAE change of the correction procedure (corrected - uncorrected, months; negative
    is a gain) with a normal 95 % CI over cases, by K-fold cross-validation in which the whole procedure
    (candidate choice and shrinkage included) is fitted on the other folds: nested, so honest. Returns
    (estimate, the held-out results of the corrected procedure)."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    after, _ = cross_validate(y, pred, scale, male, k_folds, seed, True, "90")
    d = np.abs(after.pred - y) - np.abs(pred - y)
    se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.inf
    m = float(np.mean(d))
    return {"value": round(m, 4), "ci_low": round(m - 1.96 * se, 4), "ci_high": round(m + 1.96 * se, 4),
            "n": int(len(d))}, after


def fit_site_procedure(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0) -> tuple[SiteModel, dict, CaseResults]:
    """What a profile applies: the correction only when its nested cross-validated expected MAE change
    (:func:`correction_gain`) is negative, else none with the reason; intervals on the cases either way.
    Returns (site model, expected change, held-out results of the corrected procedure)."""
    gain, after = correction_gain(y, pred, scale, male, k_folds, seed)
    correct = gain["value"] < 0
    site = fit_site(y, pred, scale, male, k_folds, seed, correct)
    if not correct:
        why = (f"no correction: not expected to help on new cases (nested {k_folds}-fold cross-validated MAE "
               f"change of the correction {gain['value']:+.2f} months, 95 % CI {gain['ci_low']:+.2f} to "
               f"{gain['ci_high']:+.2f})")
        site.correction.reason = why
        for c in (site.correction.F, site.correction.M):
            c.reason = why
    return site, gain, after


def coverage_promise(conformal: SiteConformal, reference: str, level: str = "90") -> dict:
    """What the intervals promise and what the promise rests on."""
    n, n_m = len(conformal.male), int(conformal.male.sum())
    by_sex = conformal.by_sex(level)
    rests = (f"{n - n_m} girls' and {n_m} boys' cases, per sex" if by_sex else f"{n} cases pooled over both sexes")
    return {"level": level, "n_cases": n, "n_F": n - n_m, "n_M": n_m, "by_sex": by_sex, "reference": reference,
            "text": f"{level} % intervals: at least {level} % of new patients like the calibration cases (same site, "
                    f"population and reading) have their reference ({reference}) inside, on average over patients; "
                    f"split-conformal on {rests} (ceil((n+1) x {level} %)-th smallest score)."}


def fit_profile(name: str, y, pred, scale, male, before_lower, before_upper, model_sha256: str, tta: bool,
                n_ids: int | None = None, k_folds: int = K_FOLDS, seed: int = 0,
                n_boot: int = 2000, created: str | None = None, phases: int = 1,
                laterality: str = "as-is", reference: str = DEFAULT_REFERENCE) -> SiteProfile:
    """Fit the site's correction and intervals on all cases, and evaluate the procedure by K-fold CV against
    the shipped model as it is (``before_lower``/``before_upper``: its own 90 % intervals on the cases).

    The correction is kept only when its nested cross-validated MAE change (:func:`correction_gain`) is a
    gain; otherwise the profile is a no-op correction (intervals only) and says why. ``reference``: what the
    site's reference ages are (e.g. "consensus of six readers"), the reference the intervals are for.

    Raises ValueError when there are fewer cases than :func:`min_cases_all` or references outside
    :data:`REFERENCE_RANGE` (callers check first to give their own message).
    """
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    check_references(y)
    if len(y) < min_cases_all():
        raise ValueError(f"{len(y)} cases; a site profile needs at least {min_cases_all()} (95 % intervals)")
    site, gain, after = fit_site_procedure(y, pred, scale, male, k_folds, seed)
    correct = gain["value"] < 0
    if not correct:
        after, _ = cross_validate(y, pred, scale, male, k_folds, seed, False, "90")
    before = CaseResults(pred, np.asarray(before_lower, float), np.asarray(before_upper, float))
    k_used = len(_folds(len(y), k_folds, seed + 2, male))
    evaluation = {"level": "90", "k_folds": k_used,
                  "method": f"{k_used}-fold cross-validation: correction (its choice and shrinkage included) and "
                            "intervals fitted on the other folds, evaluated on the held-out fold; before = the "
                            "shipped model and its own intervals; 95 % percentile bootstrap CIs over cases (paired "
                            "for differences)",
                  "correction_applied": bool(correct),
                  "expected_mae_change": {**gain, "meaning": "out-of-sample MAE with the correction minus without "
                                          "(months, negative = better), nested cross-validation, normal 95 % CI"},
                  **compare(y, before, after, n_boot, seed)}
    return SiteProfile(name, created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), len(y),
                       len(y) if n_ids is None else int(n_ids), int(male.sum()), model_sha256, bool(tta),
                       site.correction, site.conformal, evaluation,
                       {"k_folds": k_folds, "seed": seed, "n_boot": n_boot, "shrinkage": "positive-part James-Stein",
                        "min_correction_cases": MIN_CORRECTION_CASES, "min_slope_cases": MIN_SLOPE_CASES,
                        "min_mondrian_cases": MIN_MONDRIAN_CASES},
                       phases=int(phases), laterality=str(laterality), notes=sex_notes(male), reference=reference)


def check_references(y) -> None:
    """Raise ValueError naming how many local reference ages are missing or outside REFERENCE_RANGE, when
    they look like years (all below :data:`YEARS_MAX_MONTHS`), or when they are all the same value."""
    y = np.asarray(y, float)
    lo, hi = REFERENCE_RANGE
    bad = np.isnan(y) | (y < lo) | (y > hi)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} reference bone ages missing or outside {lo:.0f}-{hi:.0f} months")
    if len(y) and np.max(y) < YEARS_MAX_MONTHS:
        raise ValueError(f"every reference bone age is below {YEARS_MAX_MONTHS:.0f} (largest {np.max(y):.1f}): these "
                         "look like years. Give the reference bone age in months (years x 12) and rerun.")
    if len(y) > 1 and np.ptp(y) == 0:
        raise ValueError(f"all {len(y)} reference bone ages are the same ({y[0]:g} months): a placeholder or a "
                         "copied column, not readings. Give each case its own reference bone age.")


def sex_notes(male) -> list[str]:
    """Notes a profile carries about its sexes: with one sex only, the other sex gets no correction and
    the pooled intervals come from the calibrated sex alone (said, never silent)."""
    male = np.asarray(male).astype(bool)
    n_m = int(male.sum())
    for n, have, lack in ((n_m, "boys", "girls"), (len(male) - n_m, "girls", "boys")):
        if n == len(male) and len(male):
            return [f"only {have} among the calibration cases: no per-sex intervals; {lack} get no correction and "
                    f"intervals pooled from {have}' cases only, which promise nothing for {lack}. Add {lack}' cases "
                    "and refit."]
    return []


EVALUATION_METRICS = {"mae": "MAE (months)", "bias": "bias, predicted - reference (months)",
                      "coverage": "90 % interval coverage", "width": "90 % interval mean width (months)"}


def evaluation_frame(evaluation: dict):
    """A profile's cross-validated evaluation as a table for reports: one row per metric with before,
    after and the paired difference, each with its 95 % bootstrap CI."""
    rows = []
    for key, label in EVALUATION_METRICS.items():
        row = {"metric": label}
        for part in ("before", "after", "difference"):
            e = evaluation.get(part, {}).get(key)
            row[part] = None if e is None else e["value"]
            row[f"{part}_ci"] = None if e is None else f"{e['ci_low']:.3g} to {e['ci_high']:.3g}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["metric", "before", "before_ci", "after", "after_ci", "difference",
                                       "difference_ci"])
