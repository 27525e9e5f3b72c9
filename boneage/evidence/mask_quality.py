"""How far the hand segmentation can be trusted: failure rates per split and stability under re-acquisition.

A model that reads the hand alone reads only what :func:`boneage.geometry.hand.segment_hand` outlines, so the
outline is measured like the model is:

- **Failures** per set of films: no hand found, the hand not told from the plate under it, the outline
  running along the film's edge (a frame joined to it, or the hand cut at the film's edge); each a share
  of the set (:func:`failure_rates`).
- **Stability** (:func:`stability`): the film is re-acquired as the precision benchmark does it
  (:mod:`boneage.geometry.perturb`: JPEG, exposure, a turn, a tighter crop, a border, a smaller export), the
  hand segmented again, and compared with the original outline carried through the same change of
  geometry: the original base mask brought to the film's size, turned, cropped or padded by the same
  function, and squeezed back. Intersection over union of the two, per perturbation.

The films are prepared by the squeeze with uniform bars trimmed, as the shipped model prepares them
(:data:`STABILITY_GEOMETRY`; laterality as it comes, so a mirroring decision cannot pass for an outline's
change), and the outline of the perturbed film and the carried one live in the same base grid. The trim
removes a uniform black border again before the squeeze, so the border perturbation carries the outline
unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from boneage.config import Geometry
from boneage.geometry.framing import squeeze, trim_uniform_border
from boneage.geometry.hand import FAILURES, HandSegmentation, segment_hand
from boneage.geometry.perturb import border, crop, downscale, gamma, jpeg, rotate
from boneage.geometry.preprocess import prepare

STABILITY_GEOMETRY = Geometry(trim_bars=True)
# name -> (function on the film, function carrying a [0, 1] mask image at the film's size the same way)
PERTURBATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "jpeg_q70": (lambda a: jpeg(a, 70), lambda m: m),
    "gamma_0.7": (lambda a: gamma(a, 0.7), lambda m: m),
    "gamma_1.4": (lambda a: gamma(a, 1.4), lambda m: m),
    "rotate_+10": (lambda a: rotate(a, 10), lambda m: rotate(m, 10)),
    "rotate_-10": (lambda a: rotate(a, -10), lambda m: rotate(m, -10)),
    "crop_8pct": (crop, crop),
    "border_20pct": (border, lambda m: m),  # trimmed again before the squeeze
    "downscale_512": (downscale, downscale),
}


def segment_film(film: np.ndarray) -> HandSegmentation:
    """The hand of a raw film (as read from file), prepared by :data:`STABILITY_GEOMETRY`."""
    return segment_hand(prepare(film, STABILITY_GEOMETRY).image)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def carried_mask(mask: np.ndarray, film_shape: tuple[int, int], carry: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A base mask brought to the (trimmed) film's size (nearest), changed by ``carry`` and squeezed back."""
    h, w = film_shape
    size = mask.shape[0]
    rows = np.minimum((np.arange(h) * size) // h, size - 1)
    cols = np.minimum((np.arange(w) * size) // w, size - 1)
    native = mask[np.ix_(rows, cols)].astype(np.float32)
    return squeeze(carry(native), size) > 0.5


def stability(film: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
    """``{perturbation: IoU of the perturbed film's outline with the carried original}`` (module docstring);
    empty when the original's segmentation fails (there is nothing to carry)."""
    film = trim_uniform_border(np.asarray(film, np.float32))  # the carried outline lives on the trimmed film
    seg = segment_film(film)
    if not seg.ok:
        return {}
    out = {}
    for name in names or list(PERTURBATIONS):
        change, carry = PERTURBATIONS[name]
        out[name] = iou(segment_film(change(film)).mask, carried_mask(seg.mask, film.shape, carry))
    return out


@dataclass
class SetQuality:
    """One set of films: how many, the failure rate of each kind, the IoU statistics per perturbation, and
    the worst cases ``(id, failure or perturbation, value)`` for the contact sheet."""

    n: int
    failure_rates: dict[str, float]
    stability: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {mean, p05, min, n}
    worst: list[tuple[str, str, float]] = field(default_factory=list)


def failure_rates(segmentations: list[HandSegmentation]) -> dict[str, float]:
    """Share of the films of each failure kind (:data:`boneage.geometry.hand.FAILURES`) and in all."""
    n = max(1, len(segmentations))
    rates = {kind: sum(s.failure == kind for s in segmentations) / n for kind in FAILURES}
    rates["any"] = sum(not s.ok for s in segmentations) / n
    return rates


def stability_summary(per_film: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, 5th percentile and minimum IoU per perturbation over the films that had an outline."""
    out = {}
    for name in PERTURBATIONS:
        v = np.array([d[name] for d in per_film if name in d])
        if len(v):
            out[name] = {"mean": float(v.mean()), "p05": float(np.percentile(v, 5)), "min": float(v.min()),
                         "n": int(len(v))}
    return out
