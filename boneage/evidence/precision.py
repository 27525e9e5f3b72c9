"""Precision: how much the reading of one hand moves when the radiograph is taken or exported differently.

A bone-age reading follows a child over months, so the same hand must get the same reading. Each
perturbation below imitates a way real acquisitions of one hand differ (no labels are needed): the reading
of the perturbed radiograph is compared with the reading of the original. Perturbations act on the
radiograph as read from file (native size), before the model's own preparation, exactly as a differently
acquired film would reach it.

Reported per perturbation: the mean and 95th percentile of the absolute change, the mean signed change
(a systematic shift), and the test-retest SD, ``sqrt(mean(d**2) / 2)``: the within-hand SD of two
readings, the figure commercial systems quote for two radiographs of one hand taken the same day.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from boneage.geometry.perturb import border, crop, downscale, gamma, jpeg, mirror, rotate  # noqa: F401 (re-exported)


# name -> (what it imitates, function). Inverse pairs: rotation both ways, gamma both ways, crop and border.
PERTURBATIONS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "jpeg_q70": ("JPEG at quality 70", lambda a: jpeg(a, 70)),
    "downscale_512": ("downscaled to 512 px (or 70 %) before reading", downscale),
    "gamma_0.7": ("gamma 0.7 (exposure)", lambda a: gamma(a, 0.7)),
    "gamma_1.4": ("gamma 1.4 (exposure)", lambda a: gamma(a, 1.4)),
    "rotate_+10": ("rotated by 10 degrees", lambda a: rotate(a, 10)),
    "rotate_-10": ("rotated by -10 degrees", lambda a: rotate(a, -10)),
    "crop_8pct": ("8 % of each margin cropped away", crop),
    "border_20pct": ("20 % black border added", border),
    "mirror": ("mirrored (a right hand)", mirror),
}

# Diagnostics, not targets: perturbations that keep the hand as it was and change only how its pixels were
# resampled or re-encoded. Their change is the reading's floor under any re-acquisition: a turn that moves the
# reading as much as its way there and back is changing it by the resampling, not by the angle.
DIAGNOSTICS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "rotate_+10_back": ("turned 10 degrees and back (a turn's resampling, no net turn)",
                        lambda a: rotate(rotate(a, 10), -10)),
    "rotate_+0.5": ("rotated by 0.5 degrees (resampled, hardly turned)", lambda a: rotate(a, 0.5)),
    "jpeg_q95": ("JPEG at quality 95 (a near-lossless re-export)", lambda a: jpeg(a, 95)),
}


_BY_NAME = {**PERTURBATIONS, **DIAGNOSTICS}


def perturbation(name: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(description, function) of a benchmark perturbation or a diagnostic, by name."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown perturbation {name!r}; choose from {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


# Targets of the precision issue: every perturbation's mean absolute change and its 95th percentile.
TARGET_MEAN_ABS, TARGET_P95_ABS = 2.0, 6.0


@dataclass
class PerturbationStats:
    """How the reading moved under one perturbation over a set of images (months)."""

    name: str
    description: str
    n: int
    mean_abs: float
    p95_abs: float
    mean_signed: float
    test_retest_sd: float
    meets_target: bool

    @classmethod
    def from_changes(cls, name: str, description: str, d: np.ndarray) -> "PerturbationStats":
        d = np.asarray(d, np.float64)
        d = d[np.isfinite(d)]
        if len(d) == 0:
            return cls(name, description, 0, math.nan, math.nan, math.nan, math.nan, False)
        mean_abs, p95 = float(np.mean(np.abs(d))), float(np.percentile(np.abs(d), 95))
        return cls(name, description, len(d), mean_abs, p95, float(np.mean(d)), float(np.sqrt(np.mean(d ** 2) / 2)),
                   mean_abs <= TARGET_MEAN_ABS and p95 <= TARGET_P95_ABS)


@dataclass
class PrecisionReport:
    """Per-set, per-perturbation statistics, the pooled test-retest SD of each set, and optionally the
    :data:`DIAGNOSTICS` of each set."""

    sets: dict[str, list[PerturbationStats]] = field(default_factory=dict)
    pooled_sd: dict[str, float] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)  # set -> "id: reason" of images not read
    diagnostics: dict[str, list[PerturbationStats]] = field(default_factory=dict)  # not targets, not pooled

    def all_met(self) -> bool:
        """Every benchmark perturbation of every set meets its targets (diagnostics do not count); False when
        nothing was measured."""
        return bool(self.sets) and all(s.meets_target for stats in self.sets.values() for s in stats)


def summarise(changes: dict[str, np.ndarray]) -> tuple[list[PerturbationStats], float]:
    """Statistics per perturbation from ``{name: perturbed - original readings}``, and the pooled
    test-retest SD over every pair."""
    stats = [PerturbationStats.from_changes(n, _BY_NAME[n][0] if n in _BY_NAME else n, d) for n, d in changes.items()]
    pooled = np.concatenate([np.asarray(d, np.float64) for d in changes.values()]) if changes else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    return stats, float(np.sqrt(np.mean(pooled ** 2) / 2)) if len(pooled) else math.nan


def reading_changes(predict: Callable[[list[np.ndarray], np.ndarray], np.ndarray], images: list[np.ndarray],
                    male: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{perturbation: reading(perturbed) - reading(original)}`` per image.

    ``predict(arrays, male)`` reads a list of raw radiographs (as from file) and returns months; it is
    called once for the originals and once per perturbation, so it can batch. ``names`` may include
    :data:`DIAGNOSTICS`; the default is the benchmark's perturbations.
    """
    names = list(PERTURBATIONS) if names is None else names
    if not images:
        return {n: np.zeros(0) for n in names}
    base = np.asarray(predict(images, male), np.float64)
    return {n: np.asarray(predict([perturbation(n)[1](a) for a in images], male), np.float64) - base
            for n in names}
