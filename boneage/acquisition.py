"""Random acquisition changes of a base-size image: the precision benchmark's perturbations at random strengths.

Training for precision (``TrainConfig.consistency``) reads each training image twice, once as it is and once
as another acquisition of the same hand might have reached the network: saved as a JPEG, stored at a lower
resolution, collimated tighter, or with the hand smaller in the frame. The changes are the functions
:mod:`boneage.precision` measures with (one function per job), drawn at strengths around the benchmark's,
and the result is brought back to the base size with the nearest-neighbour squeeze, as :func:`prepare`
brings any film there. Rotation and exposure are not here: the training augmentation already draws
them independently for each reading.
"""
from __future__ import annotations

import numpy as np
import torch

from .geometry import squeeze
from .precision import border, crop, downscale, jpeg

FAMILIES = ("jpeg", "downscale", "crop", "border")
# (low, high) strength per family: JPEG quality; kept fraction of the resolution; fraction cut from each
# margin; border added on each side, as a fraction of the side. The benchmark's points (70, 0.7, 0.08,
# 0.2) lie inside each range.
RANGES = {"jpeg": (50.0, 90.0), "downscale": (0.5, 0.9), "crop": (0.02, 0.12), "border": (0.05, 0.25)}


def acquired(img: np.ndarray, family: str, u: float) -> np.ndarray:
    """``img`` (2-D, base size) as acquired differently: ``family`` at strength ``u`` in [0, 1] across its
    range in :data:`RANGES`, squeezed back to the input's size."""
    if family not in RANGES:
        raise ValueError(f"unknown acquisition change {family!r}; choose one of {', '.join(FAMILIES)}")
    a = np.asarray(img, np.float32)
    lo, hi = RANGES[family]
    s = lo + float(np.clip(u, 0.0, 1.0)) * (hi - lo)
    if family == "jpeg":
        out = jpeg(a, int(round(s)))
    elif family == "downscale":
        out = downscale(a, longest=10 ** 9, min_factor=s)  # a base-size image: always the factor
    elif family == "crop":
        out = crop(a, s)
    else:
        out = border(a, s)
    return squeeze(out, a.shape[0]) if out.shape != a.shape else np.asarray(out, np.float32)


def acquired_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each (H, W) [0, 1] image of ``x`` (N, H, W, square) acquired differently: a family and a strength
    drawn per image from ``gen``; returns a new tensor, ``x`` is untouched."""
    n = len(x)
    fam = torch.randint(0, len(FAMILIES), (n,), generator=gen).tolist()
    u = torch.rand(n, generator=gen).tolist()
    out = [torch.tensor(acquired(x[i].numpy(), FAMILIES[fam[i]], u[i])) for i in range(n)]
    return torch.stack(out).clamp(0, 1)
