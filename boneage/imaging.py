"""Reading radiographs from disk or bytes: PNG/JPEG (8/16-bit, gray or RGB) and DICOM.

Everything returns a 2-D float32 array in the file's own intensity units; brightness conventions are
unified here (DICOM MONOCHROME1 is inverted so bone is always bright), intensity scaling happens in
:mod:`boneage.preprocess`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

# A 100 MP radiograph would already be unusual; refuse beyond this instead of exhausting memory.
MAX_PIXELS = 60_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


class ImageLoadError(ValueError):
    """A radiograph could not be read; the message says which file and why."""


def _check_size(width: int, height: int, source: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{source}: image has no pixels ({width}x{height}).")
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"{source}: image is {width}x{height} = {width * height / 1e6:.0f} megapixels, above the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit (possible decompression bomb); downsize it first."
        )


def _is_dicom(head: bytes, name: str) -> bool:
    return (len(head) >= 132 and head[128:132] == b"DICM") or name.lower().endswith((".dcm", ".dicom"))


def _pil_to_array(im: Image.Image, source: str) -> np.ndarray:
    _check_size(im.width, im.height, source)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float32)
    elif mode in ("L", "P", "1", "LA"):
        arr = np.asarray(im.convert("L"), dtype=np.float32)
    else:  # RGB, RGBA, CMYK, YCbCr...: radiographs saved in colour are gray in all channels
        arr = np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=2)
    if arr.ndim != 2:
        raise ImageLoadError(f"{source}: expected a 2-D image, got shape {arr.shape}.")
    return arr


def _read_pil(data: bytes, source: str) -> np.ndarray:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_size(im.width, im.height, source)  # checked from the header, before decoding
            im.load()
            return _pil_to_array(im, source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{source}: refused, too many pixels (possible decompression bomb): {exc}")
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageLoadError(f"{source}: not a readable PNG/JPEG/DICOM image ({type(exc).__name__}: {exc}).")
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _read_dicom(data: bytes, source: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise ImageLoadError(f"{source}: not a readable DICOM file ({type(exc).__name__}: {exc}).")
    if "PixelData" not in ds:
        raise ImageLoadError(f"{source}: DICOM file has no pixel data (no image in it).")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(cols, rows, source)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise ImageLoadError(f"{source}: DICOM pixel data cannot be decoded ({type(exc).__name__}: {exc}).")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        arr = arr[..., :3].mean(axis=-1)
    elif arr.ndim == 3:  # multi-frame: first frame
        arr = arr[0]
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr  # MONOCHROME1: low values are bright; make bone bright
    return arr


def read_radiograph_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode a radiograph from raw bytes (an upload) to a 2-D float32 array."""
    if not data:
        raise ImageLoadError(f"{name}: file is empty.")
    if _is_dicom(data[:132], name):
        return _read_dicom(data, name)
    return _read_pil(data, name)


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """Read a radiograph file to a 2-D float32 array; raises :class:`ImageLoadError` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: file not found.")
    return read_radiograph_bytes(path.read_bytes(), str(path))


def safe_image_path(image_dir: str | os.PathLike, case_id: str) -> Path:
    """The image file of ``case_id`` inside ``image_dir``; ids that would escape the folder are refused.

    Tries ``<id>``, then ``<id>.png/.jpg/.jpeg/.dcm``; returns the first existing candidate, or the .png
    path (which then fails as "file not found").
    """
    root = Path(image_dir).resolve()
    cid = str(case_id).strip()
    if not cid or "/" in cid or "\\" in cid or cid in (".", "..") or "\x00" in cid:
        raise ImageLoadError(f"id {case_id!r} is not a plain file name; refused.")
    candidates = [cid] if cid.lower().endswith(IMAGE_EXTENSIONS) else []
    candidates += [cid + ext for ext in IMAGE_EXTENSIONS]
    for cand in candidates:
        p = (root / cand).resolve()
        if p.parent != root:
            raise ImageLoadError(f"id {case_id!r} points outside the image directory; refused.")
        if p.is_file():
            return p
    return root / (candidates[0] if candidates[0].lower().endswith(IMAGE_EXTENSIONS) else cid + ".png")
