"""Split-conformal prediction intervals for bone age, normalised by the model's own uncertainty.

Non-conformity score: the calibration split's *signed* residual (reference - predicted) divided by the
per-case Laplace scale, so intervals are wide where the model says it is unsure, and asymmetric where its
errors are (a regression model pulls the oldest and youngest children towards the mean age). Two variants:

* **Global**: crepes' ``ConformalPredictiveSystem`` over all calibration cases; the bounds are the
  (1-c)/2 and (1+c)/2 percentiles of the conformal predictive distribution.
* **Mondrian, label-conditional** (the default, shipped in ``model/conformal.json``): calibrated
  separately per **sex x reference age band**, the very groups the coverage promise is audited on. The
  band of a new radiograph is unknown, so the taxonomy depends on the *candidate* age, which Vovk's
  Mondrian conformal predictors allow (a taxonomy may depend on object and label): every candidate age y
  is tested against the calibration scores of its own band, and the interval is the hull of the accepted
  ages. The guarantee is then per group: a child whose true age is in band b is covered with probability
  at least c, whatever the model does to that band. Bands with too few calibration cases for a level
  (fewer than ``(1+c)/(1-c)``) are merged with their inner neighbour, so the promise holds per merged
  group there. crepes' Mondrian classes take groups from what is known before the label only, hence
  this small numpy implementation.

  **Band offsets.** Each band's scores are first centred on that band's median score *on the training
  split* (:func:`band_offsets`), so the score is ``(y - y_hat) / sigma - offset[band(y)]``. A score function
  fitted on training data leaves split-conformal validity untouched; what it buys is that merged bands no
  longer pool errors of different sign (the model regresses the extremes of age towards the mean).

  Why label-conditional, and why the offsets: docs/decisions.md (2026-11-24, 2026-11-25), with the coverage
  measured before and after.

If no candidate age is accepted at all (possible in principle, not seen on the RSNA splits), the case gets
the pooled interval of its sex instead, and ``last_fallbacks`` counts how often that happened.

Saved as JSON (the calibration scores themselves, no pickles) next to the model.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from crepes import ConformalPredictiveSystem

from boneage.config import write_json_atomic
from boneage.training.splits import AGE_BAND_EDGES, AGE_BAND_LABELS

LEVELS = ("80", "90", "95")
Y_MIN, Y_MAX = 0.0, 300.0  # months: the widest interval ever given


def band_edges() -> np.ndarray:
    """Reference age-band edges (months) of the Mondrian groups: those of :mod:`boneage.training.splits`."""
    return np.array([*AGE_BAND_EDGES[:-1], Y_MAX], float)


def mondrian_bins(age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Group code = 2 * age band + sex, for a *reference* (or candidate) age."""
    band = np.digitize(np.asarray(age, float), band_edges()[1:-1])
    return band * 2 + np.asarray(male).astype(int)


def min_group_size(level: str | float) -> int:
    """Fewest calibration cases with finite bounds for both tails: ceil((n+1)(1+c)/2) <= n."""
    c = _conf(level)
    return int(math.ceil((1 + c) / (1 - c) - 1e-9))


def merge_small_bands(counts: list[int], n_min: int) -> list[list[int]]:
    """Adjacent bands joined until each group has ``n_min`` cases; a small band joins its inner neighbour
    (the larger one when it has two), because the extremes of age are where cases are few."""
    groups = [[i] for i in range(len(counts))]
    size = lambda g: sum(counts[i] for i in g)  # noqa: E731
    while len(groups) > 1:
        small = [j for j, g in enumerate(groups) if size(g) < n_min]
        if not small:
            break
        j = small[0]
        if j == 0:
            k = 1
        elif j == len(groups) - 1:
            k = j - 1
        else:
            k = j - 1 if size(groups[j - 1]) >= size(groups[j + 1]) else j + 1
        a, b = sorted((j, k))
        groups[a:b + 1] = [groups[a] + groups[b]]
    return groups


def band_offsets(y: np.ndarray, y_hat: np.ndarray, scale: np.ndarray, male: np.ndarray,
                 min_cases: int = 10) -> np.ndarray:
    """Median normalised residual (y - y_hat) / scale per sex x reference age band, indexed by group code.

    Meant for the *training* split: the offsets are then part of the score function, and the calibration
    split stays untouched for the quantiles. Groups with fewer than ``min_cases`` cases get 0 (no centring)
    rather than a median of a handful.
    """
    y, y_hat, scale = (np.asarray(a, float) for a in (y, y_hat, scale))
    ok = ~np.isnan(y)
    bins = mondrian_bins(y[ok], np.asarray(male)[ok])
    s = (y[ok] - y_hat[ok]) / scale[ok]
    out = np.zeros(2 * len(AGE_BAND_LABELS))
    for b in range(len(out)):
        if np.sum(bins == b) >= min_cases:
            out[b] = float(np.median(s[bins == b]))
    return out


def _conf(level: str | float) -> float:
    return float(level) / 100 if float(level) > 1 else float(level)


def _score_bounds(scores: np.ndarray, conf: float) -> tuple[float, float]:
    """Split-conformal lower / upper score quantiles with the finite-sample (n+1) correction."""
    s, n = np.sort(scores), len(scores)
    k_lo = math.floor((n + 1) * (1 - conf) / 2)
    k_hi = math.ceil((n + 1) * (1 + conf) / 2)
    return (float(s[k_lo - 1]) if k_lo >= 1 else -np.inf), (float(s[k_hi - 1]) if k_hi <= n else np.inf)


@dataclass
class BandRule:
    """Accepted scores [q_lo, q_hi] + offset for candidate ages in [age_lo, age_hi) of one sex; ``n`` is
    the size of the (merged) calibration group the centred bounds q_lo, q_hi come from."""

    male: bool
    age_lo: float
    age_hi: float
    q_lo: float
    q_hi: float
    n: int
    offset: float = 0.0
    group: int = 0


@dataclass
class ConformalCalibrator:
    """Normalised split-conformal intervals: Mondrian by sex x reference age band, or global."""

    residuals: np.ndarray  # y - y_hat on the calibration split
    sigmas: np.ndarray  # model scale on the calibration split
    bins: np.ndarray | None = None  # Mondrian group codes of the *reference* ages, None for global
    offsets: np.ndarray | None = None  # per group code, from the training split (band_offsets); None = zeros

    def __post_init__(self):
        self.residuals = np.asarray(self.residuals, float)
        self.sigmas = np.asarray(self.sigmas, float)
        self.last_fallbacks = 0
        if self.bins is not None:
            self.bins = np.asarray(self.bins, int)
            n_codes = 2 * len(AGE_BAND_LABELS)
            self.offsets = np.zeros(n_codes) if self.offsets is None else np.asarray(self.offsets, float)
            if self.offsets.shape != (n_codes,):
                raise ValueError(f"conformal offsets: expected {n_codes} values (sex x age band), got "
                                 f"{self.offsets.shape}")
            self._rules: dict[float, list[BandRule]] = {}
        else:
            self._cps = ConformalPredictiveSystem()
            self._cps.fit(self.residuals, sigmas=self.sigmas, seed=0)

    @classmethod
    def fit(cls, y: np.ndarray, y_hat: np.ndarray, scale: np.ndarray, male: np.ndarray | None = None,
            mondrian: bool = True, offsets: np.ndarray | None = None) -> "ConformalCalibrator":
        """``offsets`` (Mondrian only): per-group score centres from the training split, see
        :func:`band_offsets`; None centres nothing."""
        y, y_hat = np.asarray(y, float), np.asarray(y_hat, float)
        bins = mondrian_bins(y, male) if mondrian else None
        if not mondrian and offsets is not None:
            raise ValueError("offsets apply to the Mondrian variant only")
        return cls(y - y_hat, np.asarray(scale, float), bins, offsets)

    @property
    def mondrian(self) -> bool:
        return self.bins is not None

    # -- Mondrian (label-conditional) ----------------------------------------------------------
    def rules(self, level: str | float) -> list[BandRule]:
        """The calibration groups of one level (bands merged where too small) with their score bounds."""
        conf = _conf(level)
        if conf not in self._rules:
            self._rules[conf] = self._band_rules(conf)
        return self._rules[conf]

    def _band_rules(self, conf: float) -> list[BandRule]:
        edges, n_bands = band_edges(), len(AGE_BAND_LABELS)
        scores = self.residuals / self.sigmas - self.offsets[self.bins]  # centred on each band's offset
        band, male = self.bins // 2, self.bins % 2
        rules, g = [], 0
        for sex in (0, 1):
            counts = [int(np.sum((male == sex) & (band == b))) for b in range(n_bands)]
            for group in merge_small_bands(counts, min_group_size(conf)):
                sel = (male == sex) & np.isin(band, group)
                q_lo, q_hi = _score_bounds(scores[sel], conf)
                for b in group:  # one rule per band: shared centred bounds, the band's own offset
                    rules.append(BandRule(bool(sex), float(edges[b]), float(edges[b + 1]), q_lo, q_hi,
                                          int(sel.sum()), float(self.offsets[2 * b + sex]), g))
                g += 1
        return rules

    def groups(self, level: str | float) -> pd.DataFrame:
        """The calibration groups of one level (after merging) with their score bounds: for reports."""
        rows = {}
        for r in self.rules(level) if self.mondrian else []:
            row = rows.setdefault(r.group, {"sex": "M" if r.male else "F", "age_from": r.age_lo, "age_to": r.age_hi,
                                            "n_calibration": r.n, "score_lo": r.q_lo, "score_hi": r.q_hi,
                                            "band_offsets": []})
            row["age_to"] = r.age_hi
            row["band_offsets"].append(f"{r.offset:+.2f}")
        for row in rows.values():
            row["band_offsets"] = " / ".join(row["band_offsets"])
        return pd.DataFrame(list(rows.values()))

    def _mondrian_interval(self, y_hat, scale, male, level) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.full(len(y_hat), np.inf), np.full(len(y_hat), -np.inf)
        for r in self.rules(level):
            # Candidate ages y of this band accepted: q_lo <= (y - y_hat) / scale - offset <= q_hi, inside it.
            p_lo = np.maximum(y_hat + scale * (r.q_lo + r.offset), r.age_lo)
            p_hi = np.minimum(y_hat + scale * (r.q_hi + r.offset), r.age_hi)
            ok = (male == r.male) & (p_lo <= p_hi)
            lo[ok], hi[ok] = np.minimum(lo[ok], p_lo[ok]), np.maximum(hi[ok], p_hi[ok])
        empty = ~np.isfinite(lo)
        self.last_fallbacks = int(empty.sum())
        if empty.any():  # no age accepted: the pooled interval of the case's sex (see module docstring)
            scores = self.residuals / self.sigmas
            for sex in (False, True):
                m = empty & (male == sex)
                if m.any():
                    q_lo, q_hi = _score_bounds(scores[(self.bins % 2).astype(bool) == sex], _conf(level))
                    lo[m], hi[m] = y_hat[m] + scale[m] * q_lo, y_hat[m] + scale[m] * q_hi
        return lo, hi

    # -- both ----------------------------------------------------------------------------------
    def interval(self, y_hat: np.ndarray, scale: np.ndarray, male: np.ndarray, level: str | float) -> tuple[np.ndarray, np.ndarray]:
        y_hat, scale = np.asarray(y_hat, float), np.asarray(scale, float)
        male = np.asarray(male).astype(bool)
        if self.mondrian:
            lo, hi = self._mondrian_interval(y_hat, scale, male, level)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="the no. of calibration examples is too small")
                iv = self._cps.predict_int(y_hat, sigmas=scale, confidence=_conf(level), y_min=Y_MIN, y_max=Y_MAX)
            lo, hi = iv[:, 0].astype(float), iv[:, 1].astype(float)
        # Too few calibration cases for a level give infinite or undefined bounds: the honest interval is then
        # the whole range, never a collapsed one.
        lo = np.clip(np.nan_to_num(lo, nan=Y_MIN, neginf=Y_MIN, posinf=Y_MAX), Y_MIN, Y_MAX)
        hi = np.clip(np.nan_to_num(hi, nan=Y_MAX, posinf=Y_MAX, neginf=Y_MIN), Y_MIN, Y_MAX)
        return lo, hi

    def intervals(self, y_hat, scale, male, levels=LEVELS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {lvl: self.interval(y_hat, scale, male, lvl) for lvl in levels}

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        if self.mondrian:
            method = ("normalised split-conformal, Mondrian by sex x reference age band (label-conditional: each "
                      "candidate age tested against its own band's calibration scores, centred on the band's median "
                      "training-split score; interval = hull of accepted ages), sigma = model Laplace scale")
        else:
            method = ("normalised split-conformal predictive system (crepes ConformalPredictiveSystem, asymmetric "
                      "percentile intervals), sigma = model Laplace scale")
        out = {"method": method, "mondrian": self.mondrian, "band_edges": band_edges().tolist(),
               "residuals": np.round(self.residuals, 4).tolist(), "sigmas": np.round(self.sigmas, 4).tolist(),
               "bins": None if self.bins is None else self.bins.tolist(),
               "offsets": None if self.offsets is None else np.round(self.offsets, 4).tolist()}
        if self.mondrian:
            out["groups"] = {lvl: self.groups(lvl).round(4).to_dict("records") for lvl in LEVELS}
        return out

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ConformalCalibrator":
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); rerun `python -m pipelines.precompute --only "
                             "intervals` to recalibrate.") from None
        if not isinstance(d, dict) or not all(k in d for k in ("residuals", "sigmas", "bins")):
            raise ValueError(f"{path} is not a conformal calibration (expected a JSON object with residuals, sigmas "
                             f"and bins, found {type(d).__name__}); rerun `python -m pipelines.precompute --only "
                             "intervals` to recalibrate.")
        for key in ("residuals", "sigmas", "offsets"):
            vals = d.get(key)
            if vals is None and key == "offsets":
                continue
            try:
                arr = np.asarray(vals, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: '{key}' must be a list of numbers; rerun `python -m pipelines.precompute "
                                 "--only intervals`.") from None
            if arr.size == 0 or not np.isfinite(arr).all():
                raise ValueError(f"{path}: '{key}' holds {'no values' if arr.size == 0 else 'NaN or infinite values'}"
                                 "; the intervals would be meaningless. Rerun `python -m pipelines.precompute "
                                 "--only intervals` to recalibrate.")
        if d.get("mondrian") and "band_edges" not in d:
            raise ValueError(f"{path} holds conformal groups by predicted age from an older version: rerun "
                             "`python -m pipelines.precompute --only intervals` to recalibrate.")
        # A file without offsets (written before they existed) is the same calibrator with no centring.
        return cls(np.array(d["residuals"]), np.array(d["sigmas"]), None if d["bins"] is None else np.array(d["bins"]),
                   None if d.get("offsets") is None else np.array(d["offsets"]))


def coverage_table(y, lo, hi) -> dict[str, float]:
    """Coverage and mean width of intervals [lo, hi] against references y (NaN references dropped)."""
    y, lo, hi = (np.asarray(a, float) for a in (y, lo, hi))
    ok = ~np.isnan(y)
    if not ok.any():
        return {"n": 0, "coverage": np.nan, "mean_width": np.nan}
    return {"n": int(ok.sum()), "coverage": float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))),
            "mean_width": float(np.mean(hi[ok] - lo[ok]))}


def coverage_frame(report: dict, split: str) -> pd.DataFrame:
    """The coverage report (``coverage.json``) of one split as a long table.

    One row per variant (mondrian / global) x level x group, where group ``"all"`` is the whole split and
    the others are reference sex x age band ("M 5-8y"). Columns: variant, level, nominal (0-1), group, sex,
    age_band, n, coverage, mean_width. Groups are in sex, then age order.
    """
    rows = []
    for variant, by_split in report.items():
        levels = by_split.get(split)
        if levels is None:
            continue
        for level, entry in levels.items():
            groups = [("all", entry)] + list((entry.get("by_group") or {}).items())
            for name, g in groups:
                sex, _, band = name.partition(" ") if name != "all" else ("all", "", "all")
                rows.append({"variant": variant, "level": str(level), "nominal": float(level) / 100, "group": name,
                             "sex": sex, "age_band": band, "n": int(g.get("n") or 0),
                             "coverage": np.nan if g.get("coverage") is None else float(g["coverage"]),
                             "mean_width": np.nan if g.get("mean_width") is None else float(g["mean_width"])})
    cols = ["variant", "level", "nominal", "group", "sex", "age_band", "n", "coverage", "mean_width"]
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        rank = {"age_band": {b: i for i, b in enumerate(("all", *AGE_BAND_LABELS))}, "sex": {"all": 0, "F": 1, "M": 2}}
        out = out.sort_values(["variant", "level", "sex", "age_band"], kind="stable",
                              key=lambda s: s.map(rank[s.name]).fillna(99) if s.name in rank else s)
    return out.reset_index(drop=True)


def add_intervals(df: pd.DataFrame, save_path: str | Path | None = None) -> "ConformalCalibrator":
    """Add the interval columns of the predictions table (``lower_/upper_<L>`` Mondrian, ``..._global`` one
    calibration; :data:`LEVELS`) to every row of ``df``, in place, calibrated on the calibration split only
    (the Mondrian band offsets come from the training split). Saves the Mondrian calibrator to ``save_path``
    (the model's ``conformal.json``) when given, and returns it."""
    cal, train = (df["split"] == "calib").to_numpy(), (df["split"] == "train").to_numpy()
    male = df["male"].to_numpy()
    y, y_hat, scale = (df[c].to_numpy(float) for c in ("boneage", "boneage_pred", "uncertainty"))
    offsets = band_offsets(y[train], y_hat[train], scale[train], male[train])
    shipped = None
    for mondrian, suffix in ((True, ""), (False, "_global")):
        cc = ConformalCalibrator.fit(y[cal], y_hat[cal], scale[cal], male[cal], mondrian=mondrian,
                                     offsets=offsets if mondrian else None)
        if mondrian:
            shipped = cc
            if save_path is not None:
                cc.save(save_path)
        for lvl in LEVELS:
            lo, hi = cc.interval(y_hat, scale, male, lvl)
            df[f"lower_{lvl}{suffix}"], df[f"upper_{lvl}{suffix}"] = lo, hi
    return shipped


def coverage_report(df: pd.DataFrame) -> dict:
    """Coverage and width (:func:`coverage_table`) of both variants per split (test, official_test, calib),
    level and group (``"<sex> <age band>"`` of the reference), from a predictions table with interval columns:
    the content of ``coverage.json``. Groups are keyed in the text order of the committed file."""
    out = {}
    for variant, suffix in (("mondrian", ""), ("global", "_global")):
        out[variant] = {}
        for split in ("test", "official_test", "calib"):
            d = df[(df["split"] == split) & df["boneage"].notna()]
            groups = d.groupby([d["sex"].astype(object), d["age_band"].astype(object)])
            out[variant][split] = {}
            for lvl in LEVELS:
                lo, hi = f"lower_{lvl}{suffix}", f"upper_{lvl}{suffix}"
                entry = coverage_table(d["boneage"], d[lo], d[hi])
                entry["by_group"] = {f"{s} {b}": coverage_table(g["boneage"], g[lo], g[hi]) for (s, b), g in groups}
                out[variant][split][lvl] = entry
    return out
