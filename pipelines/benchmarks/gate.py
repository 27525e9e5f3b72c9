"""The input gate's false refusals on real radiographs and its catches on a hostile set.

    python -m pipelines.benchmarks.gate [--data-dir DIR] [--limit N]

Reads every training and official test image as the product does (``boneage.io.imaging.decode_image_bytes``),
runs :func:`boneage.io.input_gate.check_radiograph`, and prints: how many real images were refused (each named
with its reason), the smallest margins of the real images to each threshold, and for every hostile input
whether it was refused and why.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.io.imaging import ImageLoadError, decode_image_bytes
from boneage.io.input_gate import check_radiograph
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _testdata(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} is not installed")
    return Path(path).read_bytes()


def hostile_inputs() -> dict[str, bytes]:
    """Files that are not hand radiographs (the issue's hostile set): name -> file bytes."""
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, 5000).astype(np.uint8), (5, 1))
    return {
        "black.png": _png(np.zeros((512, 512), np.uint8)),
        "white.png": _png(np.full((512, 512), 255, np.uint8)),
        "one_pixel.png": _png(np.full((1, 1), 128, np.uint8)),
        "rgb_noise.png": _png(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
        "gray_noise.png": _png(rng.integers(0, 256, (512, 512), dtype=np.uint8)),
        "sliver_5x5000.png": _png(ramp),
        "ct.dcm": _testdata("CT_small.dcm"),
        "mr.dcm": _testdata("MR_small.dcm"),
        "rtdose.dcm": _testdata("rtdose.dcm"),
    }


def judge_bytes(data: bytes, name: str):
    """(GateResult or None, error text): the gate's verdict on a file, or why it could not be decoded."""
    try:
        dec = decode_image_bytes(data, name)
    except ImageLoadError as exc:
        return None, str(exc)
    return check_radiograph(dec.pixels, name, dec.dicom, dec.colorfulness), ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images of each split (quick look)")
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2

    for split in ("train", "test"):
        files = sorted((data_dir / split).glob("*.png"), key=lambda p: p.name)
        if args.limit:
            files = files[: args.limit]
        t0 = time.perf_counter()
        rows, refused = [], []
        for f in files:
            res, err = judge_bytes(f.read_bytes(), f.name)
            if res is None:
                refused.append((f.name, f"unreadable: {err}"))
                continue
            rows.append({"file": f.name, **res.measures})
            if not res.ok:
                refused.append((f.name, res.reason))
        m = pd.DataFrame(rows)
        print(f"{split}: {len(files)} images, {len(refused)} refused ({time.perf_counter() - t0:.0f} s)")
        for name, reason in refused:
            print(f"  refused {name}: {reason}")
        if len(m):
            print(f"  min side {int(m[['height', 'width']].min(axis=1).min())} px, max aspect {m['aspect'].max():.2f}, "
                  f"max colourfulness {m['colorfulness'].max():.1f}")
            for col in ("relative_spread", "neighbour_correlation"):
                q = m[col].quantile([0, 0.001, 0.01, 0.5]).round(3).tolist()
                low = m.nsmallest(3, col)[["file", col]].round(3).values.tolist()
                print(f"  {col}: min {q[0]}, 0.1% {q[1]}, 1% {q[2]}, median {q[3]}; lowest {low}")

    print("hostile set:")
    caught = 0
    hostile = hostile_inputs()
    for name, data in hostile.items():
        res, err = judge_bytes(data, name)
        if res is None:
            caught += 1
            print(f"  {name}: refused by the decoder: {err}")
        elif not res.ok:
            caught += 1
            print(f"  {name}: refused [{', '.join(res.flags)}]: {res.reason}")
        else:
            print(f"  {name}: PASSED THE GATE (measures {res.measures})")
    print(f"hostile set: {caught} of {len(hostile)} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
