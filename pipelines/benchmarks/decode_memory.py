"""Peak memory of decoding hostile files: a deflated multi-frame DICOM bomb and a huge PNG.

    python -m pipelines.benchmarks.decode_memory            # prints one line per case

Each case runs in a fresh subprocess (so one case's peak does not hide another's) and reports the process's
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after reading the file with
:func:`boneage.io.imaging.read_radiograph_bytes`, its size on disk, and the outcome (refused with which reason,
or the decoded shape). The baseline line reads a real 100x100 radiograph-sized PNG, for the interpreter's
own footprint.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zlib

import numpy as np


def build_deflated_bomb(frames: int = 40, rows: int = 3000, cols: int = 4000, modality: str = "DX") -> bytes:
    """A valid Deflated Explicit VR Little Endian DICOM of ``frames`` x ``rows`` x ``cols`` 16-bit zeros.

    The pixel data is streamed through zlib in chunks, so building it needs only a few MB even though it
    inflates to ``2 * frames * rows * cols`` bytes (40 x 3000 x 4000: 960 MB, about 1 MB on disk).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, DigitalXRayImageStorageForPresentation, generate_uid

    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = modality
    ds.BodyPartExamined = "HAND"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    body = io.BytesIO()
    dcmwrite(body, ds, implicit_vr=False, little_endian=True, enforce_file_format=False)
    n_bytes = 2 * frames * rows * cols
    # (7FE0,0010) OW, explicit VR little endian: tag, 'OW', 2 reserved bytes, 4-byte length
    pixel_header = b"\xe0\x7f\x10\x00OW\x00\x00" + int(n_bytes).to_bytes(4, "little")

    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(body.getvalue() + pixel_header)]
    chunk = bytes(8 << 20)
    left = n_bytes
    while left:
        step = min(left, len(chunk))
        parts.append(comp.compress(chunk[:step]))
        left -= step
    parts.append(comp.flush())

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue() + b"".join(parts)


def build_png(width: int, height: int) -> bytes:
    """A gray PNG of ``width`` x ``height`` zeros, encoded row by row (small on disk, huge when decoded)."""
    import struct

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _child(case: str) -> None:
    import resource

    if case == "dicom_bomb":
        data, name = build_deflated_bomb(), "bomb.dcm"
    elif case == "png_20000":
        data, name = build_png(20000, 20000), "huge.png"
    else:  # baseline: a 100x100 gray PNG
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray((np.arange(10000).reshape(100, 100) % 251).astype(np.uint8)).save(buf, "PNG")
        data, name = buf.getvalue(), "small.png"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from boneage.io.imaging import ImageLoadError, read_radiograph_bytes

    try:
        arr = read_radiograph_bytes(data, name)
        outcome = f"decoded {arr.shape}"
    except ImageLoadError as exc:
        outcome = f"refused: {exc}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"case": case, "file_mb": round(len(data) / 1e6, 2), "peak_rss_mb_before_read": round(before / 1024),
                      "peak_rss_mb": round(peak / 1024), "outcome": outcome}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    for case in ("baseline", "dicom_bomb", "png_20000"):
        res = subprocess.run([sys.executable, "-m", "pipelines.benchmarks.decode_memory", "--child", case],
                             capture_output=True, text=True)
        print(res.stdout.strip() or f"{case}: failed (status {res.returncode}): {res.stderr.strip()[-500:]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
