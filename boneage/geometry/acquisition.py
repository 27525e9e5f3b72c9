"""Random acquisition changes of a base-size image: the precision benchmark's perturbations at random strengths.

Training for precision (``TrainConfig.consistency``) reads each training image twice, once as it is and once
as another acquisition of the same hand might have reached the network: saved as a JPEG, stored at a lower
resolution, collimated tighter, or with the hand smaller in the frame. The changes are the functions
:mod:`boneage.evidence.precision` measures with (:mod:`boneage.geometry.perturb`) (one function per job), drawn at strengths around the benchmark's,
and the result is brought back to the base size with the nearest-neighbour squeeze, as :func:`prepare`
brings any film there. ``rotate`` (the benchmark's turn, either way, uncovered corners at the background
level) is a family too, but not a default one: the training augmentation already draws a rotation for each
reading, independently unless ``TrainConfig.consistency_shared_affine`` gives both readings of a hand the
same one. Exposure is not here (the augmentation's contrast change covers it).
"""
from __future__ import annotations

import numpy as np
import torch

from boneage.geometry.framing import squeeze
from boneage.geometry.perturb import border, crop, downscale, jpeg, rotate

FAMILIES = ("jpeg", "downscale", "crop", "border")  # the default families of TrainConfig.consistency_families
# (low, high) strength per family: JPEG quality; kept fraction of the resolution; fraction cut from each
# margin; border added on each side, as a fraction of the side; turn in degrees (counter-clockwise). The
# benchmark's points (70, 0.7, 0.08, 0.2, +/-10) lie inside each range.
RANGES = {"jpeg": (50.0, 90.0), "downscale": (0.5, 0.9), "crop": (0.02, 0.12), "border": (0.05, 0.25),
          "rotate": (-15.0, 15.0)}
KNOWN = tuple(RANGES)


def acquired(img: np.ndarray, family: str, u: float) -> np.ndarray:
    """``img`` (2-D, base size) as acquired differently: ``family`` at strength ``u`` in [0, 1] across its
    range in :data:`RANGES`, squeezed back to the input's size."""
    if family not in RANGES:
        raise ValueError(f"unknown acquisition change {family!r}; choose one of {', '.join(KNOWN)}")
    a = np.asarray(img, np.float32)
    lo, hi = RANGES[family]
    s = lo + float(np.clip(u, 0.0, 1.0)) * (hi - lo)
    if family == "jpeg":
        out = jpeg(a, int(round(s)))
    elif family == "downscale":
        out = downscale(a, longest=10 ** 9, min_factor=s)  # a base-size image: always the factor
    elif family == "crop":
        out = crop(a, s)
    elif family == "rotate":
        out = rotate(a, s)
    else:
        out = border(a, s)
    return squeeze(out, a.shape[0]) if out.shape != a.shape else np.asarray(out, np.float32)


def acquired_batch(x: torch.Tensor, gen: torch.Generator, families: tuple[str, ...] = FAMILIES) -> torch.Tensor:
    """Each (H, W) [0, 1] image of ``x`` (N, H, W, square) acquired differently: one of ``families`` and a
    strength drawn per image from ``gen``; returns a new tensor, ``x`` is untouched."""
    unknown = [f for f in families if f not in RANGES]
    if unknown or not families:
        raise ValueError(f"unknown acquisition changes {unknown or '(none given)'}; choose from {', '.join(KNOWN)}")
    n = len(x)
    fam = torch.randint(0, len(families), (n,), generator=gen).tolist()
    u = torch.rand(n, generator=gen).tolist()
    out = [torch.tensor(acquired(x[i].numpy(), families[fam[i]], u[i])) for i in range(n)]
    return torch.stack(out).clamp(0, 1)
