"""DICOM as hospitals send it: compressed transfer syntaxes decode (pydicom's own sample files and a real RSNA
radiograph re-encoded), multi-frame files give their first frame and say so, and a deflated multi-frame bomb
is refused from its header before anything is inflated."""
from __future__ import annotations

import copy
import io
import tracemalloc

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from boneage.io.imaging import MAX_PIXELS, UPLOAD_MAX_PIXELS, ImageLoadError, TooManyPixelsError, decode_image_bytes, decode_upload
from pipelines.benchmarks.decode_memory import build_deflated_bomb

pytestmark = pytest.mark.integration


def _sample(name: str) -> bytes:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"pydicom sample {name} is missing from the installed pydicom")
    with open(path, "rb") as fh:
        return fh.read()


def _pixels(name: str) -> np.ndarray:
    return decode_image_bytes(_sample(name), name).pixels


# -- one test per compressed transfer syntax, on pydicom's sample files ----------------------------------

@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_syntaxes_equal_the_uncompressed_reference(name):
    """RLE Lossless, JPEG 2000 Lossless, JPEG-LS Lossless: the same pixels as MR_small.dcm (uncompressed)."""
    np.testing.assert_array_equal(_pixels(name), _pixels("MR_small.dcm"))


def test_jpeg_lossless_process14_sv1_equals_the_rle_copy():
    """JPEG Lossless, Non-Hierarchical, First-Order Prediction (process 14 SV1), the syntax CR systems export:
    pixel-identical to the RLE-compressed copy of the same image (both lossless)."""
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    np.testing.assert_array_equal(_pixels("SC_rgb_jpeg_gdcm.dcm"), _pixels("SC_rgb_rle.dcm"))


def test_jpeg_extended_12_bit_decodes_like_the_jpeg2000_copy():
    """JPEG Extended (process 2/4) at 12 bits: decodes, and matches pydicom's JPEG 2000 copy of the same
    image (both lossy, so closely, not exactly)."""
    ext, j2k = _pixels("JPGExtended.dcm"), _pixels("JPEG2000.dcm")
    assert ext.shape == j2k.shape == (1024, 256)
    assert ext.max() > 255  # 12-bit values kept, not squashed to 8 bits
    assert np.corrcoef(ext.ravel(), j2k.ravel())[0, 1] > 0.95


def test_jpeg_ls_near_lossless_decodes():
    arr = _pixels("JPEGLSNearLossless_16.dcm")
    assert arr.shape == (50, 10) and arr.dtype == np.float32


def test_undecodable_jpeg_gets_a_clear_message():
    """pydicom's JPEG-lossy.dcm breaks the JPEG standard (a misplaced marker): refused with a reason."""
    with pytest.raises(ImageLoadError, match="JPEG Extended.*cannot be decoded.*Export the image uncompressed"):
        decode_image_bytes(_sample("JPEG-lossy.dcm"), "JPEG-lossy.dcm")


# -- a real RSNA radiograph, re-encoded -------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_dx(data_dir) -> tuple[np.ndarray, Dataset]:
    """Official test radiograph 4361 (native size, 8-bit) as an uncompressed DX dataset."""
    from boneage.io.dicom_wrap import dx_dataset

    ds = dx_dataset(data_dir / "test" / "4361.png")
    return ds.pixel_array.copy(), ds


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless, DeflatedExplicitVRLittleEndian],
                         ids=["rle", "jpeg2000", "jpegls", "deflated"])
def test_real_radiograph_reencoded_decodes_to_the_same_pixels(real_dx, syntax):
    pixels, ds = real_dx
    ds = copy.deepcopy(ds)
    if syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    assert len(data) < pixels.size  # really compressed
    dec = decode_image_bytes(data, "hand.dcm")
    np.testing.assert_array_equal(dec.pixels, pixels.astype(np.float32))
    assert str(dec.dicom.get("Modality")) == "DX"


# -- multi-frame and the pixel budget ----------------------------------------------------------------------

def _multiframe(frames: np.ndarray, syntax=ExplicitVRLittleEndian) -> bytes:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid(), "DX"
    ds.NumberOfFrames, (ds.Rows, ds.Columns) = len(frames), frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(frames, np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian], ids=["native", "deflated"])
def test_multiframe_dicom_gives_its_first_frame_and_says_so(train_image_path, syntax):
    first = np.asarray(Image.open(train_image_path)).astype(np.uint16) * 16
    frames = np.stack([first, 4095 - first, first // 2])
    dec = decode_image_bytes(_multiframe(frames, syntax), "three.dcm")
    np.testing.assert_array_equal(dec.pixels, first.astype(np.float32))
    assert len(dec.notes) == 1 and "3 frames" in dec.notes[0] and "first frame" in dec.notes[0]


def test_deflated_bomb_refused_from_the_header_without_inflating():
    """40 frames of 3000x4000 16-bit zeros: 960 MB inflated, about 1 MB on disk. The old reader inflated all of
    it (3.2 GB peak); now the header alone refuses it, with only a few MB allocated."""
    data = build_deflated_bomb(40, 3000, 4000)
    assert len(data) < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(TooManyPixelsError, match="40 frames of 4000x3000 = 480 megapixels"):
            decode_image_bytes(data, "bomb.dcm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB allocated while refusing the bomb"


def test_frames_count_towards_the_budget():
    # 4 frames of 4000x5000 = 80 MP > 60 MP, though one frame alone (20 MP) would fit
    assert 4000 * 5000 < MAX_PIXELS < 4 * 4000 * 5000
    with pytest.raises(TooManyPixelsError, match="4 frames"):
        decode_image_bytes(build_deflated_bomb(4, 4000, 5000), "four.dcm")
    # an upload has the tighter upload budget: 2 frames of 4000x4000 (32 MP) is refused there
    assert 2 * 4000 * 4000 > UPLOAD_MAX_PIXELS
    with pytest.raises(TooManyPixelsError, match="30 MP limit"):
        decode_upload(build_deflated_bomb(2, 4000, 4000), "two.dcm")


def test_animated_png_gives_its_first_frame_and_says_so(train_image_path):
    first = Image.open(train_image_path)
    buf = io.BytesIO()
    first.save(buf, "PNG", save_all=True, append_images=[Image.fromarray(255 - np.asarray(first)), first])
    dec = decode_image_bytes(buf.getvalue(), "anim.png")
    np.testing.assert_array_equal(dec.pixels, np.asarray(first, np.float32))
    assert dec.notes == ("anim.png: the file holds 3 frames; only the first frame was used.",)


def test_dicom_wrap_stores_the_pixels_and_tags_it_is_given(data_dir):
    """boneage.io.dicom_wrap (the benchmarks' and tests' one way to make a DX file from a PNG)."""
    import io

    import pydicom

    from boneage.io.dicom_wrap import dx_bytes

    png = data_dir / "test" / "4361.png"
    grey = np.asarray(Image.open(png).convert("L"))
    ds = pydicom.dcmread(io.BytesIO(dx_bytes(png, bits_stored=12, PatientSex="F", PatientBirthDate="20100115")))
    assert (ds.Modality, ds.BodyPartExamined, ds.BitsStored, ds.PatientSex) == ("DX", "HAND", 12, "F")
    np.testing.assert_array_equal(ds.pixel_array, grey.astype(np.uint16) * 16)
    with pytest.raises(ValueError, match="one grey channel"):
        dx_bytes(np.zeros((4, 4, 3), np.uint8))
