"""One preprocessing path for every radiograph: training image, native test image or upload.

Why this order:
1. Geometry first. The training radiographs reached us squeezed to 100x100 with nearest-neighbour
   resampling (an old Pillow default). Bringing any other image to that exact geometry the same way keeps
   bone edges as sharp (and as aliased) as the network learned them; bilinear or Lanczos downsizing
   smooths them and biases predictions upwards by months.
2. Intensity second, on the 100x100 image: the background level is the histogram mode (black film in
   most training images, a grey plate in many official test images) and is mapped to 0; the 99.5th
   percentile (dense bone) is mapped to 1. Negatives (bone dark, background bright) are flipped first
   when the learned check of :mod:`boneage.geometry.polarity` is confident.
3. Laterality, when the geometry asks for left hands only: a film the learned check of
   :mod:`boneage.geometry.laterality` takes for a right hand is mirrored: the film itself, fitted again, so its views
   are exactly those of the mirror image come in as a left hand, in the same order (a native film's views
   each take their own test-time pass, :meth:`boneage.inference.predictor.BoneAgePredictor.read`).
4. The hand alone, when the geometry's ``mask`` is ``hand``: the hand is segmented
   (:func:`boneage.geometry.hand.segment_hand`) and everything outside its slightly dilated mask set to 0, the
   hand's intensities stretched (:mod:`boneage.geometry.masking`), so the film around the hand cannot move the
   reading. :attr:`Prepared.hand` keeps the segmentation (its outline, and whether it can be trusted). With the
   geometry's ``intensity`` ``hand`` the stretch starts from the fitted film's own values, not from the
   whole-film normalisation of step 2 (whose background level and clip depend on the surround).
5. Framing last (:mod:`boneage.geometry.framing`), on the normalised image, when the model's geometry asks for it.
6. When the geometry reads a film at several phases of the squeeze grid, each view is normalised and framed
   the same way (the first view's negative and laterality decisions hold for all), and the reading averages
   them.

The geometry (base size, fit, framing) belongs to the model: :func:`prepare` takes the
:class:`boneage.geometry.framing.Geometry` of the model that will read the image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from boneage.geometry.framing import Framing, Geometry, as_geometry, background_level, fit_to_base, fit_views, frame
from boneage.geometry.hand import HandSegmentation, segment_hand
from boneage.geometry.masking import isolate_hand
from boneage.geometry.laterality import default_check as laterality_check
from boneage.geometry.polarity import default_check

BASE_SIZE = 100  # the base size of the RSNA training files; a model's own geometry is in its config


def squeeze_to_base(arr: np.ndarray, base_size: int = BASE_SIZE) -> np.ndarray:
    """Resize a 2-D image to base_size x base_size (aspect ratio not kept) with nearest neighbour."""
    return fit_to_base(arr, Geometry(base_size))


def is_negative(arr: np.ndarray) -> bool:
    """Does this (base-size) image look like a negative? See :mod:`boneage.geometry.polarity`."""
    arr = np.asarray(arr, dtype=np.float32)
    return arr.max() > arr.min() and default_check().is_inverted(arr)


def normalize_intensity(arr: np.ndarray) -> np.ndarray:
    """Map background to 0 and dense bone to 1 (float32 in [0, 1]); see the module docstring."""
    return normalize_intensity_checked(arr)[0]


def normalize_intensity_checked(arr: np.ndarray, negative: bool | None = None) -> tuple[np.ndarray, bool]:
    """As :func:`normalize_intensity`, plus whether the image was taken for a negative and inverted.
    ``negative`` given: that decision instead of the check's (the other views of one film follow the first)."""
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    negative = is_negative(arr) if negative is None else negative
    if negative:
        arr = arr.max() + arr.min() - arr
    bg = background_level(arr)
    top = float(np.percentile(arr, 99.5))
    if top - bg < 1e-6:
        return np.zeros_like(arr, dtype=np.float32), negative
    return np.clip((arr - bg) / (top - bg), 0.0, 1.0).astype(np.float32), negative


@dataclass
class Prepared:
    """A radiograph as the network reads it, and what was done to get there."""

    image: np.ndarray  # (base, base) float32 in [0, 1]
    negative: bool  # taken for a negative and inverted
    framing: Framing
    # (V, base, base): the other phase views of the film (boneage.geometry.framing.phase_views), prepared the same
    # way; the reading averages ``image`` with them. None when the geometry has one phase or the film is
    # not larger than the base size.
    extra_views: np.ndarray | None = None
    mirrored: bool = False  # taken for a right hand and mirrored (geometry laterality "left")
    # The hand's segmentation in the (unframed) base image when the geometry masks the hand, else None;
    # ``hand.ok`` False: the outline is doubtful and the reading says so (``hand.reason``).
    hand: HandSegmentation | None = None

    @property
    def n_views(self) -> int:
        return 1 + (0 if self.extra_views is None else len(self.extra_views))


def film_values(view: np.ndarray, negative: bool) -> np.ndarray:
    """A fitted view's own intensities, float32, finite, turned positive (bone bright) when the film was taken
    for a negative: what the ``hand`` intensity scale is computed from (:class:`boneage.config.Geometry`)."""
    v = np.nan_to_num(np.asarray(view, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return v.max() + v.min() - v if negative else v


def _min_max(v: np.ndarray) -> np.ndarray:
    span = float(v.max() - v.min())
    return np.zeros_like(v) if span <= 0 else ((v - v.min()) / span).astype(np.float32)


def prepare(arr: np.ndarray, geometry: Geometry | int = BASE_SIZE) -> Prepared:
    """Any 2-D radiograph array -> the model's base image: fit, intensity, framing (module docstring).

    An ``int`` geometry means that base size with the original squeeze and no framing.

    With the geometry's ``intensity`` ``hand`` the film's normalisation only decides polarity, laterality and
    the outline; the network's pixels come from the fitted film's own values, stretched inside the dilated
    outline (:func:`boneage.geometry.masking.isolate_hand`), so nothing outside the outline changes them. Without
    a mask (how a training cache keeps films whose masks are drawn per batch) those values are scaled from
    their minimum to their maximum, unclipped, and the training batch stretches them inside its mask."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {arr.shape}")
    geometry = as_geometry(geometry)
    first, *others = fit_views(arr, geometry)
    img, negative = normalize_intensity_checked(first)
    mirrored = geometry.laterality == "left" and laterality_check().is_right(img)
    if mirrored:  # the mirror image, fitted as a film that came in that way: the same views in the same order
        first, *others = fit_views(np.ascontiguousarray(arr[:, ::-1]), geometry)
        img = normalize_intensity_checked(first, negative)[0]
    own_scale = geometry.intensity == "hand"

    def values(view: np.ndarray, normalised: np.ndarray | None = None) -> np.ndarray:
        """The view's pixels before masking: its own values (hand scale) or the film-normalised image."""
        if own_scale:
            return film_values(view, negative)
        return normalize_intensity_checked(view, negative)[0] if normalised is None else normalised

    hand = None
    if geometry.mask == "hand":  # one segmentation for all views: they differ by a sub-pixel shift
        hand = segment_hand(img)
        img = isolate_hand(values(first, img), hand.mask, geometry.mask_dilation)
    elif own_scale:
        img = _min_max(values(first))
    img, framing = frame(img, geometry)
    extra = []
    for view in others:
        v = values(view)
        if hand is not None:
            v = isolate_hand(v, hand.mask, geometry.mask_dilation)
        elif own_scale:
            v = _min_max(v)
        extra.append(frame(v, geometry)[0])
    return Prepared(img, negative, framing, np.stack(extra) if extra else None, mirrored, hand)


def preprocess_array(arr: np.ndarray, geometry: Geometry | int = BASE_SIZE) -> np.ndarray:
    """Any 2-D radiograph array -> base image float32 in [0, 1], as the model was trained."""
    return prepare(arr, geometry).image


def preprocess_array_checked(arr: np.ndarray, geometry: Geometry | int = BASE_SIZE) -> tuple[np.ndarray, bool]:
    """As :func:`preprocess_array`, plus whether the radiograph was taken for a negative and inverted."""
    p = prepare(arr, geometry)
    return p.image, p.negative


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def to_model_input(batch: torch.Tensor, input_size: int, theta: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, W) uint8 or float [0,1] images -> (N, 1, S, S) network input, centred around 0.

    Resizing and (optional) affine augmentation are one ``grid_sample`` so training and inference share
    the same interpolation.
    """
    x = batch.float()
    if batch.dtype == torch.uint8:
        x = x / 255.0
    x = x.unsqueeze(1) if x.dim() == 3 else x
    n = x.shape[0]
    if theta is None:
        if x.shape[-1] != input_size or x.shape[-2] != input_size:
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    else:
        grid = F.affine_grid(theta, (n, 1, input_size, input_size), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (x - 0.5) / 0.5


def random_affine(n: int, rotate_deg: float, scale: float, translate: float, generator: torch.Generator,
                  flip: bool = False) -> torch.Tensor:
    """Random rotation / zoom / shift matrices for ``F.affine_grid`` (N, 2, 3)."""
    ang = (torch.rand(n, generator=generator) * 2 - 1) * np.deg2rad(rotate_deg)
    s = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    tx = (torch.rand(n, generator=generator) * 2 - 1) * translate
    ty = (torch.rand(n, generator=generator) * 2 - 1) * translate
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, tx
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, ty
    if flip:
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
        theta[:, :, 0] *= sign.unsqueeze(1)
    return theta
