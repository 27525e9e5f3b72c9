"""Predict bone age with the shipped model.

One file:     python -m pipelines.predict IMAGE --sex F
Many cases:   python -m pipelines.predict --image-dir DIR --cases CASES.csv --output OUT.csv

CASES.csv needs ``id`` and ``male`` (True/False, 1/0) or ``sex`` (M/F); the image is DIR/<id>.png (or .jpg,
.jpeg, .dcm). OUT.csv has one row per case: id, male, boneage_pred (months), uncertainty, stage_pred, stage
probabilities, conformal interval bounds when calibrated, ``outlier_score`` and ``unlike_training_data`` (the
shipped model only), and ``error`` (empty on success, else why). Images that cannot be a hand radiograph are
refused by the input gate (boneage.input_gate) with the reason in ``error``. Exit status 0 when at least one
case was predicted, 1 when none was, 2 when the input or output cannot be used (nothing is written then).

``--site SITE`` applies a site profile (artifacts/sites/SITE.json or a path, from ``pipelines.calibrate_site``):
the site's corrected age and its own intervals, and a ``site`` column.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from boneage.config import write_atomic
from boneage.csv_safety import to_csv_safe
from boneage.imaging import ImageLoadError
from boneage.predictor import ModelNotFoundError, load_predictor
from boneage.site_calibration import SiteProfileError
from boneage.tables import CasesFileError, parse_male, read_cases


def check_output_path(output: str, cases: str | None = None) -> str:
    """Why ``output`` cannot be written ('' when it can): checked before any work, so that a long batch never
    ends in a traceback, and the cases file is never overwritten by its own results."""
    path = Path(output)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"--output {path} is a folder; give a file name (e.g. {path / 'predictions.csv'})."
    if parent.exists() and not parent.is_dir():
        return f"--output {path}: {parent} is not a folder."
    if not parent.is_dir():
        return f"--output {path}: the folder {parent} does not exist; create it first or choose another path."
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output {path}: the folder {parent} is not writable."
    if path.exists() and not os.access(path, os.W_OK):
        return f"--output {path} exists and is not writable."
    if cases is not None and Path(cases).exists() and (
            path.resolve() == Path(cases).resolve() or (path.exists() and os.path.samefile(path, cases))):
        return f"--output {path} is the cases file itself; it would be overwritten. Choose another output file."
    return ""


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write the table next to ``path`` under a temporary name, then rename it over ``path`` (a crash never
    leaves half a file); formula-like text cells are neutralised (boneage.csv_safety)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            to_csv_safe(df, fh)

    write_atomic(path, write)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="one radiograph (PNG, JPEG or DICOM)")
    ap.add_argument("--sex", help="M or F (for a single image)")
    ap.add_argument("--image-dir", help="folder with <id>.png/.jpg/.dcm files")
    ap.add_argument("--cases", help="CSV with id and male/sex columns")
    ap.add_argument("--output", help="output CSV (default: print to stdout)")
    ap.add_argument("--model-dir", help="model folder (default: artifacts/model)")
    ap.add_argument("--outlier-check", action=argparse.BooleanOptionalAction, default=True,
                    help="mark images unlike the training radiographs (LOF on the shipped model's training features; "
                         "default on with the shipped model)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="average over small zooms (default: the model's stored choice, inference.tta in config.json; "
                         "its intervals were calibrated that way)")
    ap.add_argument("--site", help="site profile: a name in artifacts/sites or a path (pipelines.calibrate_site)")
    args = ap.parse_args(argv)

    single = args.image is not None
    if single == bool(args.cases or args.image_dir):
        ap.error("give either IMAGE --sex M|F, or --image-dir DIR --cases CASES.csv")
    male = None
    if single:
        male = parse_male(args.sex)
        if male is None:
            ap.error("--sex must be M or F (or male/female, 1/0)")
    elif not (args.cases and args.image_dir):
        ap.error("--cases and --image-dir go together")
    if args.output and (problem := check_output_path(args.output, args.cases)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    table = None
    if not single:
        if not Path(args.image_dir).is_dir():
            print(f"error: --image-dir {args.image_dir} is not a folder.", file=sys.stderr)
            return 2
        try:
            table = read_cases(args.cases)
        except CasesFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        predictor = load_predictor(args.model_dir, tta=args.tta, site=args.site)
    except (ModelNotFoundError, SiteProfileError, ValueError) as exc:  # missing, damaged or unknown-architecture model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.outlier_check and args.model_dir is None:
        from boneage.artifacts import ArtifactMissingError
        from boneage.unlike_training import fit_training_outlier_check

        try:
            predictor.outlier_check = fit_training_outlier_check()
        except (ArtifactMissingError, ValueError) as exc:
            print(f"warning: the 'unlike the training data' check is unavailable: {exc}", file=sys.stderr)
    elif args.outlier_check:
        print("note: the 'unlike the training data' check needs the training features of the shipped model; it is "
              "off for --model-dir.", file=sys.stderr)
    if predictor.conformal is None and predictor.site is None:
        print(f"warning: {predictor.conformal_problem or 'no conformal.json in the model folder'}: prediction "
              "intervals are unavailable (no lower_/upper_ columns). Make them with "
              "`python -m pipelines.precompute --only intervals`.", file=sys.stderr)

    if single:
        try:
            pred = predictor.predict_file(args.image, male)
        except ImageLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for note in pred.notes:
            print(f"note: {note}", file=sys.stderr)
        if pred.unlike_training_data:
            print(f"warning: {args.image} looks unlike the training radiographs (outlier score "
                  f"{pred.outlier_score:.2f}); read the estimate with extra caution.", file=sys.stderr)
        iv = pred.intervals.get("90")
        extra = f", 90% interval {iv[0]:.1f}-{iv[1]:.1f}" if iv else ", no interval (not calibrated)"
        print(f"{args.image}: bone age {pred.boneage_months:.1f} months ({pred.boneage_months / 12:.1f} years)"
              f"{extra}, stage {pred.stage} (p={pred.stage_probs[pred.stage]:.2f}), uncertainty "
              f"+/-{pred.scale_months:.1f} months" + (f", site {predictor.site.name}" if predictor.site else ""))
        return 0

    out = predictor.predict_cases(table.all_rows, args.image_dir)
    n_err = int((out["error"] != "").sum())
    if args.output:
        path = Path(args.output)
        write_csv_atomic(out, path)
        print(f"wrote {len(out)} rows to {path} ({len(out) - n_err} predicted, {n_err} failed)")
    else:
        to_csv_safe(out, sys.stdout)
    for cid, err in out.loc[out["error"] != "", ["id", "error"]].itertuples(index=False):
        print(f"failed {cid}: {err}", file=sys.stderr)
    if n_err == len(out):
        print(f"error: none of the {len(out)} cases could be predicted (see the error column).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
