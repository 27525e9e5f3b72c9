"""Predict bone age with the shipped model.

One file:     python -m pipelines.predict IMAGE --sex F
Many cases:   python -m pipelines.predict --image-dir DIR --cases CASES.csv --output OUT.csv

CASES.csv needs ``id`` and ``male`` (True/False, 1/0) or ``sex`` (M/F); the image is DIR/<id>.png (or .jpg,
.jpeg, .dcm). OUT.csv has one row per case: id, male, boneage_pred (months), uncertainty, stage_pred, stage
probabilities, conformal interval bounds when calibrated, and ``error`` (empty on success).

``--site SITE`` applies a site profile (artifacts/sites/SITE.json or a path, from ``pipelines.calibrate_site``):
the site's corrected age and its own intervals, and a ``site`` column.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from boneage.imaging import ImageLoadError
from boneage.predictor import ModelNotFoundError, load_predictor
from boneage.site_calibration import SiteProfileError
from boneage.tables import parse_male, read_cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="one radiograph (PNG, JPEG or DICOM)")
    ap.add_argument("--sex", help="M or F (for a single image)")
    ap.add_argument("--image-dir", help="folder with <id>.png/.jpg/.dcm files")
    ap.add_argument("--cases", help="CSV with id and male/sex columns")
    ap.add_argument("--output", help="output CSV (default: print to stdout)")
    ap.add_argument("--model-dir", help="model folder (default: artifacts/model)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="average over small zooms (default: the model's stored choice, inference.tta in config.json; "
                         "its intervals were calibrated that way)")
    ap.add_argument("--site", help="site profile: a name in artifacts/sites or a path (pipelines.calibrate_site)")
    args = ap.parse_args(argv)

    single = args.image is not None
    if single == bool(args.cases or args.image_dir):
        ap.error("give either IMAGE --sex M|F, or --image-dir DIR --cases CASES.csv")
    try:
        predictor = load_predictor(args.model_dir, tta=args.tta, site=args.site)
    except (ModelNotFoundError, SiteProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if predictor.conformal_problem and predictor.site is None:
        print(f"warning: {predictor.conformal_problem}", file=sys.stderr)

    if single:
        male = parse_male(args.sex)
        if male is None:
            ap.error("--sex must be M or F (or male/female, 1/0)")
        try:
            pred = predictor.predict_file(args.image, male)
        except ImageLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        iv = pred.intervals.get("90")
        extra = f", 90% interval {iv[0]:.1f}-{iv[1]:.1f}" if iv else ""
        print(f"{args.image}: bone age {pred.boneage_months:.1f} months ({pred.boneage_months / 12:.1f} years)"
              f"{extra}, stage {pred.stage} (p={pred.stage_probs[pred.stage]:.2f}), uncertainty "
              f"+/-{pred.scale_months:.1f} months" + (f", site {predictor.site.name}" if predictor.site else ""))
        return 0

    if not (args.cases and args.image_dir):
        ap.error("--cases and --image-dir go together")
    table = read_cases(args.cases)
    for cid, reason in table.rejected:
        print(f"skipped row {cid}: {reason}", file=sys.stderr)
    out = predictor.predict_cases(table.cases, args.image_dir)
    n_err = int((out["error"] != "").sum())
    if args.output:
        path = Path(args.output)
        tmp = path.with_name(path.name + ".tmp")
        out.to_csv(tmp, index=False)
        os.replace(tmp, path)
        print(f"wrote {len(out)} rows to {path} ({n_err} failed)")
    else:
        out.to_csv(sys.stdout, index=False)
    for cid, err in out.loc[out["error"] != "", ["id", "error"]].itertuples(index=False):
        print(f"failed {cid}: {err}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
