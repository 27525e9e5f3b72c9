"""The hand alone: everything outside a slightly dilated hand mask set to the background, the hand's own
intensities stretched to [0, 1].

Why: a network that sees the film around the hand learns from it (blacking out the background moved the
shipped model's reading by about 5 months on the official films). A model whose geometry has
``mask = "hand"`` (:class:`boneage.config.Geometry`) reads only what this module leaves, at training and at
inference, so labels, plates, rulers and frames outside the hand cannot move its reading. The recipe is
Deeplasia's (Rassmann et al. 2023): the image multiplied by the mask, the hand's 1st intensity percentile
subtracted; here the 99.5th percentile inside the mask is mapped to 1 as the whole-film normalisation of
:mod:`boneage.geometry.preprocess` does, so exposure and a grey plate under the hand do not move the scale.

Two implementations of one operation: :func:`isolate_hand` (numpy, one image: every door's inference path,
through :func:`boneage.geometry.preprocess.prepare`) and :func:`isolate_hand_batch` (torch, a training batch with
a dilation and a mask per image: the mask noise of training). A test holds them equal.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from boneage.config import MASKS  # noqa: F401 (re-exported)

LOW_PERCENTILE, HIGH_PERCENTILE = 1.0, 99.5


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a square structuring element of side 2p + 1)."""
    mask = np.asarray(mask, bool)
    if pixels <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((2 * pixels + 1,) * 2, bool))


def isolate_hand(image: np.ndarray, mask: np.ndarray, dilation: int) -> np.ndarray:
    """``image`` (float in [0, 1]) with everything outside ``mask`` dilated by ``dilation`` px at 0, and the
    kept pixels mapped so their 1st percentile is 0 and their 99.5th is 1 (clipped). An empty mask gives
    an all-zero image: nothing is read."""
    img = np.asarray(image, np.float32)
    keep = dilate(mask, dilation)
    if not keep.any():
        return np.zeros_like(img)
    lo, hi = np.percentile(img[keep], [LOW_PERCENTILE, HIGH_PERCENTILE])
    scaled = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    return np.where(keep, scaled, 0.0).astype(np.float32)


def dilate_batch(masks: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool masks, each grown by its own ``pixels[b]`` (square element, as :func:`dilate`)."""
    out = masks.clone()
    m = masks.float().unsqueeze(1)
    for p in torch.unique(pixels).tolist():
        if p <= 0:
            continue
        rows = pixels == p
        grown = F.max_pool2d(m[rows], kernel_size=2 * p + 1, stride=1, padding=p) > 0.5
        out[rows] = grown.squeeze(1)
    return out


def isolate_hand_batch(x: torch.Tensor, masks: torch.Tensor, dilation: torch.Tensor) -> torch.Tensor:
    """:func:`isolate_hand` of each image of a (B, H, W) float batch, with its own mask and dilation."""
    keep = dilate_batch(masks.bool(), dilation.to(torch.int64))
    out = torch.zeros_like(x)
    q = torch.tensor([LOW_PERCENTILE / 100, HIGH_PERCENTILE / 100], dtype=x.dtype)
    for b in range(len(x)):
        kept = x[b][keep[b]]
        if kept.numel() == 0:
            continue
        lo, hi = torch.quantile(kept.double(), q.double()).to(x.dtype)
        scaled = ((x[b] - lo) / torch.clamp(hi - lo, min=1e-6)).clamp(0.0, 1.0)
        out[b] = torch.where(keep[b], scaled, torch.zeros_like(scaled))
    return out


def pack_masks(mask: np.ndarray, tight: np.ndarray) -> np.ndarray:
    """The two masks of :class:`boneage.geometry.hand.HandSegmentation` as one uint8 array (bit 0 the mask,
    bit 1 the tight mask): how training stores them beside its images."""
    return (np.asarray(mask, bool).astype(np.uint8) | (np.asarray(tight, bool).astype(np.uint8) << 1))
