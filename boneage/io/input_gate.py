"""The input gate: is this image possibly a hand radiograph? One check shared by every door.

The library (:class:`boneage.inference.predictor.BoneAgePredictor`), the prediction CLI and the dashboard all pass an
image through :func:`check_radiograph` before the network sees it, because the network answers *something*
for any array (a black square got 104 months with an interval). The gate refuses, with a reason written for a
clinician, what cannot be a hand radiograph:

* blank or nearly constant images (nothing to read);
* images too small to show a hand (< :data:`MIN_SIDE` px a side) or with an absurd aspect ratio (a sliver);
* colour photographs and screenshots (colourfulness, :func:`boneage.io.imaging.colorfulness`);
* noise: no spatial structure (neighbouring pixels uncorrelated, see :func:`measure`);
* smooth synthetic surfaces (gradients, vignettes): nearly all of the image a quadratic ramp
  (:data:`MAX_SMOOTH_SHARE`);
* DICOM whose header names another modality (CT, MR, ultrasound, dose maps ...) or another body part.

It deliberately does not judge "unusual but possible" radiographs: those pass, and the outlier check on the
network's features (the dashboard's "unlike the training data" warning) deals with them. Thresholds were set
on all 12,611 training and 200 official test images (``python -m pipelines.benchmarks.gate``: no false
refusals) with wide margins to what they refuse.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from boneage.io.imaging import (
    COLORFUL_LIMIT,
    MAX_PIXELS,
    UPLOAD_MAX_PIXELS,
    DecodedImage,
    ImageLoadError,
    colorfulness,
    colour_refusal,
    decode_image_bytes,
    decode_upload,
    read_file_bytes,
)

MIN_SIDE = 64  # px: the training images are 100x100; a hand needs more than a thumbnail
MAX_ASPECT = 4.0  # long side / short side: hand radiographs measured 1.0-2.0 (official test set)
# Nearly constant: the central 98% of intensities spans less than this share of the image's level. Measured
# (pipelines.benchmarks.gate): training images 0.086 at the least (faint, low-contrast films; median 0.73),
# official test images 1.0; a flat field with a few stray pixels spans ~0.
MIN_RELATIVE_SPREAD = 0.02
# Spatial structure: correlation of each pixel with its neighbours on the image shrunk to <= 128 px (block
# means), intensities clipped to their central 98% first. Measured: training images 0.56 at the least
# (median 0.95), official test 0.745; uniform gray or RGB noise 0.00-0.01.
MIN_NEIGHBOUR_CORRELATION = 0.3
STRUCTURE_SIDE = 128
# A smooth synthetic surface (a gradient, a vignette): the share of the image's variance (<= 128 px, clipped
# as above) that a quadratic surface in x and y explains. Measured (issue #31, seed 31): all 200 official test
# films at most 0.768 (median 0.29), 500 training films at most 0.704 (median 0.30); a linear gradient 1.000,
# a radial one 0.950. A hand radiograph has edges (fingers, bones, the hand against the background) no
# quadratic follows.
MAX_SMOOTH_SHARE = 0.9

# DICOM Modality (0008,0060) values that can hold a hand radiograph: computed / digital radiography, the
# older RG and DR, and secondary captures (OT; SC is not a modality but is written by some exporters).
ALLOWED_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})
# Body Part Examined (0018,0015) values that can show a left hand (DICOM PS3.16 CID 4031 terms and common
# free text); anything else named there (CHEST, SKULL, KNEE ...) is refused.
HAND_BODY_PARTS = ("HAND", "WRIST", "FINGER", "THUMB", "EXTREMITY", "EXTREM", "ARM", "BONE AGE", "BONEAGE",
                   "CARPUS", "METACARP")

MODALITY_NAMES = {"CT": "a CT scan", "MR": "an MRI scan", "NM": "a nuclear medicine image",
                  "PT": "a PET scan", "US": "an ultrasound image", "RTDOSE": "a radiotherapy dose map",
                  "RTIMAGE": "a radiotherapy portal image", "MG": "a mammogram", "XA": "an angiogram",
                  "RF": "a fluoroscopy image", "ES": "an endoscopy image", "XC": "a photograph",
                  "OP": "an ophthalmic photograph", "SM": "a microscopy slide", "IO": "an intra-oral X-ray",
                  "PX": "a panoramic dental X-ray", "DG": "a diaphanography image", "SEG": "a segmentation",
                  "PR": "a presentation state", "SR": "a structured report", "KO": "a key-object note"}


class NotARadiographError(ImageLoadError):
    """The input gate refused the image; the message says why in a clinician's words."""


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: ``ok`` or not, the ``reason`` when not, ``flags`` naming every failed check
    (e.g. ``("blank",)``) and ``measures`` (the numbers the checks used, for audits and the benchmark)."""
    ok: bool
    reason: str = ""
    flags: tuple[str, ...] = ()
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GatedImage:
    """A decoded image that passed the gate (pixels 2-D float32), with the gate's result, the decoder's
    notes (e.g. "only the first frame was used") and the DICOM header (None for PNG/JPEG and arrays)."""
    pixels: np.ndarray
    source: str
    gate: GateResult
    notes: tuple[str, ...] = ()
    dicom: Any = None


def _shrink(a: np.ndarray, side: int = STRUCTURE_SIDE) -> np.ndarray:
    """Block means so that the longer side is at most ``side`` px (keeps structure, averages detector noise)."""
    f = max(1, int(np.ceil(max(a.shape) / side)))
    if f == 1:
        return a.astype(np.float64)
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].astype(np.float64).reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _neighbour_correlation(a: np.ndarray) -> float:
    """Mean Pearson correlation of each pixel with its right and lower neighbour (1 smooth, ~0 noise)."""
    out = []
    for x, y in ((a[:, :-1], a[:, 1:]), (a[:-1, :], a[1:, :])):
        if x.size < 2:
            continue
        sx, sy = x.std(), y.std()
        if sx == 0 or sy == 0:
            out.append(0.0)
            continue
        out.append(float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy)))
    return float(np.mean(out)) if out else 0.0


def _smooth_share(a: np.ndarray) -> float:
    """Share of the variance of ``a`` explained by a quadratic surface in x and y (1: a smooth synthetic ramp)."""
    h, w = a.shape
    if h < 3 or w < 3:
        return 0.0
    y, x = np.mgrid[0:h, 0:w]
    y, x = y / h - 0.5, x / w - 0.5
    design = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], -1).reshape(-1, 6)
    v = a.reshape(-1)
    if v.var() == 0:
        return 0.0
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    return float(1 - (v - design @ coef).var() / v.var())


def measure(arr: np.ndarray) -> dict[str, float]:
    """The numbers the gate judges, for a 2-D image (or H x W x 3 colour image): size, aspect, spread of
    intensities relative to their level, neighbour correlation at <= 128 px, colourfulness."""
    a = np.asarray(arr)
    colour = 0.0
    if a.ndim == 3 and a.shape[2] >= 3:
        colour = colorfulness(a[..., :3].astype(np.float32) * (255.0 / max(1.0, float(np.nanmax(a[..., :3])))))
        a = a[..., :3].astype(np.float32).mean(axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {a.shape}")
    h, w = a.shape
    m = {"height": float(h), "width": float(w), "aspect": float(max(h, w) / max(1, min(h, w))),
         "colorfulness": float(colour)}
    if a.size == 0:
        return {**m, "spread": 0.0, "relative_spread": 0.0, "neighbour_correlation": 0.0, "finite": 0.0}
    finite = np.isfinite(a)
    m["finite"] = float(finite.mean())
    vals = a[finite] if not finite.all() else a
    if vals.size == 0:
        return {**m, "spread": 0.0, "relative_spread": 0.0, "neighbour_correlation": 0.0}
    lo, hi = np.percentile(vals, [1, 99])
    span_all = float(vals.max() - vals.min())
    m["spread"] = float(hi - lo)
    level = max(abs(float(lo)), abs(float(hi)), span_all, 1e-12)
    m["relative_spread"] = float((hi - lo) / level)
    # clipped to the central 98% first: a few saturated marker letters must not decide the structure
    clipped = np.clip(np.where(finite, a, float(np.median(vals))), lo, hi)
    small = _shrink(clipped)
    m["neighbour_correlation"] = _neighbour_correlation(small)
    m["smooth_share"] = _smooth_share(small)
    return m


def _dicom_refusal(header: Any, source: str) -> tuple[str, str]:
    """(flag, reason) when the DICOM header says this is not a hand radiograph, else ('', '')."""
    modality = str(header.get("Modality", "") or "").strip().upper()
    if modality and modality not in ALLOWED_MODALITIES:
        what = MODALITY_NAMES.get(modality, f"modality {modality}")
        return "modality", (f"{source}: the DICOM header says this is {what} (Modality {modality}), not a plain "
                            "X-ray radiograph (CR/DX). Bone age is read from a radiograph of the left hand.")
    part = str(header.get("BodyPartExamined", "") or "").strip().upper()
    if part and not any(k in part for k in HAND_BODY_PARTS):
        return "body_part", (f"{source}: the DICOM header says the body part examined is {part!r}, not the hand. "
                             "Bone age is read from a radiograph of the left hand; if this really is one, its "
                             "header is wrong: export the image as PNG and upload that.")
    return "", ""


def check_radiograph(arr: np.ndarray, source: str = "image", dicom_header: Any = None,
                     colorfulness_value: float | None = None) -> GateResult:
    """Judge whether ``arr`` (2-D, or H x W x 3) can be a hand radiograph; never raises for odd pixels.

    ``dicom_header`` (a pydicom Dataset, pixel data not needed) adds the modality and body-part checks;
    ``colorfulness_value`` is the colourfulness of the file before it was averaged to gray (the decoder
    measures it), else it is measured on ``arr`` when that has colour channels. The first failed check gives
    the reason; ``flags`` lists all of them.
    """
    flags: list[str] = []
    reasons: list[str] = []
    if dicom_header is not None:
        flag, reason = _dicom_refusal(dicom_header, source)
        if flag:
            flags.append(flag)
            reasons.append(reason)
    try:
        m = measure(arr)
    except ValueError as exc:
        return GateResult(False, f"{source}: {exc}; a radiograph is one gray image.", tuple(flags + ["shape"]))
    if colorfulness_value is not None:
        m["colorfulness"] = float(colorfulness_value)
    h, w = int(m["height"]), int(m["width"])

    def refuse(flag: str, reason: str) -> None:
        flags.append(flag)
        reasons.append(reason)

    if min(h, w) < MIN_SIDE:
        refuse("too_small", f"{source}: the image is only {w}x{h} pixels; a hand radiograph needs at least "
                            f"{MIN_SIDE} pixels a side (the model was trained on 100x100). Use the original image.")
    elif m["aspect"] > MAX_ASPECT:
        refuse("aspect", f"{source}: the image is {w}x{h} pixels, {m['aspect']:.0f} times longer than wide; a hand "
                         f"radiograph is at most about {MAX_ASPECT:.0f}:1. Check that the whole radiograph was "
                         "exported, not a strip of it.")
    if m.get("finite", 1.0) < 1.0:
        refuse("not_finite", f"{source}: {100 * (1 - m['finite']):.1f}% of the pixels are not numbers (NaN or "
                             "infinite); the image is damaged.")
    if reason := colour_refusal(source, m["colorfulness"]):
        refuse("colour", reason)
    if m["relative_spread"] < MIN_RELATIVE_SPREAD:
        refuse("blank", f"{source}: the image is blank (nearly one uniform shade; the middle 98% of its "
                        f"pixels differ by {100 * m['relative_spread']:.1f}% of its level). There is no hand to "
                        "read: check the export (window, exposure) or choose the right file.")
    elif m["neighbour_correlation"] < MIN_NEIGHBOUR_CORRELATION:
        refuse("noise", f"{source}: the image looks like noise, not a picture (neighbouring pixels are unrelated: "
                        f"correlation {m['neighbour_correlation']:.2f}, radiographs are above "
                        f"{MIN_NEIGHBOUR_CORRELATION}). Check that the file is the radiograph itself.")
    elif m.get("smooth_share", 0.0) > MAX_SMOOTH_SHARE:
        refuse("smooth", f"{source}: the image is a smooth synthetic surface (a gradient: "
                         f"{100 * m['smooth_share']:.0f}% of it is a plain ramp, radiographs of a hand at most "
                         f"{100 * MAX_SMOOTH_SHARE:.0f}%), not a picture of a hand. Check that the file is the "
                         "radiograph itself.")
    if reasons:
        return GateResult(False, reasons[0], tuple(flags), m)
    return GateResult(True, "", (), m)


def gate_decoded(dec: DecodedImage) -> GatedImage:
    """Run the gate on a decoded file; raises :class:`NotARadiographError` with the reason when refused."""
    result = check_radiograph(dec.pixels, dec.source, dec.dicom, dec.colorfulness)
    if not result.ok:
        raise NotARadiographError(result.reason)
    return GatedImage(dec.pixels, dec.source, result, dec.notes, dec.dicom)


def gate_array(arr: np.ndarray, source: str = "image") -> np.ndarray:
    """The 2-D image an array door predicts on, after the gate (colour arrays are averaged to gray);
    raises :class:`NotARadiographError` when refused."""
    result = check_radiograph(arr, source)
    if not result.ok:
        raise NotARadiographError(result.reason)
    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(axis=2) if a.shape[2] >= 3 else a[..., 0]
    return np.asarray(a, dtype=np.float32)


def load_radiograph_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                          upload: bool = False) -> GatedImage:
    """Decode bytes (memory-safe, see :func:`boneage.io.imaging.decode_image_bytes`) and pass them through the
    gate. ``upload=True`` applies the upload pixel budget and names non-images as such (dashboard)."""
    dec = decode_upload(data, name, min(max_pixels, UPLOAD_MAX_PIXELS)) if upload else \
        decode_image_bytes(data, name, max_pixels)
    return gate_decoded(dec)


def load_radiograph(path: str | os.PathLike) -> GatedImage:
    """Read a file and pass it through the gate (raises :class:`ImageLoadError` / :class:`NotARadiographError`)."""
    return load_radiograph_bytes(read_file_bytes(path), str(Path(path)))


__all__ = ["COLORFUL_LIMIT", "GateResult", "GatedImage", "NotARadiographError", "check_radiograph", "gate_array",
           "gate_decoded", "load_radiograph", "load_radiograph_bytes", "measure"]
