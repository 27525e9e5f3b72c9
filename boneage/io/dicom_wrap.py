"""A radiograph image (PNG, JPEG or a pixel array) wrapped as an uncompressed DX DICOM file.

For trying a PACS integration with images that are not DICOM yet (the benchmarks, the tests, a site that
exports PNG): the pixels are stored as they are (MONOCHROME2, bone bright), the body part is HAND, and every
other attribute comes from the caller. New UIDs are generated for the SOP instance and the study unless
given.
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def dx_dataset(pixels: np.ndarray | str | os.PathLike, bits_stored: int = 8, **tags: Any):
    """A :class:`pydicom.Dataset` (with file meta) holding ``pixels`` (a 2-D array, or the path of an image
    read as 8-bit grey). ``bits_stored`` 8 stores 8-bit pixels; 9-16 stores them in 16 bits, scaled up from
    8-bit input by ``2 ** (bits_stored - 8)``. ``tags`` set header attributes (``PatientSex="F"``,
    ``PatientBirthDate="20100115"``, ``StudyDate="20201120"`` ...)."""
    if not isinstance(pixels, np.ndarray):
        with Image.open(pixels) as im:
            pixels = np.asarray(im.convert("L"))
    if pixels.ndim != 2:
        raise ValueError(f"a radiograph is one grey channel; got pixels of shape {pixels.shape}")
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits_stored {bits_stored} must lie in 8-16")
    wide = bits_stored > 8
    if wide and pixels.dtype == np.uint8:
        pixels = pixels.astype(np.uint16) * (1 << (bits_stored - 8))
    pixels = np.ascontiguousarray(pixels, np.uint16 if wide else np.uint8)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined = "DX", "HAND"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = (16 if wide else 8), bits_stored
    ds.HighBit, ds.PixelRepresentation = bits_stored - 1, 0
    for tag, value in tags.items():
        setattr(ds, tag, value)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def dx_bytes(pixels: np.ndarray | str | os.PathLike, bits_stored: int = 8, **tags: Any) -> bytes:
    """:func:`dx_dataset` as the bytes of a DICOM file (Part 10, explicit VR little endian)."""
    buf = io.BytesIO()
    dx_dataset(pixels, bits_stored, **tags).save_as(buf, enforce_file_format=True)
    return buf.getvalue()
