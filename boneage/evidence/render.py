"""Rendering of heatmaps and feature maps for display: colour maps, overlays on the radiograph, and the mosaic
of a layer's feature maps. Pure numpy (plus a bilinear resize), no model: what :mod:`boneage.evidence.explain` computes,
this turns into RGB uint8 images.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Colour maps as anchor colours (positions 0..1 evenly spaced), linearly interpolated to 256 entries.
_CMAP_ANCHORS = {
    "jet": [(0, 0, 0.5), (0, 0, 1), (0, 0.5, 1), (0, 1, 1), (0.5, 1, 0.5), (1, 1, 0), (1, 0.5, 0), (1, 0, 0), (0.5, 0, 0)],
    "inferno": [(0.001, 0.000, 0.014), (0.087, 0.045, 0.225), (0.258, 0.039, 0.406), (0.416, 0.090, 0.433),
                (0.578, 0.148, 0.404), (0.735, 0.216, 0.330), (0.865, 0.317, 0.226), (0.954, 0.469, 0.098),
                (0.988, 0.645, 0.040), (0.964, 0.843, 0.273), (0.988, 0.998, 0.645)],
    "gray": [(0, 0, 0), (1, 1, 1)],
}


def colormap_lut(cmap: str = "jet") -> np.ndarray:
    """(256, 3) uint8 lookup table for 'jet', 'inferno' or 'gray'."""
    if cmap not in _CMAP_ANCHORS:
        raise ValueError(f"unknown colour map {cmap!r}; one of {list(_CMAP_ANCHORS)}")
    anchors = np.asarray(_CMAP_ANCHORS[cmap], np.float64)
    pos = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, 256)
    lut = np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], axis=1)
    return np.round(lut * 255).astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap (coloured with ``cmap``) onto a gray image: (H, W, 3) uint8.

    The heatmap is resized (bilinear) to the image when their shapes differ."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.round(np.clip(img.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2).astype(np.uint8)
    h = np.nan_to_num(np.asarray(heatmap, np.float32))
    if h.shape != img.shape:
        h = F.interpolate(torch.from_numpy(h)[None, None], size=img.shape, mode="bilinear",
                          align_corners=False)[0, 0].numpy()
    idx = np.round(np.clip(h, 0, 1) * 255).astype(np.intp)
    colour = colormap_lut(cmap)[idx].astype(np.float32)
    gray = np.repeat(img[..., None], 3, axis=2).astype(np.float32)
    out = (1 - alpha) * gray + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def activation_mosaic(maps: np.ndarray, cols: int = 8, cell: int = 56, gap: int = 2, cmap: str = "inferno") -> np.ndarray:
    """Grid image (RGB uint8) of [0, 1] feature maps (C, h, w), each upsampled to ``cell`` px (nearest), white
    gaps of ``gap`` px between them."""
    maps = np.asarray(maps, np.float32)
    n = len(maps)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.full((rows * (cell + gap) - gap, cols * (cell + gap) - gap), np.nan, np.float32)
    for k, m in enumerate(maps):
        ry = np.linspace(0, m.shape[0] - 1e-6, cell).astype(int)
        rx = np.linspace(0, m.shape[1] - 1e-6, cell).astype(int)
        r, c = divmod(k, cols)
        out[r * (cell + gap):r * (cell + gap) + cell, c * (cell + gap):c * (cell + gap) + cell] = m[np.ix_(ry, rx)]
    rgb = colormap_lut(cmap)[np.round(np.clip(np.nan_to_num(out), 0, 1) * 255).astype(np.intp)]
    rgb[np.isnan(out)] = 255
    return rgb


def draw_outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with the outline of ``mask`` drawn in ``colour``: the mask is brought to the
    image's size (nearest) and its boundary pixels, one display pixel wide, are painted. Used to show the
    hand's outline over every heatmap, so a reader sees which part of a map lies on the hand."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    m = np.asarray(mask, bool)
    h, w = out.shape[:2]
    if m.shape != (h, w):
        rows = np.minimum((np.arange(h) * m.shape[0]) // h, m.shape[0] - 1)
        cols = np.minimum((np.arange(w) * m.shape[1]) // w, m.shape[1] - 1)
        m = m[np.ix_(rows, cols)]
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out[m & ~inner] = colour
    return out
