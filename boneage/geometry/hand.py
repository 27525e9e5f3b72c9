"""Where the hand is in a preprocessed radiograph: a threshold sweep scored for hand shape.

No learned detector. After :mod:`boneage.geometry.preprocess` the background sits at 0 and dense bone near 1,
but a single global threshold (Otsu's) fails on what real films carry: a grey detector plate or cassette
under the hand (the plate is taken for the hand), a bright frame line or film edge joined to the hand
(the frame is taken with it), burnt-in letters brighter than a faint hand (the letter is taken for the
hand). :func:`segment_hand` therefore tries a ladder of thresholds; at each one the bright pixels are
opened with a 3x3 square (which cuts 1-2 px frame lines and thin ruler marks off the hand), the largest
connected component is kept with its holes filled, and the candidate is scored for looking like a hand:

- its area is a plausible share of the image (:data:`MIN_AREA` - :data:`MAX_AREA`);
- its solidity (area over convex hull) is that of a hand with fingers, not of a plate (<= :data:`MAX_SOLIDITY`);
- it does not run along the top, left or right edge of the image (a frame, or a hand cut at the film's edge);
  the forearm leaving at the bottom is expected. A candidate that does is tried once more with a band of
  :data:`EDGE_BAND` px cleared at every edge, which cuts a frame along the film's edges off the hand.

The image is median-filtered (3x3) first, so detector noise in the background does not pass a low
threshold. Of the passing candidates, the hand is the one whose area changes least at the next threshold
up (the hand's edge is a plateau of the ladder, a noisy background joined to it is not; ties go to the
lower threshold, which keeps more soft tissue); the next passing threshold up is a second, tighter mask (:attr:`HandSegmentation.tight`), which training uses as the
"other segmenter" so the network does not learn one mask's quirks. When no threshold passes, the best
candidate is returned with ``ok`` False and the reason (:attr:`HandSegmentation.failure`), so callers can
say so instead of silently reading the background.

About 3-6 ms per 100 px image. Used for the model's hand masking (:mod:`boneage.geometry.masking`), for framing
(:mod:`boneage.geometry.framing`) and for measuring how much of a heatmap lies on the hand
(:mod:`boneage.evidence.explain`, :mod:`boneage.evidence.explanation_audit`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

# Bump when the segmentation changes: caches of masked images and of training masks are keyed by it, and a
# model that reads the hand alone was trained with the masks of one version (its config records it).
SEGMENTATION_VERSION = 3
# Thresholds tried, in the [0, 1] units of the normalised base image, lowest first.
THRESHOLDS = (0.03, 0.05, 0.07, 0.09, 0.12, 0.15, 0.19, 0.24, 0.30, 0.37, 0.45, 0.55)
# Measured on 200 official and 600 training base images with a single Otsu mask: hands cover a median
# 0.21-0.24 of the image with solidity 0.59-0.61; plates and whole-film masks sit at solidity ~1.
MIN_AREA, MAX_AREA = 0.04, 0.6
MAX_SOLIDITY = 0.85
MAX_EDGE_RUN = 0.25  # the mask may touch the top/left/right edge along at most this share of that edge
FAILURES = ("no-hand", "plate", "cut-at-frame")
EDGE_BAND = 3  # px cleared at each edge when a frame along them is joined to the hand


@dataclass(frozen=True)
class HandSegmentation:
    """The hand mask of one base image and how much to trust it.

    ``mask`` is the hand (bool, the image's shape); ``tight`` the next passing mask of the sweep (the same
    as ``mask`` when only one passed); ``ok`` whether a candidate passed every check; ``failure`` one of
    :data:`FAILURES` ("" when ok) and ``reason`` the sentence a note shows."""

    mask: np.ndarray
    tight: np.ndarray
    ok: bool
    threshold: float
    area: float
    solidity: float
    failure: str = ""
    reason: str = ""


def segment_hand(image: np.ndarray) -> HandSegmentation:
    """The hand in a normalised base image (float in [0, 1], or uint8): see the module docstring.

    When the sweep finds only a plate (a bright, nearly convex region), it is run once more inside the
    plate, with the plate's own level (the mode of its histogram) as the background."""
    img = np.asarray(image, np.float32)
    if np.asarray(image).dtype == np.uint8:
        img = img / 255.0
    img = ndimage.median_filter(img, size=3)  # detector noise of the background must not pass a low threshold
    seg = _sweep(img)
    if seg.failure == "plate":
        plate = seg.mask
        level = _mode(img[plate])
        top = float(np.percentile(img[plate], 99.5))
        if top - level > 0.05:
            inner = _sweep(np.where(plate, np.clip((img - level) / (top - level), 0, 1), 0).astype(np.float32))
            if inner.ok:
                return inner
    return seg


def _mode(values: np.ndarray, bins: int = 64) -> float:
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    k = int(np.argmax(np.convolve(hist, np.ones(3) / 3, mode="same")))
    return float(edges[k] + edges[k + 1]) / 2


def _sweep(img: np.ndarray) -> HandSegmentation:
    """One pass of the threshold ladder over ``img`` (module docstring)."""
    passing: list[tuple[int, float, np.ndarray, float, float]] = []  # (ladder step, t, mask, area, solidity)
    best: tuple[float, float, np.ndarray, float, float, str] | None = None  # (badness, t, mask, area, sol, why)
    areas = []
    for k, t in enumerate(THRESHOLDS):
        fg = img > t
        mask = _largest_component(fg)
        area = float(mask.mean())
        areas.append(area)
        if area == 0:
            continue
        sol = _solidity(mask) if MIN_AREA <= area <= MAX_AREA else 1.0
        failure, badness = _judge(mask, area, sol)
        if failure == "cut-at-frame":  # a frame along the film's edges joined to the hand: cut the edges off
            fg[:EDGE_BAND], fg[-EDGE_BAND:], fg[:, :EDGE_BAND], fg[:, -EDGE_BAND:] = False, False, False, False
            cut = _largest_component(fg)
            cut_area = float(cut.mean())
            cut_sol = _solidity(cut) if MIN_AREA <= cut_area <= MAX_AREA else 1.0
            if not _judge(cut, cut_area, cut_sol, edge=EDGE_BAND)[0]:
                mask, area, sol, failure = cut, cut_area, cut_sol, ""
                areas[-1] = area
        if not failure:
            passing.append((k, t, mask, area, sol))
        elif best is None or badness < best[0]:
            best = (badness, t, mask, area, sol, failure)
    if passing:
        # the hand's edge is a plateau of the ladder: its outline hardly moves between neighbouring thresholds,
        # where a film's or plate's noisy background joined to it does
        def change(entry) -> float:
            k, _, _, area, _ = entry
            nxt = areas[k + 1] if k + 1 < len(areas) else 0.0
            return abs(area - nxt) / area
        pick = min(range(len(passing)), key=lambda i: (round(change(passing[i]), 2), passing[i][0]))
        _, t, mask, area, sol = passing[pick]
        tight = passing[pick + 1][2] if pick + 1 < len(passing) else mask
        return HandSegmentation(mask, tight, True, t, area, sol)
    if best is None:
        empty = np.zeros(img.shape, bool)
        return HandSegmentation(empty, empty, False, float("nan"), 0.0, 0.0, "no-hand",
                                "no hand found: nothing in the image stands out from the background")
    _, t, mask, area, sol, failure = best
    reason = {"no-hand": f"no hand found: the largest object covers {area:.0%} of the image",
              "plate": f"the hand could not be told from the plate or film under it (the outline covers "
                       f"{area:.0%} of the image and is {sol:.0%} convex)",
              "cut-at-frame": "the hand outline runs along the edge of the film (a frame joined to it, or the "
                              "hand cut at the film's edge)"}[failure]
    return HandSegmentation(mask, mask, False, t, area, sol, failure, reason)


def hand_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the hand in a preprocessed image: :func:`segment_hand`'s ``mask``."""
    return segment_hand(image).mask


def _judge(mask: np.ndarray, area: float, solidity: float, edge: int = 0) -> tuple[str, float]:
    """(failure or "", how far from passing) of a candidate mask; ``edge``: rows and columns at each side
    that were cleared (the edge run is measured just inside them)."""
    if area < MIN_AREA:
        return "no-hand", 3 + (MIN_AREA - area)
    if area > MAX_AREA or solidity > MAX_SOLIDITY:
        return "plate", 2 + max(area - MAX_AREA, solidity - MAX_SOLIDITY)
    run = max(mask[edge].mean(), mask[:, edge].mean(), mask[:, -1 - edge].mean())
    if run > MAX_EDGE_RUN:
        return "cut-at-frame", 1 + run
    return "", 0.0


def _largest_component(fg: np.ndarray) -> np.ndarray:
    fg = ndimage.binary_opening(fg, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(fg.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))


def _solidity(mask: np.ndarray) -> float:
    """Mask area over its convex hull's area: about 0.5-0.75 for a hand with its fingers, ~1 for a plate."""
    ys, xs = np.nonzero(mask)
    # pixel corners, so thin or tiny masks still have a proper hull
    pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return float(mask.sum() / ConvexHull(pts).volume)
    except (QhullError, ValueError):
        return 1.0
