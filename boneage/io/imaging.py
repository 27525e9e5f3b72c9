"""Reading radiographs from disk or bytes: PNG/JPEG (8/16-bit, gray or RGB) and DICOM.

Everything returns a 2-D float32 array in the file's own intensity units; brightness conventions are
unified here (DICOM MONOCHROME1 is inverted so bone is always bright), intensity scaling happens in
:mod:`boneage.geometry.preprocess`.
"""
from __future__ import annotations

import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
import pydicom

# A 100 MP radiograph would already be unusual; refuse beyond this instead of exhausting memory.
MAX_PIXELS = 60_000_000
# A file on disk above this is not one radiograph (a 60 MP 16-bit image is 120 MB uncompressed).
MAX_FILE_BYTES = 256_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


class ImageLoadError(ValueError):
    """A radiograph could not be read; the message says which file and why."""


class TooManyPixelsError(ImageLoadError):
    """The header promises more pixels than the budget allows (refused before decoding)."""


def _check_size(width: int, height: int, source: str, frames: int = 1, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose header promises no pixels or more than ``max_pixels`` (all frames together)."""
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"{source}: image has no pixels ({width}x{height}).")
    total = width * height * max(1, frames)
    if total > max_pixels:
        what = f"{frames} frames of {width}x{height}" if frames > 1 else f"{width}x{height}"
        raise TooManyPixelsError(
            f"{source}: image is {what} = {total / 1e6:.0f} megapixels, above the {max_pixels / 1e6:.0f} MP limit "
            "(too many pixels: a possible decompression bomb); downsize it first."
        )


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """A decoder's error as text for people: its type and message, without Python object reprs (Pillow says
    "cannot identify image file <_io.BytesIO object at 0x...>"; the caller names the file instead)."""
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _is_dicom(head: bytes, name: str) -> bool:
    return (len(head) >= 132 and head[128:132] == b"DICM") or name.lower().endswith((".dcm", ".dicom"))


@dataclass
class DecodedImage:
    """A decoded radiograph with what the input gate needs to judge it.

    ``pixels`` is the 2-D float32 image (first frame only for multi-frame files); ``colorfulness`` is measured
    on the colour channels before they are averaged to gray (0 for gray files); ``dicom`` is the DICOM header
    without pixel data (modality, body part), None for PNG/JPEG; ``notes`` say what was done that a reader
    should know (e.g. only the first of several frames was used).
    """
    pixels: np.ndarray
    source: str
    colorfulness: float = 0.0
    dicom: Any = None
    notes: tuple[str, ...] = ()


def _thumbnail_colorfulness(im: Image.Image) -> float:
    small = im.convert("RGB")
    small.thumbnail((256, 256))
    return colorfulness(np.asarray(small))


def _pil_to_array(im: Image.Image, source: str) -> tuple[np.ndarray, float]:
    mode = im.mode
    colour = 0.0
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float32)
    elif mode in ("L", "P", "1", "LA"):
        if mode == "P":
            colour = _thumbnail_colorfulness(im)
        arr = np.asarray(im.convert("L"), dtype=np.float32)
    else:  # RGB, RGBA, CMYK, YCbCr...: radiographs saved in colour are gray in all channels
        colour = _thumbnail_colorfulness(im)
        arr = np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=2)
    if arr.ndim != 2:
        raise ImageLoadError(f"{source}: expected a 2-D image, got shape {arr.shape}.")
    return arr, colour


def probe_image_size(data: bytes, source: str) -> tuple[int, int]:
    """(width, height) of a PNG/JPEG from its header alone, nothing decoded.

    Pillow refuses to even open images above twice its own pixel limit (its decompression-bomb error);
    that is reported as "too many pixels", not as an unreadable file.
    """
    # (No warnings.catch_warnings here: it is not thread-safe. Pillow warns above 89 MP; such images are
    # refused just below anyway.)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "more pixels than Pillow allows"
        raise TooManyPixelsError(f"{source}: image has {count}, above the {MAX_PIXELS / 1e6:.0f} MP limit (too many "
                             "pixels: a possible decompression bomb); downsize it first.") from None
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageLoadError(f"{source}: not a readable PNG/JPEG/DICOM image ({_reason(exc)}).") from None


EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATIONS = {2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
                     5: "mirrored and rotated 90 degrees", 6: "rotated 90 degrees clockwise",
                     7: "mirrored and rotated 90 degrees", 8: "rotated 90 degrees counter-clockwise"}


def upright(im: Image.Image) -> tuple[Image.Image, int]:
    """(image, orientation): ``im`` as it is displayed, i.e. turned per its EXIF Orientation tag (what phones and
    export tools write instead of turning the pixels), and the tag's value when it turned it (0 when not).

    The one place every door's PNG/JPEG passes (Pillow's :func:`PIL.ImageOps.exif_transpose`); a film read as
    stored instead of as displayed is read sideways (readings moved by up to 68 months, issue #31)."""
    try:
        orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:  # a damaged EXIF block: read the pixels as stored
        return im, 0
    if orientation not in EXIF_ORIENTATIONS:
        return im, 0
    return ImageOps.exif_transpose(im), orientation


def _read_pil(data: bytes, source: str, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode a PNG/JPEG after checking its size from the header. Only the first frame of an animated or
    multi-page file is ever decoded (Pillow decodes frames on demand), so its pixels are the whole budget."""
    width, height = probe_image_size(data, source)
    _check_size(width, height, source, max_pixels=max_pixels)  # from the header, before decoding
    try:  # below Pillow's own limits now (max_pixels <= MAX_PIXELS < Image.MAX_IMAGE_PIXELS)
        with Image.open(io.BytesIO(data)) as im:
            # is_animated looks at most one frame ahead; n_frames is read from the header only for PNG (acTL)
            frames = (int(getattr(im, "n_frames", 2)) if im.format == "PNG" else 2) \
                if getattr(im, "is_animated", False) else 1
            im.load()
            fmt = im.format
            im, turned = upright(im)
            arr, colour = _pil_to_array(im, source)
    except ImageLoadError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise ImageLoadError(f"{source}: not a readable PNG/JPEG/DICOM image ({_reason(exc)}).") from None
    notes = ((f"{source}: the file holds {frames if fmt == 'PNG' else 'several'} frames; only the first "
              "frame was used.",) if frames > 1 else ())
    if turned:
        notes += (f"{source}: the image was turned as its EXIF Orientation tag ({turned}: "
                  f"{EXIF_ORIENTATIONS.get(turned, 'transposed')}) says it is displayed",)
    return DecodedImage(arr, source, colour, None, notes)


_DEFLATE_HEADER_LIMIT = 16 << 20  # inflate at most this much to find the header of a deflated DICOM


def _dicom_header(data: bytes, source: str):
    """(header, deflated): the DICOM header (everything before the pixel data), read without inflating or
    decoding pixel data.

    Deflated files (transfer syntax 1.2.840.10008.1.2.1.99) compress the whole dataset and pydicom inflates
    all of it while reading, even with ``stop_before_pixels``; their header is found here by inflating only
    the start of the stream, up to the pixel data tag.
    """
    try:
        fp = io.BytesIO(data)
        read_preamble(fp, force=True)
        meta = _read_file_meta_info(fp)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True), False
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        out, pos, pixel_tag = bytearray(), fp.tell(), b"\xe0\x7f\x10\x00"
        while pixel_tag not in out and len(out) < _DEFLATE_HEADER_LIMIT and pos < len(data):
            out += inflater.decompress(data[pos:pos + 65536], _DEFLATE_HEADER_LIMIT - len(out))
            pos += 65536
        cut = out.find(pixel_tag)
        ds = read_dataset(io.BytesIO(bytes(out[:cut] if cut >= 0 else out)), is_implicit_VR=False,
                          is_little_endian=True)
        ds.file_meta = meta
        return ds, True
    except Exception as exc:
        raise ImageLoadError(f"{source}: not a readable DICOM file ({_reason(exc)}).") from None


def dicom_header(data: bytes, source: str = "upload"):
    """The DICOM header of ``data`` (a pydicom Dataset without pixel data); raises :class:`ImageLoadError`
    when the bytes are not a readable DICOM."""
    return _dicom_header(data, source)[0]


def _read_dicom(data: bytes, source: str, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode a DICOM after checking all its frames' pixels against ``max_pixels`` from the header.

    Multi-frame files: only the first frame is decoded (a hand radiograph is one image; further frames are
    usually repeats or other views) and the result says so.
    """
    header, _ = _dicom_header(data, source)
    rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    if rows == 0 and cols == 0:
        raise ImageLoadError(f"{source}: DICOM file has no pixel data (no image in it).")
    _check_size(cols, rows, source, frames=frames * samples, max_pixels=max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise ImageLoadError(f"{source}: not a readable DICOM file ({_reason(exc)}).") from None
    if "PixelData" not in ds:
        raise ImageLoadError(f"{source}: DICOM file has no pixel data (no image in it).")
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset without the 128-byte preamble and file meta (found by its .dcm name): pydicom needs the
        # transfer syntax to decode pixels; use the uncompressed encoding it detected while reading.

        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    try:
        ds.pixel_array_options(index=0 if frames > 1 else None)
        arr = ds.pixel_array
    except Exception as exc:
        ts = ds.file_meta.get("TransferSyntaxUID")
        name = getattr(ts, "name", str(ts))
        raise ImageLoadError(f"{source}: DICOM pixel data ({name}) cannot be decoded ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}). Export the image uncompressed "
                             "or as PNG.") from None
    colour = 0.0
    if arr.ndim == 3 and samples > 1:
        colour = colorfulness(arr[::max(1, arr.shape[0] // 256), ::max(1, arr.shape[1] // 256), :3]
                              .astype(np.float32) * (255.0 / max(1.0, float(arr.max()))))
        arr = arr[..., :3].mean(axis=-1)
    elif arr.ndim == 3:  # defensive: a decoder that returned every frame
        arr = arr[0]
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr  # MONOCHROME1: low values are bright; make bone bright
    del ds
    notes = (f"{source}: multi-frame DICOM ({frames} frames); only the first frame was used.",) if frames > 1 else ()
    return DecodedImage(arr, source, colour, header, notes)


def decode_image_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Decode a radiograph from raw bytes with its colourfulness and DICOM header (see :class:`DecodedImage`).

    Memory-safe: the pixel count (all frames, after decompression) is checked against ``max_pixels`` from the
    header before any pixel data is inflated, for PNG, JPEG and DICOM alike.
    """
    if not data:
        raise ImageLoadError(f"{name}: file is empty.")
    if _is_dicom(data[:132], name):
        return _read_dicom(data, name, max_pixels)
    return _read_pil(data, name, max_pixels)


def read_radiograph_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode a radiograph from raw bytes (an upload) to a 2-D float32 array."""
    return decode_image_bytes(data, name).pixels


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """A radiograph file's bytes; raises :class:`ImageLoadError` when missing (or unreasonably large)."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: file not found.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(f"{path}: file is {size / 1e6:.0f} MB, above the {MAX_FILE_BYTES / 1e6:.0f} MB limit "
                             "for one radiograph.")
    return path.read_bytes()


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """Read a radiograph file to a 2-D float32 array; raises :class:`ImageLoadError` with the reason."""
    return read_radiograph_bytes(read_file_bytes(path), str(path))


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
    reason = colour_refusal(name, upload_colorfulness(data, name), limit)
    return not reason, reason


# Uploads get a tighter pixel limit than files on disk: the largest flat-panel detectors (43 x 43 cm at
# 100 um) give ~18.5 MP, so anything far above that is not a radiograph as acquired (or a decompression bomb),
# and decoding it would hold a dashboard worker for seconds and hundreds of MB.
UPLOAD_MAX_PIXELS = 30_000_000


def colour_refusal(name: str, colour: float, limit: float = COLORFUL_LIMIT) -> str:
    """The reason given for a colour image ('' when it is gray enough to be a radiograph)."""
    if colour <= limit:
        return ""
    return (f"{name}: this is a colour image (colourfulness {colour:.0f}, radiographs are gray, below "
            f"{limit:.0f}); it looks like a photo or screenshot, not a hand radiograph. Upload the "
            "radiograph itself (PNG/JPEG/DICOM).")


def decode_upload(data: bytes, name: str = "upload", max_pixels: int = UPLOAD_MAX_PIXELS) -> DecodedImage:
    """An upload decoded with the tighter upload pixel budget (see :func:`decode_image_bytes`); a file that is
    not an image at all is named as such."""
    if not data:
        raise ImageLoadError(f"{name}: file is empty.")
    if not _is_dicom(data[:132], name):
        try:
            probe_image_size(data, name)
        except TooManyPixelsError:
            raise
        except ImageLoadError:
            raise ImageLoadError(f"{name}: not a PNG, JPEG or DICOM image (its content cannot be decoded as one).") from None
    return decode_image_bytes(data, name, max_pixels)


def read_upload(data: bytes, name: str = "upload", max_pixels: int = UPLOAD_MAX_PIXELS) -> np.ndarray:
    """An uploaded radiograph as a 2-D float32 array; refuses empty, broken, huge and colour images.

    Raises :class:`ImageLoadError` with a message meant for the person who uploaded the file. (The full
    input gate, :func:`boneage.io.input_gate.load_radiograph_bytes`, also refuses blank images, noise and
    DICOM of other modalities.)
    """
    dec = decode_upload(data, name, max_pixels)
    reason = colour_refusal(name, dec.colorfulness)
    if reason:
        raise ImageLoadError(reason)
    return dec.pixels
