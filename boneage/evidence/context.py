"""Context benchmark: does the reading move when only what lies outside the hand changes?

A bone-age reader must read bones. Each variant below changes the film outside a generously dilated hand
region and leaves every pixel of the hand and its soft tissue as it was: the background blacked out,
noise, burnt-in labels and markers, a detector plate's edge, a ruler, a second object (a coin). The
reading of the changed film is compared with the original's; a model that reads the hand alone should not
move. Beside :mod:`boneage.evidence.precision` (which changes the acquisition of the hand itself).

The hand region (:func:`protected_region`) is found on the film itself, independently of the model under
test: :func:`boneage.geometry.hand.segment_hand` on the film squeezed to 100 px and normalised, brought back to
the film's size and dilated by :data:`PROTECT_MARGIN` of the film's shorter side. Films whose
segmentation fails are left out and counted, so no variant is ever drawn over the hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from boneage.evidence.precision import PerturbationStats
from boneage.geometry.framing import squeeze
from boneage.geometry.hand import segment_hand
from boneage.geometry.preprocess import normalize_intensity

PROTECT_MARGIN = 0.02  # of the film's shorter side: the hand's soft tissue and the outline's error stay untouched
SEED = 0
TARGET_MEAN_ABS = 1.5  # months, per variant (issue 29)


def protected_region(film: np.ndarray) -> tuple[np.ndarray, str]:
    """(bool mask at the film's size that no variant may touch, "" or why the film is left out)."""
    a = np.asarray(film, np.float32)
    seg = segment_hand(normalize_intensity(squeeze(a, 100)))
    if not seg.ok:
        return np.ones(a.shape, bool), seg.reason
    h, w = a.shape
    rows = np.minimum((np.arange(h) * 100) // h, 99)
    cols = np.minimum((np.arange(w) * 100) // w, 99)
    region = seg.mask[np.ix_(rows, cols)]
    grow = max(1, int(round(PROTECT_MARGIN * min(h, w))))
    region = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool), iterations=grow)
    return region, ""


def _levels(a: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(a, 0.5)), float(np.percentile(a, 99.9))


def _paint(film: np.ndarray, region: np.ndarray, draw: Callable[[ImageDraw.ImageDraw, int, int], None],
           value: float) -> np.ndarray:
    """``film`` with what ``draw`` paints on a blank layer set to ``value``, outside ``region`` only."""
    h, w = film.shape
    layer = Image.new("L", (w, h), 0)
    draw(ImageDraw.Draw(layer), w, h)
    painted = (np.asarray(layer) > 0) & ~region
    out = np.asarray(film, np.float32).copy()
    out[painted] = value
    return out


def blackout(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Outside the hand at the film's black level, with faint noise (SD 0.5 % of the range): an exactly uniform
    surround would be trimmed as bars before the squeeze (:func:`boneage.geometry.framing.trim_uniform_border`),
    which changes the framing, what the crop perturbation of the precision benchmark measures."""
    lo, hi = _levels(film)
    dark = lo + np.abs(rng.normal(0, 0.005 * (hi - lo), film.shape)).astype(np.float32)
    return np.where(region, film, dark).astype(np.float32)


def noise(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _levels(film)
    n = rng.normal(0, 0.05 * (hi - lo), film.shape).astype(np.float32)
    return np.where(region, film, np.clip(film + n, film.min(), film.max())).astype(np.float32)


def labels(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, hi = _levels(film)

    def draw(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
        s = max(6, min(w, h) // 14)
        for text, fx, fy in (("L", 0.05, 0.05), ("R 12:34", 0.62, 0.06), ("ID 000123", 0.05, 0.88),
                             ("L", 0.85, 0.85)):
            x, y = int(fx * w + rng.integers(0, s)), int(fy * h + rng.integers(0, s))
            for k, ch in enumerate(text):  # block letters: legible at any film size without a font file
                d.rectangle([x + k * s, y, x + k * s + s // 2, y + s], outline=255, width=max(1, s // 6))
    return _paint(film, region, draw, hi)


def plate_edge(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = _levels(film)

    def draw(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
        m = int(0.04 * min(w, h))
        d.rectangle([m, m, w - 1 - m, h - 1 - m], outline=255, width=max(1, min(w, h) // 80))
    return _paint(film, region, draw, lo + 0.8 * (hi - lo))


def ruler(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    _, hi = _levels(film)

    def draw(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
        x = int(0.03 * w) if rng.random() < 0.5 else int(0.93 * w)
        bw = max(2, w // 60)
        d.rectangle([x, int(0.1 * h), x + bw, int(0.9 * h)], fill=255)
        for k in range(20):
            y = int(0.1 * h + k * 0.04 * h)
            d.line([x + bw, y, x + bw + (3 * bw if k % 5 == 0 else 2 * bw), y], fill=255, width=max(1, bw // 2))
    return _paint(film, region, draw, hi)


def second_object(film: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright coin in the corner farthest from the hand."""
    _, hi = _levels(film)
    h, w = film.shape
    ys, xs = np.nonzero(region)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    corners = [(0.12 * w, 0.12 * h), (0.88 * w, 0.12 * h), (0.12 * w, 0.88 * h), (0.88 * w, 0.88 * h)]
    fx, fy = max(corners, key=lambda c: (c[0] - cx) ** 2 + (c[1] - cy) ** 2)

    def draw(d: ImageDraw.ImageDraw, w: int, h: int) -> None:
        r = 0.05 * min(w, h)
        d.ellipse([fx - r, fy - r, fx + r, fy + r], fill=255)
    return _paint(film, region, draw, hi)


# name -> (what it imitates, function(film, protected region, rng) -> film)
VARIANTS: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]]] = {
    "blackout": ("everything outside the hand set to the film's black level (faint noise, so no bar is trimmed)",
                 blackout),
    "noise": ("Gaussian noise (SD 5 % of the film's range) outside the hand", noise),
    "labels": ("burnt-in letters and markers (L, R, a time, an ID) at the film's brightest level", labels),
    "plate_edge": ("a detector plate's bright edge, 4 % in from the film's edges", plate_edge),
    "ruler": ("a bright ruler with ticks along one side", ruler),
    "second_object": ("a bright coin in the corner farthest from the hand", second_object),
}


@dataclass
class ContextSet:
    """One set of films: per-variant statistics of ``reading(changed) - reading(original)``, and the films
    left out because their hand could not be segmented ("id: reason")."""

    stats: list[PerturbationStats]
    left_out: list[str]

    def all_met(self) -> bool:
        return bool(self.stats) and all(s.mean_abs <= TARGET_MEAN_ABS for s in self.stats)


def context_changes(predict: Callable[[list[np.ndarray], np.ndarray], np.ndarray], films: list[np.ndarray],
                    male: np.ndarray, ids: list[str], names: list[str] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """``({variant: reading(changed) - reading(original)}, left out)`` over the films whose hand was found.

    ``predict(films, male)`` reads raw films and returns months; called once for the originals and once per
    variant. Each film's variants are drawn with its own seeded generator (``SEED`` + its position)."""
    names = list(VARIANTS) if names is None else names
    keep, regions, left_out = [], [], []
    for i, (film, cid) in enumerate(zip(films, ids)):
        region, why = protected_region(film)
        if why:
            left_out.append(f"{cid}: {why}")
        else:
            keep.append(i)
            regions.append(region)
    if not keep:
        return {n: np.zeros(0) for n in names}, left_out
    kept = [np.asarray(films[i], np.float32) for i in keep]
    m = np.asarray(male)[keep]
    base = np.asarray(predict(kept, m), np.float64)
    out = {}
    for name in names:
        fn = VARIANTS[name][1]
        changed = [fn(f, r, np.random.default_rng(SEED + i)) for i, (f, r) in zip(keep, zip(kept, regions))]
        out[name] = np.asarray(predict(changed, m), np.float64) - base
    return out, left_out


def summarise(changes: dict[str, np.ndarray], left_out: list[str]) -> ContextSet:
    """:class:`ContextSet` of the changes (statistics as the precision benchmark's, target 1.5 months)."""
    stats = []
    for name, d in changes.items():
        s = PerturbationStats.from_changes(name, VARIANTS[name][0], d)
        s.meets_target = bool(s.n) and s.mean_abs <= TARGET_MEAN_ABS
        stats.append(s)
    return ContextSet(stats, left_out)
