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
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset without the 128-byte preamble and file meta (found by its .dcm name): pydicom needs the
        # transfer syntax to decode pixels; use the uncompressed encoding it detected while reading.
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
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


# -- is this a radiograph at all? ---------------------------------------------------------------------
# Hasler & Suesstrunk (2003) colourfulness: 0 for gray, ~15 "slightly colourful", ~33 "moderately", 45+
# "quite colourful". Radiographs saved as RGB are gray in every channel (JPEG chroma noise stays below ~3),
# so anything past COLORFUL_LIMIT is a colour photo or screenshot, not a radiograph.
COLORFUL_LIMIT = 15.0


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness of an (H, W, 3) RGB array (0-255 scale); 0 for a gray image."""
    a = np.asarray(rgb, dtype=np.float32)
    if a.ndim != 3 or a.shape[2] < 3:
        return 0.0
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def upload_colorfulness(data: bytes, name: str = "upload") -> float:
    """Colourfulness of an uploaded PNG/JPEG (on a 256 px thumbnail); 0 for gray images and DICOM."""
    if not data or _is_dicom(data[:132], name):
        return 0.0
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_size(im.width, im.height, name)
            if im.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
                return 0.0
            im.draft("RGB", (256, 256))  # JPEG: decode at reduced size
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            return colorfulness(np.asarray(im))
    except ImageLoadError:
        raise
    except Exception:  # unreadable: read_radiograph_bytes gives the real reason
        return 0.0


def looks_like_radiograph(data: bytes, name: str = "upload", limit: float = COLORFUL_LIMIT) -> tuple[bool, str]:
    """(ok, reason): strongly coloured images (photos, screenshots) are not radiographs."""
    c = upload_colorfulness(data, name)
    if c > limit:
        return False, (f"{name}: this is a colour image (colourfulness {c:.0f}, radiographs are gray, below "
                       f"{limit:.0f}); it looks like a photo or screenshot, not a hand radiograph. Upload the "
                       "radiograph itself (PNG/JPEG/DICOM).")
    return True, ""


# Uploads get a tighter pixel limit than files on disk: the largest flat-panel detectors (43 x 43 cm at
# 100 um) give ~18.5 MP, so anything far above that is not a radiograph as acquired (or a decompression bomb),
# and decoding it would hold a dashboard worker for seconds and hundreds of MB.
UPLOAD_MAX_PIXELS = 30_000_000


def _header_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height
    except Exception:
        return None


def read_upload(data: bytes, name: str = "upload", max_pixels: int = UPLOAD_MAX_PIXELS) -> np.ndarray:
    """An uploaded radiograph as a 2-D float32 array; refuses empty, broken, huge and colour images.

    Raises :class:`ImageLoadError` with a message meant for the person who uploaded the file.
    """
    if not data:
        raise ImageLoadError(f"{name}: file is empty.")

    def too_big(w: int, h: int) -> ImageLoadError:
        return ImageLoadError(f"{name}: image is {w}x{h} = {w * h / 1e6:.0f} megapixels; uploads are limited to "
                              f"{max_pixels / 1e6:.0f} MP (hand radiographs are at most ~20 MP). Downsize it first.")

    if not _is_dicom(data[:132], name):
        size = _header_size(data)  # from the header, before decoding
        if size is None:
            raise ImageLoadError(f"{name}: not a PNG, JPEG or DICOM image (its content cannot be decoded as one).")
        if size[0] * size[1] > max_pixels:
            raise too_big(*size)
    ok, reason = looks_like_radiograph(data, name)
    if not ok:
        raise ImageLoadError(reason)
    arr = read_radiograph_bytes(data, name)
    if arr.size > max_pixels:
        raise too_big(arr.shape[1], arr.shape[0])
    return arr
