"""Re-acquisition perturbations: the same hand as another acquisition or export would present it.

Each acts on a radiograph as read from file (native size), before the model's own preparation: JPEG
re-encoding, a lower stored resolution, exposure (gamma), a turn, a tighter collimation (crop), a smaller hand
in the frame (border), a mirrored film. The precision benchmark (:mod:`boneage.evidence.precision`) and the
acquisition augmentation of training (:mod:`boneage.geometry.acquisition`) both use them.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from boneage.geometry.framing import background_level
from boneage.geometry.polarity import exposed


def _to_unit(arr: np.ndarray) -> tuple[np.ndarray, float, float]:
    a = np.asarray(arr, np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / max(hi - lo, 1e-6), lo, hi


def jpeg(arr: np.ndarray, quality: int = 70) -> np.ndarray:
    """Saved as an 8-bit JPEG at ``quality`` and read back."""
    u, lo, hi = _to_unit(arr)
    buf = io.BytesIO()
    Image.fromarray(np.round(u * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255.0
    return back * (hi - lo) + lo


def downscale(arr: np.ndarray, longest: int = 512, min_factor: float = 0.7) -> np.ndarray:
    """Resized (antialiased) so its longer side is ``longest`` px, or to ``min_factor`` of its size when it
    is already smaller than that (the 100 px internal images): a film stored at lower resolution."""
    a = np.asarray(arr, np.float32)
    h, w = a.shape
    f = min(longest / max(h, w), min_factor)
    size = (max(8, round(w * f)), max(8, round(h * f)))
    return np.asarray(Image.fromarray(a, mode="F").resize(size, Image.BILINEAR), np.float32)


def gamma(arr: np.ndarray, g: float) -> np.ndarray:
    """Exposure: intensities (scaled to [0, 1]) raised to the power ``g`` (:func:`boneage.geometry.polarity.exposed`,
    the exposures the negative-image check is fitted and decides across)."""
    return exposed(arr, g)


def rotate(arr: np.ndarray, degrees: float) -> np.ndarray:
    """Turned by ``degrees`` (counter-clockwise) about the centre, uncovered corners at the background level."""
    a = np.asarray(arr, np.float32)
    return np.asarray(Image.fromarray(a, mode="F").rotate(degrees, resample=Image.BILINEAR,
                                                          fillcolor=background_level(a)), np.float32)


def crop(arr: np.ndarray, fraction: float = 0.08) -> np.ndarray:
    """``fraction`` of the height and width cut away from each margin (a tighter collimation)."""
    a = np.asarray(arr)
    h, w = a.shape
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    return a[dy:h - dy, dx:w - dx]


def border(arr: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """A black border of ``fraction`` of the height and width on each side (the hand smaller in the frame)."""
    a = np.asarray(arr, np.float32)
    h, w = a.shape
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    return np.pad(a, ((dy, dy), (dx, dx)), constant_values=float(a.min()))


def mirror(arr: np.ndarray) -> np.ndarray:
    """Mirrored left-right: a right hand, or a film exported flipped."""
    return np.ascontiguousarray(np.asarray(arr)[:, ::-1])
