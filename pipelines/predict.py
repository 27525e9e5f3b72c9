"""Predict bone age with the shipped model.

One file:     python -m pipelines.predict IMAGE --sex F [--age MONTHS] [--output ROW.csv]
Many cases:   python -m pipelines.predict --image-dir DIR --cases CASES.csv --output OUT.csv

CASES.csv needs ``id`` and ``male`` (True/False, 1/0) or ``sex`` (M/F); the image is DIR/<id>.png (or .jpg,
.jpeg, .dcm). OUT.csv has one row per case in the schema every door shares (boneage.inference.assess.row_columns): id,
male, boneage_pred (months), uncertainty, stage_pred, stage probabilities, conformal interval bounds
(lower_80 ... upper_95, empty when not calibrated), ``outlier_score`` and ``unlike_training_data`` (the shipped
model only), framing, mirrored, inverted_negative, chronological_age_months / difference_months / maturity
(from --age, or a DICOM header's age), site, notes and ``error`` (empty on success, else why). Images that
cannot be a hand radiograph are refused by the input gate (boneage.io.input_gate) with the reason in ``error``.
For a DICOM, a missing --sex is read from its PatientSex. Exit status 0 when at least one case was predicted,
1 when none was, 2 when the input or output cannot be used (nothing is written then).

Clinical columns (optional, in CASES.csv; for one IMAGE the flags --patient-id, --birth-date, --study-date,
--height, --father-height, --mother-height): ``patient_id``, ``birth_date`` and ``study_date`` (ISO
YYYY-MM-DD) or ``chronological_age_months``, ``height_cm``, ``father_height_cm``, ``mother_height_cm``. They add
patient_id, study_date, the reference mean and SD, ``bone_age_sds`` with ``sds_status`` (delayed / normal /
advanced / indeterminate) and ``sds_reference`` (boneage.growth.sds), ``predicted_adult_height_cm`` with
``adult_height_lower_90`` / ``_upper_90`` and the table used (Bayley-Pinneau, boneage.growth.adult_height) and
``target_height_cm`` (mid-parental). A value that cannot be used (a study before birth or in the future, an
unparseable date, an implausible height, an age outside the reference) is named in ``notes``; the reading is
kept.

``--site SITE`` applies a site profile (artifacts/sites/SITE.json or a path, from ``pipelines.calibrate_site``):
the site's corrected age and its own intervals, and a ``site`` column.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from boneage.inference.assess import AssessmentInputError, assess, assess_cases
from boneage.config import write_atomic
from boneage.io.csv_safety import to_csv_safe
from boneage.io.imaging import IMAGE_EXTENSIONS, ImageLoadError
from boneage.inference.predictor import ModelNotFoundError, load_predictor
from boneage.evaluation.site_calibration import SiteProfileError
from boneage.io.tables import CasesFileError, parse_male, read_cases
from boneage.settings import add_path_flags


OUTPUT_MARK = ("id", "male", "boneage_pred")  # how a previous output of this tool begins (row_columns)


def is_previous_output(path: Path) -> bool:
    """True when ``path`` is a CSV this tool wrote: its header starts with the shared row's first columns and
    ends with ``error`` (:func:`boneage.inference.assess.row_columns`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8-sig", errors="replace").splitlines()
    except OSError:
        return False
    cols = [c.strip() for c in head[0].split(",")] if head else []
    return tuple(cols[:3]) == OUTPUT_MARK and cols[-1] == "error"


def check_output_path(output: str, cases: str | None = None, inputs: tuple[str, ...] = (),
                      image_dir: str | None = None, overwrite: bool = False) -> str:
    """Why ``output`` cannot be written ('' when it can): checked before any work, so that a long batch never
    ends in a traceback. Never an input of the run (``inputs``, the cases file, an image in ``image_dir``),
    even with ``overwrite``; an existing file only when it is a previous output of this tool or with
    ``overwrite`` (issue #31: ``--output img/1377.png`` replaced the radiograph with CSV text)."""
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
    in_dir = (image_dir is not None and path.resolve().parent == Path(image_dir).resolve()
              and path.suffix.lower() in IMAGE_EXTENSIONS)
    if in_dir or any(Path(i).exists() and path.exists() and os.path.samefile(path, i) for i in inputs) \
            or any(path.resolve() == Path(i).resolve() for i in inputs):
        return (f"--output {path} is an input of this run (a radiograph); it would be destroyed. Choose another "
                "output file (e.g. predictions.csv).")
    if path.exists() and not overwrite and not is_previous_output(path):
        return (f"--output {path} exists and is not a previous output of this tool (its header is not this tool's "
                "row); it was left as it is. Choose another file, or pass --overwrite to replace it.")
    return ""


def write_csv_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write the table next to ``path`` under a temporary name, then rename it over ``path`` (a crash never
    leaves half a file); formula-like text cells are neutralised (boneage.io.csv_safety)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            to_csv_safe(df, fh)

    write_atomic(path, write)


def check_report_dir(folder: str) -> str:
    """Why reports cannot be written into ``folder`` ('' when they can; it is created when missing)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        return f"--report-dir {path} is a file; give a folder."
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--report-dir {path}: {existing} is not writable."
    return ""


def write_case_report(a, predictor, folder: Path, taken: set | None = None) -> Path:
    """The one-page PDF of an assessment (with its Grad-CAM map) as ``folder/<id>.pdf``; returns the path. A
    name already in ``taken`` (written earlier in this run, e.g. ids ``1377`` and ``1377.png``) gets the id's
    hash added, so no report replaces another."""
    from boneage.clinic.report import gradcam
    from boneage.clinic.report import report_name, write_report

    path = folder / report_name(a.id)
    if taken is not None and path in taken:
        path = folder / report_name(f"{a.id}\x00")  # a character report_name replaces: the hashed form
    write_report(path, a, gradcam(a, predictor))
    return path


def summary_line(a) -> str:
    """One line for people: bone age, 90 % interval, stage, uncertainty, sex (and where it came from), site."""
    iv = a.intervals.get("90")
    extra = f", 90% interval {iv[0]:.1f}-{iv[1]:.1f}" if iv else ", no interval (not calibrated)"
    sex = "" if a.sex_source == "given" else f", sex {a.sex} from the {a.sex_source}"
    return (f"{a.id}: bone age {a.boneage_months:.1f} months ({a.boneage_months / 12:.1f} years){extra}, stage "
            f"{a.stage} (p={a.stage_probs[a.stage]:.2f}), uncertainty +/-{a.scale_months:.1f} months{sex}"
            + (f", site {a.site}" if a.site else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", help="one radiograph (PNG, JPEG or DICOM)")
    ap.add_argument("--sex", help="M or F (for a single image; a DICOM's PatientSex when left out)")
    ap.add_argument("--age", type=float, help="chronological age in months (a single image): adds the maturity "
                                              "status (delayed / normal / advanced)")
    ap.add_argument("--patient-id", help="patient id (a single image; a DICOM's PatientID when left out)")
    ap.add_argument("--birth-date", help="birth date YYYY-MM-DD (a single image): with --study-date gives the age")
    ap.add_argument("--study-date", help="study date YYYY-MM-DD (a single image)")
    ap.add_argument("--height", help="the child's height in cm (a single image): adds the Bayley-Pinneau adult height")
    ap.add_argument("--father-height", help="father's height in cm (with --mother-height: the target height)")
    ap.add_argument("--mother-height", help="mother's height in cm")
    ap.add_argument("--image-dir", help="folder with <id>.png/.jpg/.dcm files")
    ap.add_argument("--cases", help="CSV with id and male/sex columns")
    ap.add_argument("--output", help="output CSV (default: print to stdout); an existing file is replaced only when "
                                     "it is a previous output of this tool, never when it is an input")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --output file that is not a "
                                                             "previous output of this tool (never an input)")
    add_path_flags(ap, data=False, model=True)
    ap.add_argument("--outlier-check", action=argparse.BooleanOptionalAction, default=True,
                    help="mark images unlike the training radiographs (LOF on the shipped model's training features; "
                         "default on with the shipped model)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="average over the model's test-time augmentation passes (ModelConfig.tta_views; default: the model's stored choice, inference.tta in config.json; "
                         "its intervals were calibrated that way)")
    ap.add_argument("--site", help="site profile: a name in artifacts/sites or a path (pipelines.calibrate_site)")
    ap.add_argument("--report-dir", help="also write a printable one-page PDF report per radiograph "
                                         "(DIR/<id>.pdf, with its Grad-CAM map) into this folder")
    args = ap.parse_args(argv)

    single = args.image is not None
    if single == bool(args.cases or args.image_dir):
        ap.error("give either IMAGE --sex M|F, or --image-dir DIR --cases CASES.csv")
    male = None
    if single:
        male = parse_male(args.sex)
        if args.sex is not None and male is None:
            ap.error("--sex must be M or F (or male/female, 1/0)")
    elif not (args.cases and args.image_dir):
        ap.error("--cases and --image-dir go together")
    elif args.age is not None:
        ap.error("--age goes with a single IMAGE (a batch reads ages from DICOM headers)")
    if args.output and (problem := check_output_path(args.output, args.cases, (args.image,) if single else (),
                                                                   args.image_dir, args.overwrite)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.report_dir and (problem := check_report_dir(args.report_dir)):
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
        from boneage.store.artifacts import ArtifactMissingError
        from boneage.inference.unlike_training import fit_training_outlier_check

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
        clinical = {"patient_id": args.patient_id, "birth_date": args.birth_date, "study_date": args.study_date,
                    "height_cm": args.height, "father_height_cm": args.father_height,
                    "mother_height_cm": args.mother_height}
        try:
            a = assess(args.image, male, chronological_age=args.age, predictor=predictor,
                       clinical=clinical if any(v is not None for v in clinical.values()) else None)
        except ImageLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except AssessmentInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for caution in a.cautions():
            print(f"{'warning' if 'unlike the training' in caution else 'note'}: {caution}", file=sys.stderr)
        print(summary_line(a))
        if a.maturity is not None:
            print(f"{a.maturity_text()} Rule: {a.maturity.rule}.")
        for line in a.growth_text():
            print(line)
        if args.output:
            write_csv_atomic(pd.DataFrame([a.as_row()]), Path(args.output))
            print(f"wrote 1 row to {args.output}")
        if args.report_dir:
            try:
                print(f"wrote the report {write_case_report(a, predictor, Path(args.report_dir))}")
            except OSError as exc:
                print(f"error: the report could not be written: {exc}", file=sys.stderr)
                return 2
        return 0

    reports: list[Path] = []

    def report(a) -> None:
        try:
            reports.append(write_case_report(a, predictor, Path(args.report_dir), set(reports)))
        except OSError as exc:  # a full disk must not take the batch down; the rows are still written
            print(f"failed report {a.id}: {exc}", file=sys.stderr)

    out = assess_cases(table.all_rows, args.image_dir, predictor, on_assessment=report if args.report_dir else None)
    if args.report_dir:
        print(f"wrote {len(reports)} reports to {args.report_dir}")
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
