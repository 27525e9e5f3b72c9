"""How fast radiographs are decoded and prepared into the image cache, and what a full build would cost.

    python -m pipelines.benchmarks.cache [--data-dir DIR] [--base-size 512] [--fit letterbox] [--workers 1 2]

Times, on the native official test radiographs (``test/``, 200 files): one pass in this process with a
clock around every image (read + prepare, to relate the cost to the image's size), then a complete cache
build (:func:`boneage.training.image_cache.build_image_cache`, the code training uses) with each ``--workers``
count, in a fresh temporary folder. Prints images/s and the projected wall time and disk for ``--n-target``
images (12,611: the RSNA training set), both at the measured rate and, because the full-size training
films are larger than these test files, scaled to ``--target-megapixels`` with the per-megapixel cost
fitted on the 200 files. Use ``nice`` on a shared machine; the numbers are then a lower bound.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd

from boneage.geometry.framing import Geometry
from boneage.training.image_cache import build_image_cache, load_case_image
from boneage.io.imaging import read_radiograph, safe_image_path
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


def per_image_seconds(cases: pd.DataFrame, image_dir, geometry: Geometry) -> pd.DataFrame:
    """Seconds to read and prepare each image, with its size in megapixels."""
    rows = []
    for cid in cases["id"].astype(str):
        mp = read_radiograph(safe_image_path(image_dir, cid)).size / 1e6
        t0 = time.perf_counter()
        load_case_image(image_dir, cid, geometry)
        rows.append({"id": cid, "megapixels": mp, "seconds": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--base-size", type=int, default=512)
    ap.add_argument("--fit", choices=("squeeze", "letterbox"), default="letterbox")
    ap.add_argument("--framing", choices=("none", "hand", "hand-upright"), default="none")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n-target", type=int, default=12611, help="images of the full build to project to")
    ap.add_argument("--target-megapixels", type=float, default=3.0,
                    help="typical size of a full-resolution RSNA training film (about 1,700 x 1,800 px)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    geometry = Geometry(args.base_size, args.fit, args.framing)
    cases = pd.read_csv(data_dir / "test.csv", dtype={"id": str})
    image_dir = data_dir / "test"
    per = per_image_seconds(cases, image_dir, geometry)
    slope, intercept = np.polyfit(per["megapixels"], per["seconds"], 1)
    at_target = float(intercept + slope * args.target_megapixels)
    disk_gb = args.n_target * args.base_size ** 2 / 1e9
    out = {"geometry": geometry.key(), "n_images": len(cases),
           "median_megapixels": float(per["megapixels"].median()),
           "in_process_median_ms": float(per["seconds"].median() * 1e3),
           "seconds_per_megapixel": float(slope), "seconds_fixed": float(intercept),
           "projected_seconds_per_image_at_target_mp": at_target, "target_megapixels": args.target_megapixels,
           "cache_disk_gb_for_target": disk_gb, "builds": []}
    print(f"{len(cases)} native test images, median {out['median_megapixels']:.2f} MP; geometry {geometry.key()}")
    print(f"one process, per image: median {out['in_process_median_ms']:.1f} ms "
          f"(~ {intercept * 1e3:.1f} ms + {slope * 1e3:.1f} ms per megapixel)")
    for w in args.workers:
        with tempfile.TemporaryDirectory(prefix="boneage-cache-bench-") as tmp:
            t0 = time.perf_counter()
            loaded = build_image_cache(cases, image_dir, geometry, tmp, workers=w, progress=False)
            secs = time.perf_counter() - t0
        rate = len(loaded.cases) / secs
        # the speed-up these workers reached over one in-process decode, applied to target-size films
        speedup = rate * float(per["seconds"].mean())
        build = {"workers": w, "seconds": secs, "images_per_s": rate, "speedup_vs_in_process": speedup,
                 "projected_minutes_n_target_at_measured_rate": args.n_target / rate / 60,
                 "projected_minutes_n_target_at_target_mp": args.n_target * at_target / speedup / 60}
        out["builds"].append(build)
        print(f"{w} worker process(es): {rate:.1f} images/s ({secs:.1f} s for {len(loaded.cases)}, "
              f"x{speedup:.2f} over one in-process decode); "
              f"{args.n_target:,} images: {build['projected_minutes_n_target_at_measured_rate']:.1f} min at this "
              f"size, ~{build['projected_minutes_n_target_at_target_mp']:.0f} min at "
              f"{args.target_megapixels:g} MP per film")
    print(f"cache on disk for {args.n_target:,} images at {args.base_size} px: {disk_gb:.2f} GB (uint8)")
    if args.json:
        from boneage.config import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
