"""Reading radiographs: PNG (8/16-bit, gray/RGB), JPEG, DICOM, and refusing what cannot or must not be read."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from boneage.io.imaging import MAX_PIXELS, ImageLoadError, read_radiograph, read_radiograph_bytes, safe_image_path
from boneage.geometry.preprocess import preprocess_array

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gray(train_image_path) -> np.ndarray:
    """A real 100x100 8-bit training radiograph as uint8."""
    with Image.open(train_image_path) as im:
        assert im.mode == "L" and im.size == (100, 100)
        return np.asarray(im).copy()


def _png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _dicom_bytes(pixels: np.ndarray | None, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                 preamble: bool = True, **elements) -> bytes:
    """A minimal digital X-ray DICOM (uncompressed, unsigned 16-bit) built in memory."""
    ds = Dataset()
    sop_class, sop_uid = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()  # Digital X-Ray Image, for presentation
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, sop_uid, "DX"
    ds.PatientName = "Test^Hand"
    if pixels is not None:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.PixelData = pixels.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    if preamble:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:  # bare dataset: no 128-byte preamble, no 'DICM', no file meta
        pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)
    return buf.getvalue()


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 1-bit pixels (the data would never decode to that)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


# -- PNG / JPEG -----------------------------------------------------------------------------------

def test_real_png_file(train_image_path, gray):
    arr = read_radiograph(train_image_path)
    assert arr.dtype == np.float32 and arr.shape == (100, 100)
    np.testing.assert_array_equal(arr, gray.astype(np.float32))


def test_native_size_test_png(data_dir):
    arr = read_radiograph(data_dir / "test" / "4362.png")
    assert arr.shape == (1460, 1160)  # rows, columns of a 1160x1460 portrait image
    assert arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 255


def test_16bit_png_keeps_full_range(gray):
    wide = gray.astype(np.uint16) * 257  # 0..65535
    im = Image.fromarray(wide)
    data = _png_bytes(im)
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "I;16"
    arr = read_radiograph_bytes(data, "wide.png")
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr, wide.astype(np.float32))
    assert arr.max() > 255  # not squashed to 8 bits


def test_rgb_png_of_a_gray_radiograph_equals_the_gray_image(gray):
    rgb = Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")
    arr = read_radiograph_bytes(_png_bytes(rgb), "rgb.png")
    assert arr.shape == gray.shape
    np.testing.assert_allclose(arr, gray.astype(np.float32), atol=1e-4)


def test_rgb_png_with_colour_is_channel_mean(gray):
    r, g, b = gray, np.zeros_like(gray), np.full_like(gray, 90)
    arr = read_radiograph_bytes(_png_bytes(Image.fromarray(np.stack([r, g, b], -1), mode="RGB")), "c.png")
    np.testing.assert_allclose(arr, (r.astype(np.float32) + 90) / 3, atol=1e-4)


def test_rgba_and_palette_png(gray):
    rgba = Image.fromarray(np.stack([gray, gray, gray, np.full_like(gray, 255)], -1), mode="RGBA")
    np.testing.assert_allclose(read_radiograph_bytes(_png_bytes(rgba), "a.png"), gray, atol=1e-4)
    pal = Image.fromarray(gray).convert("P")
    arr = read_radiograph_bytes(_png_bytes(pal), "p.png")
    assert arr.shape == gray.shape
    np.testing.assert_array_equal(arr, np.asarray(pal.convert("L"), dtype=np.float32))


def test_jpeg(tmp_path, gray):
    path = tmp_path / "hand.jpg"
    Image.fromarray(gray).save(path, "JPEG", quality=95)
    arr = read_radiograph(path)
    assert arr.shape == gray.shape and arr.dtype == np.float32
    assert np.abs(arr - gray).mean() < 3.0  # lossy, but the same picture
    assert np.corrcoef(arr.ravel(), gray.ravel())[0, 1] > 0.99


# -- DICOM ------------------------------------------------------------------------------------------

def test_dicom_monochrome2_keeps_values(gray):
    pixels = gray.astype(np.uint16) * 16  # 12-bit detector range
    arr = read_radiograph_bytes(_dicom_bytes(pixels, "MONOCHROME2"), "hand.dcm")
    assert arr.dtype == np.float32 and arr.shape == gray.shape
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))


def test_dicom_found_by_preamble_whatever_the_name(gray):
    pixels = gray.astype(np.uint16)
    arr = read_radiograph_bytes(_dicom_bytes(pixels), "upload")  # no .dcm in the name
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))


def test_dicom_monochrome1_is_inverted(gray):
    pixels = gray.astype(np.uint16) * 16
    arr = read_radiograph_bytes(_dicom_bytes(pixels, "MONOCHROME1"), "m1.dcm")
    expected = float(pixels.max()) + float(pixels.min()) - pixels.astype(np.float32)
    np.testing.assert_array_equal(arr, expected)
    assert np.corrcoef(arr.ravel(), pixels.ravel())[0, 1] == pytest.approx(-1.0)
    # the darkest stored pixel (densest bone in MONOCHROME1) is now the brightest
    assert arr.ravel()[np.argmin(pixels)] == arr.max()


def test_dicom_monochrome1_film_preprocesses_like_the_original(gray):
    """A MONOCHROME1 film of the inverted radiograph must look to the model like the radiograph itself."""
    film = 4095 - gray.astype(np.uint16) * 16
    from_dicom = preprocess_array(read_radiograph_bytes(_dicom_bytes(film, "MONOCHROME1"), "m1.dcm"))
    np.testing.assert_allclose(from_dicom, preprocess_array(gray.astype(np.float32)), atol=1e-4)


def test_dicom_voi_lut_window_applied(gray):
    pixels = gray.astype(np.uint16) * 16  # 0..4080
    c, w = 1600.0, 1000.0
    arr = read_radiograph_bytes(_dicom_bytes(pixels, WindowCenter=c, WindowWidth=w), "win.dcm")
    # DICOM PS3.3 C.11.2.1.2 linear window, output range of 12 bits stored
    x, y_max = pixels.astype(np.float64), 4095.0
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    expected = np.where(x <= lo, 0.0, np.where(x > hi, y_max, ((x - (c - 0.5)) / (w - 1) + 0.5) * y_max))
    np.testing.assert_allclose(arr, expected, atol=0.01)
    assert (x <= lo).any() and (x > hi).any()  # the window really clips on both sides of this image
    assert not np.allclose(arr, x)


def test_dicom_rescale_slope_intercept_applied(gray):
    pixels = gray.astype(np.uint16)
    arr = read_radiograph_bytes(_dicom_bytes(pixels, RescaleSlope=2, RescaleIntercept=-100), "ct.dcm")
    np.testing.assert_allclose(arr, pixels * 2.0 - 100.0)


def test_bare_dicom_without_preamble_read_by_name(gray):
    pixels = gray.astype(np.uint16) * 16
    data = _dicom_bytes(pixels, preamble=False)
    assert data[128:132] != b"DICM"
    arr = read_radiograph_bytes(data, "old_scanner.dcm")
    np.testing.assert_array_equal(arr, pixels.astype(np.float32))


def test_dicom_without_pixel_data(tmp_path):
    path = tmp_path / "report.dcm"
    path.write_bytes(_dicom_bytes(None))
    with pytest.raises(ImageLoadError, match="pixel data") as exc:
        read_radiograph(path)
    assert "report.dcm" in str(exc.value)


def test_dicom_with_truncated_pixel_data(gray):
    data = _dicom_bytes(gray.astype(np.uint16))
    with pytest.raises(ImageLoadError, match="hand.dcm"):
        read_radiograph_bytes(data[:-5000], "hand.dcm")


# -- what must be refused -------------------------------------------------------------------------

def test_empty_bytes():
    with pytest.raises(ImageLoadError, match="empty"):
        read_radiograph_bytes(b"", "nothing.png")


def test_empty_file(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        read_radiograph(tmp_path / "zero.png")


@pytest.mark.parametrize("junk", [b"this is not an image at all", b"%PDF-1.4\n" + bytes(range(256)) * 4,
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_non_image_bytes(junk):
    with pytest.raises(ImageLoadError, match="junk.png") as exc:
        read_radiograph_bytes(junk, "junk.png")
    assert "not a readable" in str(exc.value)


def test_truncated_real_png(train_image_path):
    data = train_image_path.read_bytes()
    with pytest.raises(ImageLoadError):
        read_radiograph_bytes(data[: len(data) // 2], "half.png")


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        read_radiograph(tmp_path / "nope.png")


def test_decompression_bomb_header_refused():
    data = _png_header_claiming(20000, 20000)  # 400 MP claimed, a few hundred bytes on disk
    assert len(data) < 1000
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        read_radiograph_bytes(data, "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == before  # the global PIL limit is restored


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_real_png_just_above_pixel_limit_refused():
    side = int(MAX_PIXELS ** 0.5) + 100  # above our limit but below PIL's own 2x error threshold
    data = _png_bytes(Image.new("1", (side, side)))
    with pytest.raises(ImageLoadError, match="megapixels"):
        read_radiograph_bytes(data, "big.png")


def test_huge_dicom_refused_before_decoding():
    data = _dicom_bytes(np.zeros((4, 4), np.uint16), Rows=9000, Columns=9000)
    with pytest.raises(ImageLoadError, match="megapixels"):
        read_radiograph_bytes(data, "huge.dcm")


# -- file names from case tables --------------------------------------------------------------------

@pytest.fixture
def image_dir(tmp_path, gray):
    d = tmp_path / "images"
    d.mkdir()
    Image.fromarray(gray).save(d / "5.png")
    Image.fromarray(gray).save(d / "7.jpg")
    (d / "6.dcm").write_bytes(_dicom_bytes(gray.astype(np.uint16)))
    (tmp_path / "secret.png").write_bytes(b"outside")
    return d


def test_safe_image_path_finds_each_extension(image_dir):
    root = image_dir.resolve()
    assert safe_image_path(image_dir, "5") == root / "5.png"
    assert safe_image_path(image_dir, "5.png") == root / "5.png"
    assert safe_image_path(image_dir, " 5 ") == root / "5.png"
    assert safe_image_path(image_dir, "7") == root / "7.jpg"
    assert safe_image_path(image_dir, "6") == root / "6.dcm"
    assert safe_image_path(image_dir, 5) == root / "5.png"
    np.testing.assert_array_equal(read_radiograph(safe_image_path(image_dir, "6")),
                                  read_radiograph(safe_image_path(image_dir, "5")))


def test_safe_image_path_missing_id_gives_png_path_that_fails_as_not_found(image_dir):
    p = safe_image_path(image_dir, "999")
    assert p == image_dir.resolve() / "999.png" and not p.exists()
    with pytest.raises(ImageLoadError, match="not found"):
        read_radiograph(p)


@pytest.mark.parametrize("bad_id", ["../../x", "../secret", "a/b", "/etc/passwd", "..", ".", "", "  ",
                                    "a\\b", "x\x00y"])
def test_safe_image_path_refuses_ids_escaping_the_folder(image_dir, bad_id):
    with pytest.raises(ImageLoadError, match="refused"):
        safe_image_path(image_dir, bad_id)


def test_safe_image_path_refuses_symlink_out_of_the_folder(image_dir):
    (image_dir / "evil.png").symlink_to(image_dir.parent / "secret.png")
    with pytest.raises(ImageLoadError, match="outside"):
        safe_image_path(image_dir, "evil")


def test_unreadable_file_message_names_the_file_not_a_python_object(tmp_path):
    """#31.7: Pillow's 'cannot identify image file <_io.BytesIO object at 0x...>' never reaches a user."""
    bad = tmp_path / "1377.png"
    bad.write_bytes(b"this is not an image at all, just text" * 10)
    for call in (lambda: read_radiograph(bad), lambda: read_radiograph_bytes(bad.read_bytes(), "1377.png")):
        with pytest.raises(ImageLoadError) as err:
            call()
        msg = str(err.value)
        assert "1377.png" in msg and "object at 0x" not in msg and "BytesIO" not in msg, msg
