"""Where the hand is in a preprocessed radiograph: a fast threshold-and-components mask.

No learned detector: after :mod:`boneage.geometry.preprocess` the background sits at 0 and bone near 1, so Otsu's
threshold and the largest connected component find the hand on 12,611 training and 200 official images in
about 2 ms each (base size 100). Used for framing (:mod:`boneage.geometry.framing`) and for measuring how much of a
heatmap lies on the hand (:mod:`boneage.evidence.explain`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError


def hand_mask(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the hand in a preprocessed image (background ~0 after preprocessing).

    Pixels above ``threshold`` (in [0, 1]; default: Otsu's threshold, kept between 0.08 and 0.35),
    then the largest connected component with its holes filled (drops labels, rulers, noise). When
    that component is nearly convex (a detector plate or cassette brighter than the background,
    with the hand on it), the threshold is recomputed inside it, once, to separate the hand from it."""
    img = np.asarray(image, np.float32)
    if np.asarray(image).dtype == np.uint8:
        img = img / 255.0
    auto = threshold is None
    if auto:
        threshold = float(np.clip(_otsu(img), 0.08, 0.35))
    mask = _largest_component(img > threshold)
    if auto and mask.any() and _solidity(mask) > 0.85 and mask.mean() > 0.3:
        inner = float(np.clip(_otsu(img[mask], lo=float(img[mask].min()), hi=float(img[mask].max())), 0.08, 0.9))
        refined = _largest_component(img > max(inner, threshold))
        if refined.any():
            mask = refined
    return mask


def _largest_component(fg: np.ndarray) -> np.ndarray:
    fg = ndimage.binary_opening(fg, structure=np.ones((2, 2), bool))
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(fg.shape, bool)
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
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


def _otsu(img: np.ndarray, bins: int = 64, lo: float = 0.0, hi: float = 1.0) -> float:
    if hi <= lo:
        return lo
    hist, edges = np.histogram(img, bins=bins, range=(lo, hi))
    p = hist.astype(np.float64) / max(1, hist.sum())
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centers)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between)
    return float(edges[1:][int(np.argmax(between))])


