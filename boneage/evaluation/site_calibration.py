"""Site calibration: adapt the shipped model's predicted age and intervals to one hospital's patients.

A clinic that reads its own radiographs differently (another reading protocol, other scanners, another
population) sees the shipped model biased and its intervals too wide or too narrow. From a few dozen of its
own labelled radiographs this module fits a **site profile**:

* **Correction of the predicted age, per sex**: ``corrected = pred + shift + slope * (pred - centre)``,
  least squares on the local residuals, shrunk towards no correction (both coefficients multiplied by
  ``n / (n + prior_cases)``: as if ``prior_cases`` more cases had shown no shift). Three candidates per sex,
  identity, shift, shift + slope (the slope only from ``MIN_SLOPE_CASES`` cases on); a candidate other than
  identity is kept only when its K-fold cross-validated MAE on that sex's cases is lower than identity's,
  else the sex keeps identity and the profile says why.
* **Local split-conformal intervals**: the local cases are the calibration set. Score = the model's
  normalised absolute error ``|y - corrected| / scale`` (scale = the model's Laplace scale, the
  normalisation the shipped calibrator uses), interval ``corrected +- q * scale`` with q the
  ``ceil((n+1) c)``-th smallest score. Per sex for a level when *each* sex has at least
  :func:`min_cases` cases for it (``(n+1) c <= n``), pooled over both sexes otherwise. The scores are
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.model_selection import KFold, StratifiedKFold

from boneage.config import ARTIFACTS_DIR, write_json_atomic
from boneage.evaluation.metrics import bootstrap_ci
from boneage.io.tables import REFERENCE_RANGE  # accepted local reference bone ages (months): one range for every door
import pandas as pd

SITES_DIR = ARTIFACTS_DIR / "sites"
LEVELS = ("80", "90", "95")  # the levels every prediction carries (columns lower_80 ... upper_95)
Y_MIN, Y_MAX = 0.0, 300.0  # months: as boneage.evaluation.conformal
PRIOR_CASES = 10.0  # shrinkage strength of the correction, in cases
MIN_CORRECTION_CASES = 10  # fewer cases of a sex: no correction for it
MIN_SLOPE_CASES = 30  # fewer cases of a sex: shift only, no slope
K_FOLDS = 10
SCHEMA_VERSION = 1


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
    F: SexCorrection
    M: SexCorrection

    def apply(self, pred: np.ndarray, male: np.ndarray) -> np.ndarray:
        pred, male = np.asarray(pred, float), np.asarray(male).astype(bool)
        return np.where(male, self.M.apply(pred), self.F.apply(pred))

    @property
    def is_identity(self) -> bool:
        return self.F.kind == "identity" and self.M.kind == "identity"


def _fit_candidate(y: np.ndarray, pred: np.ndarray, kind: str, sex: str, prior_cases: float) -> SexCorrection:
    """Shrunk least-squares fit of the residual y - pred on (1, pred - centre)."""
    n = len(y)
    if kind == "identity" or n == 0:
        return SexCorrection(sex, "identity", n=n)
    r, centre = y - pred, float(np.mean(pred))
    shrink = n / (n + prior_cases)
    x = pred - centre
    slope = float(np.sum(x * r) / np.sum(x * x)) * shrink if kind == "shift+slope" and np.sum(x * x) > 0 else 0.0
    return SexCorrection(sex, kind, float(np.mean(r)) * shrink, slope, centre, n)


def _folds(n: int, k: int, seed: int, strata: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds (stratified by ``strata`` when every stratum has k cases), at most one per case."""
    k = max(2, min(k, n))
    idx = np.arange(n)
    if strata is not None and np.min(np.unique(strata, return_counts=True)[1]) >= k:
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(idx, strata))
    return list(KFold(k, shuffle=True, random_state=seed).split(idx))


def fit_sex_correction(y, pred, sex: str, k_folds: int = K_FOLDS, seed: int = 0,
                       prior_cases: float = PRIOR_CASES) -> SexCorrection:
    """The correction of one sex: the candidate with the lowest K-fold CV MAE, identity unless one beats it."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    n = len(y)
    if n < MIN_CORRECTION_CASES:
        return SexCorrection(sex, "identity", n=n, reason=f"too few cases ({n} < {MIN_CORRECTION_CASES}) for a correction")
    kinds = ["identity", "shift"] + (["shift+slope"] if n >= MIN_SLOPE_CASES else [])
    cv = {}
    folds = _folds(n, k_folds, seed)
    for kind in kinds:
        err = np.empty(n)
        for tr, te in folds:
            err[te] = np.abs(y[te] - _fit_candidate(y[tr], pred[tr], kind, sex, prior_cases).apply(pred[te]))
        cv[kind] = float(err.mean())
    best = min(kinds, key=lambda k: (cv[k], kinds.index(k)))  # ties go to the simpler candidate
    out = _fit_candidate(y, pred, best, sex, prior_cases)
    out.cv_mae = {k: round(v, 4) for k, v in cv.items()}
    if best == "identity":
        out.reason = (f"no correction: none lowered the {len(folds)}-fold cross-validated MAE of {cv['identity']:.2f} "
                      f"months (" + ", ".join(f"{k} {cv[k]:.2f}" for k in kinds[1:]) + ")")
    else:
        out.reason = f"{best}: {len(folds)}-fold cross-validated MAE {cv[best]:.2f} vs {cv['identity']:.2f} months without"
    if n < MIN_SLOPE_CASES:
        out.reason += f"; no slope tried below {MIN_SLOPE_CASES} cases"
    return out


def fit_correction(y, pred, male, k_folds: int = K_FOLDS, seed: int = 0, prior_cases: float = PRIOR_CASES) -> Correction:
    y, pred, male = np.asarray(y, float), np.asarray(pred, float), np.asarray(male).astype(bool)
    return Correction(*(fit_sex_correction(y[male == m], pred[male == m], s, k_folds, seed, prior_cases)
                        for s, m in (("F", False), ("M", True))))


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
        """Per sex when each sex has enough cases for the level, else pooled."""
        n_m = int(self.male.sum())
        return min(n_m, len(self.male) - n_m) >= min_cases(level)

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


def fit_site(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0, prior_cases: float = PRIOR_CASES) -> SiteModel:
    """Correction (on all cases) + conformal scores cross-fitted over K folds (each fold's scores from a
    correction fitted, selection included, on the other folds)."""
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    correction = fit_correction(y, pred, male, k_folds, seed, prior_cases)
    scores = np.empty(len(y))
    for tr, te in _folds(len(y), k_folds, seed + 1, male):
        corr = fit_correction(y[tr], pred[tr], male[tr], k_folds, seed, prior_cases)
        scores[te] = np.abs(y[te] - corr.apply(pred[te], male[te])) / scale[te]
    return SiteModel(correction, SiteConformal(scores, male))


# -- honest evaluation -----------------------------------------------------------------------------------
@dataclass
class CaseResults:
    """Per-case predictions and intervals of one method (before or after) on the evaluation cases."""

    pred: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def cross_validate(y, pred, scale, male, k_folds: int = K_FOLDS, seed: int = 0, prior_cases: float = PRIOR_CASES,
                   level: str = "90") -> tuple[CaseResults, np.ndarray]:
    """Held-out site predictions and ``level`` intervals for every case: in each outer fold the whole
    procedure is fitted on the other folds. Returns (results, fold number of each case)."""
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    out = CaseResults(np.empty(len(y)), np.empty(len(y)), np.empty(len(y)))
    fold_of = np.empty(len(y), int)
    for f, (tr, te) in enumerate(_folds(len(y), k_folds, seed + 2, male)):
        site = fit_site(y[tr], pred[tr], scale[tr], male[tr], k_folds, seed, prior_cases)
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
                               "F": asdict(self.correction.F), "M": asdict(self.correction.M)},
                "conformal": conf, "evaluation": self.evaluation, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "SiteProfile":
        try:
            if d.get("schema_version") != SCHEMA_VERSION:
                raise SiteProfileError(f"site profile schema {d.get('schema_version')!r}, expected {SCHEMA_VERSION}")
            corr = Correction(SexCorrection(**d["correction"]["F"]), SexCorrection(**d["correction"]["M"]))
            conf = SiteConformal(np.array(d["conformal"]["scores"], float), np.array(d["conformal"]["male"], bool))
            if len(conf.scores) != len(conf.male) or len(conf.scores) == 0:
                raise SiteProfileError("site profile: calibration scores and sexes missing or of different lengths")
            return cls(d["name"], d["created"], int(d["n_cases"]), int(d["n_ids"]), int(d["n_male"]),
                       d["model_sha256"], bool(d["tta"]), corr, conf, d.get("evaluation", {}), d.get("settings", {}),
                       phases=int(d.get("phases", 1)), laterality=str(d.get("laterality", "as-is")))
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


def fit_profile(name: str, y, pred, scale, male, before_lower, before_upper, model_sha256: str, tta: bool,
                n_ids: int | None = None, k_folds: int = K_FOLDS, seed: int = 0, prior_cases: float = PRIOR_CASES,
                n_boot: int = 2000, created: str | None = None, phases: int = 1,
                laterality: str = "as-is") -> SiteProfile:
    """Fit the site's correction and intervals on all cases, and evaluate the procedure by K-fold CV against
    the shipped model as it is (``before_lower``/``before_upper``: its own 90 % intervals on the cases).

    Raises ValueError when there are fewer cases than :func:`min_cases_all` or references outside
    :data:`REFERENCE_RANGE` (callers check first to give their own message).
    """
    y, pred, scale = (np.asarray(a, float) for a in (y, pred, scale))
    male = np.asarray(male).astype(bool)
    check_references(y)
    if len(y) < min_cases_all():
        raise ValueError(f"{len(y)} cases; a site profile needs at least {min_cases_all()} (95 % intervals)")
    site = fit_site(y, pred, scale, male, k_folds, seed, prior_cases)
    after, _ = cross_validate(y, pred, scale, male, k_folds, seed, prior_cases, "90")
    before = CaseResults(pred, np.asarray(before_lower, float), np.asarray(before_upper, float))
    k_used = len(_folds(len(y), k_folds, seed + 2, male))
    evaluation = {"level": "90", "k_folds": k_used,
                  "method": f"{k_used}-fold cross-validation: correction and intervals fitted on the other folds, "
                            "evaluated on the held-out fold; before = the shipped model and its own intervals; "
                            "95 % percentile bootstrap CIs over cases (paired for differences)",
                  **compare(y, before, after, n_boot, seed)}
    return SiteProfile(name, created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), len(y),
                       len(y) if n_ids is None else int(n_ids), int(male.sum()), model_sha256, bool(tta),
                       site.correction, site.conformal, evaluation,
                       {"k_folds": k_folds, "seed": seed, "prior_cases": prior_cases, "n_boot": n_boot,
                        "min_correction_cases": MIN_CORRECTION_CASES, "min_slope_cases": MIN_SLOPE_CASES},
                       phases=int(phases), laterality=str(laterality))


def check_references(y) -> None:
    """Raise ValueError naming how many local reference ages are missing or outside REFERENCE_RANGE."""
    y = np.asarray(y, float)
    lo, hi = REFERENCE_RANGE
    bad = np.isnan(y) | (y < lo) | (y > hi)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} reference bone ages missing or outside {lo:.0f}-{hi:.0f} months")


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
