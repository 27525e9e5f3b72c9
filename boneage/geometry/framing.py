"""How a radiograph becomes the network's base-size image: the model's input geometry.

One function, :func:`prepare`, used identically for training images, test images and every upload, so the
network always sees inputs made the way its training inputs were. The geometry belongs to the model (it is
saved in ``config.json`` as part of :class:`boneage.config.ModelConfig`) and has three parts:

``base_size``
    The side of the square base image (100 for the RSNA training files we have; 512 or more for native
    radiographs). The network resizes it once more to its ``input_size``.
``fit``
    How the whole film is brought to the square. ``squeeze`` (aspect ratio not kept, nearest neighbour):
    the training files reached us squeezed, and nearest neighbour keeps bone edges as sharp and as
    aliased as in them; but each base pixel is then one native pixel, so JPEG noise, a re-scaled export
    or a slight turn of a native film changes which pixels are picked, and the reading moves with them.
    ``area``: squeezed the same way, after uniform bars around the film are trimmed, with an area (box)
    filter, so each base pixel is the mean of the native pixels it covers and those changes average out;
    a model reading ``area`` images is trained with resolution-loss augmentation, because its 100 px
    training files are sharper than an area-filtered native film. ``letterbox``: aspect ratio kept, the
    film padded to a square with its own background level, then resized with an antialiasing bilinear
    filter; for models trained on native radiographs.
``phases``
    How many sub-pixel offsets per axis the ``squeeze`` grid is read at, for a film larger than the base
    size. One nearest-neighbour squeeze picks one native pixel per base pixel, so which pixels it picks
    depends on where the grid happens to fall: a re-export, a slight turn or a crop of the same film moves
    the grid and the reading with it. With ``phases`` K > 1 the film is squeezed K x K times, the grid
    shifted by a fraction of a base pixel each time, and the reading is the mean over those base images
    (:func:`phase_views`). Each one is as sharp and aliased as the training files, unlike an area filter,
    so the mean reads the film as the network learned to; only the grid's accident averages out. The
    first view is the plain squeeze: what explanations and features use. Films at or below the base size
    (the training files) have one view, so training and validation do not change.
``laterality``
    ``as-is``: the film is read as it comes. ``left``: a film the learned check of :mod:`boneage.geometry.laterality`
    takes for a right hand (or a left hand exported mirrored) is mirrored first, so the network reads left
    hands only; the check's answer flips with the image, so a film and its mirror image are read as the same
    picture.
``framing``
    What part of the base image the network reads. ``none``: the whole film (how far the hand fills
    the frame then changes the reading). ``hand``: the hand is found (:func:`boneage.geometry.hand.hand_mask`),
    and a square around it, with a fixed ``margin``, is resampled to the base size, so a border, a
    tighter crop or a shifted hand give (nearly) the same input. ``hand-upright`` also turns the hand so
    its principal axis is vertical, which undoes a rotated placement on the detector. When no plausible
    hand is found, the whole image is used and :class:`Framing` says so (``found`` False, a reason).

Framing runs on the intensity-normalised base image (background 0, bone near 1), whose padding
outside the film is background by construction. It is mirror-equivariant: framing a mirrored image gives
the mirrored framing, so a network made indifferent to mirroring (flip averaging, see
:mod:`boneage.nn.forward`) stays indifferent after it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from boneage.config import (FITS, FRAMINGS, LATERALITIES, MAX_PHASES, Geometry, GeometryError,  # noqa: F401 (re-exported)
                            as_geometry)
from boneage.geometry.hand import hand_mask
from scipy.ndimage import map_coordinates

# A mask outside these bounds is not taken for a hand (a plate, a label, noise): framing falls back to the
# whole image. Measured on the base-size training and official images: median area 0.20-0.23 of the image.
MIN_HAND_AREA, MAX_HAND_AREA = 0.03, 0.75
MIN_HAND_EXTENT = 0.15  # of the base side, for both height and width of the mask's bounding box
MAX_UPRIGHT_DEG = 45.0  # a hand lying further off the vertical is turned by this much at most
MIN_ELONGATION = 1.2  # ratio of the mask's principal standard deviations below which no axis is trusted


@dataclass(frozen=True)
class Framing:
    """Where the network's square was taken from, in base-image pixels (x right, y down)."""

    found: bool  # a plausible hand was found and framed; False: the whole image was used
    center_x: float
    center_y: float
    side: float  # side of the square read, before resampling to the base size
    angle_deg: float  # turn applied to bring the hand upright (0 unless framing is hand-upright)
    hand_area: float  # share of the base image the hand mask covers (0 when none)
    reason: str = ""  # why the whole image was used, when not found

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def whole_image(cls, size: int, reason: str, hand_area: float = 0.0) -> "Framing":
        """The framing that reads the whole ``size`` x ``size`` base image, and why."""
        return cls(False, (size - 1) / 2, (size - 1) / 2, float(size), 0.0, hand_area, reason)


def background_level(arr: np.ndarray, bins: int = 64) -> float:
    """The film's background level: the mode of its (lightly smoothed) histogram."""
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    hist = np.convolve(hist, np.ones(3) / 3, mode="same")
    k = int(np.argmax(hist))
    return float(edges[k] + edges[k + 1]) / 2


def squeeze(arr: np.ndarray, size: int, resample: int = Image.NEAREST) -> np.ndarray:
    """Resize a 2-D image to size x size (aspect ratio not kept), nearest neighbour unless ``resample``
    says otherwise (a PIL filter)."""
    arr = np.asarray(arr, dtype=np.float32)
    if arr.shape == (size, size):
        return arr
    return np.asarray(Image.fromarray(arr, mode="F").resize((size, size), resample), dtype=np.float32)


def area_squeeze(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D image to size x size (aspect ratio not kept), each output pixel the mean of the input
    pixels it covers (PIL's box filter)."""
    return squeeze(arr, size, Image.BOX)


def phase_views(arr: np.ndarray, size: int, phases: int) -> list[np.ndarray]:
    """Nearest-neighbour squeezes of a 2-D image to size x size, the sampling grid shifted by sub-pixel
    offsets: the plain :func:`squeeze` first, then the other ``phases`` x ``phases`` offsets.

    Base pixel ``i`` of the view at offset ``u`` (a fraction of a base pixel, ``(k + 0.5) / phases``) is
    native row ``floor((i + u) * h / size)``; the plain squeeze is ``u = 0.5``. An axis not longer than
    ``size`` has the one offset (there is nothing between its pixels to pick), so an image at or below
    the base size gives one view.
    """
    arr = np.asarray(arr, dtype=np.float32)
    h, w = arr.shape
    offsets = [(k + 0.5) / phases for k in range(phases)]

    def rows(n: int) -> list[tuple[float, np.ndarray]]:
        us = offsets if n > size else [0.5]
        return [(u, np.minimum(np.floor((np.arange(size) + u) * n / size).astype(np.int64), n - 1)) for u in us]

    out = [squeeze(arr, size)]
    for u, r in rows(h):
        for v, c in rows(w):
            if u == 0.5 and v == 0.5:
                continue  # the plain squeeze, already first
            out.append(arr[np.ix_(r, c)])
    return out


def letterbox(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad a 2-D image to a square with its background level (centred), then resize (antialiased bilinear)."""
    arr = np.asarray(arr, dtype=np.float32)
    h, w = arr.shape
    side = max(h, w)
    if h != w:
        square = np.full((side, side), background_level(arr), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = arr
        arr = square
    if side == size:
        return arr
    return np.asarray(Image.fromarray(arr, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float32)


def trim_uniform_border(arr: np.ndarray, tol: float = 0.0, max_passes: int = 4) -> np.ndarray:
    """``arr`` without the uniform bars around it (padding added by an export, a letterbox, a mat).

    A bar is an outer row or column every pixel of which equals the corner value it starts from (within
    ``tol`` of the image's dynamic range; exactly, by default). Exact equality is what makes the trim
    indifferent to exposure: any monotone change of intensities (a gamma, a window) keeps equal pixels
    equal and different pixels different, so it trims the same rows and columns, while a tolerance
    measured in intensity does not (a near-black background within 2 % of the range moves out of it
    under a gamma of 0.7). Bars are peeled from each side until a row or column holds anything else, in
    up to ``max_passes`` passes, so a bar of a second value inside the first (an export's padding around
    a film's own mat) goes too. Each pass removes at most a quarter of each side, and trimming stops before
    less than half of either side of ``arr`` would be left, so a film whose true background happens to be
    uniform keeps its hand.
    """
    a = np.asarray(arr, dtype=np.float32)
    h0, w0 = a.shape
    span = float(a.max() - a.min())
    if span <= 0:
        return a
    eps = tol * span
    for _ in range(max_passes):
        trimmed = _trim_pass(a, eps, min_h=(h0 + 1) // 2, min_w=(w0 + 1) // 2)
        if trimmed.shape == a.shape:
            break
        a = trimmed
    return a


def _trim_pass(a: np.ndarray, eps: float, min_h: int, min_w: int) -> np.ndarray:
    """One pass of :func:`trim_uniform_border`: each side peeled against its corner value."""
    h, w = a.shape

    def uniform(line: np.ndarray, ref: float) -> bool:
        return float(np.abs(line - ref).max()) <= eps

    top, bottom, left, right = 0, h, 0, w
    ref = float(a[0, 0])
    while top < h // 4 and bottom - top > min_h and uniform(a[top, left:right], ref):
        top += 1
    ref = float(a[-1, -1])
    while h - bottom < h // 4 and bottom - top > min_h and uniform(a[bottom - 1, left:right], ref):
        bottom -= 1
    ref = float(a[top, 0])
    while left < w // 4 and right - left > min_w and uniform(a[top:bottom, left], ref):
        left += 1
    ref = float(a[bottom - 1, -1])
    while w - right < w // 4 and right - left > min_w and uniform(a[top:bottom, right - 1], ref):
        right -= 1
    return a[top:bottom, left:right]


def fit_to_base(arr: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The whole film at the base size, by the geometry's ``fit``.

    With ``trim_bars``, the ``area`` fit or framing on, uniform bars around the film are removed first
    (:func:`trim_uniform_border`): they would shrink the hand in the base image and, when they are the
    commonest level, be taken for the background by the intensity normalisation."""
    if geometry.trims:
        arr = trim_uniform_border(arr)
    resize = {"squeeze": squeeze, "area": area_squeeze, "letterbox": letterbox}[geometry.fit]
    return resize(arr, geometry.base_size)


def fit_views(arr: np.ndarray, geometry: Geometry) -> list[np.ndarray]:
    """The whole film at the base size as :func:`fit_to_base` makes it, followed by the other phase
    views when the geometry has ``phases`` > 1 and the film is larger than the base size (module
    docstring)."""
    if geometry.phases == 1:
        return [fit_to_base(arr, geometry)]
    if geometry.trims:
        arr = trim_uniform_border(arr)
    return phase_views(arr, geometry.base_size, geometry.phases)


def upright_axes(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(across, down): unit vectors, in image coordinates (x right, y down), of the frame turned by
    ``angle_deg``; ``down`` runs along the hand's long axis."""
    rad = math.radians(angle_deg)
    down = np.array([-math.sin(rad), math.cos(rad)])
    return np.array([down[1], -down[0]]), down


def locate_hand(image: np.ndarray, geometry: Geometry) -> Framing:
    """The square to read from a normalised base image (background 0): see the module docstring."""
    size = image.shape[0]
    mask = hand_mask(image)
    area = float(mask.mean())
    if not mask.any():
        return Framing.whole_image(size, "no hand found (nothing brighter than the background)")
    ys, xs = np.nonzero(mask)
    extent = min(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / size
    if not MIN_HAND_AREA <= area <= MAX_HAND_AREA or extent < MIN_HAND_EXTENT:
        return Framing.whole_image(size, f"no plausible hand found (mask covers {area:.0%} of the image, "
                                         f"smallest extent {extent:.0%}); the whole image is read", area)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    angle = 0.0
    if geometry.framing == "hand-upright":
        evals, evecs = np.linalg.eigh(np.cov(pts.T))
        if math.sqrt(evals[1] / max(evals[0], 1e-9)) >= MIN_ELONGATION:
            d = evecs[:, 1] * (1 if evecs[1, 1] >= 0 else -1)  # the long axis, pointing down the image
            angle = float(np.degrees(np.arctan2(-d[0], d[1])))  # turn that brings d onto the vertical
            angle = float(np.clip(angle, -MAX_UPRIGHT_DEG, MAX_UPRIGHT_DEG))
    across, down = upright_axes(angle)
    u, v = pts @ across, pts @ down  # coordinates in the upright frame
    cu, cv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = (max(u.max() - u.min(), v.max() - v.min()) + 1) / (1 - 2 * geometry.margin)
    cx, cy = cu * across + cv * down
    return Framing(True, float(cx), float(cy), float(side), angle, area)


def resample_frame(image: np.ndarray, framing: Framing, size: int) -> np.ndarray:
    """The framed square of ``image`` at size x size (bilinear; outside the image is background 0)."""
    across, down = upright_axes(framing.angle_deg)
    t = ((np.arange(size) + 0.5) / size - 0.5) * framing.side  # output pixel centres in the upright frame
    gu, gv = np.meshgrid(t, t)  # gu across (columns), gv down (rows)
    x = framing.center_x + gu * across[0] + gv * down[0]
    y = framing.center_y + gu * across[1] + gv * down[1]
    out = map_coordinates(np.asarray(image, np.float32), [y, x], order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def frame(image: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Framing]:
    """Apply the geometry's framing to a normalised base image; ``none`` returns it unchanged."""
    size = image.shape[0]
    if geometry.framing == "none":
        return image, Framing.whole_image(size, "framing off")
    framing = locate_hand(image, geometry)
    if not framing.found:
        return image, framing
    return resample_frame(image, framing, size), framing
