"""Follow one child across films: bone-age velocity between visits, with the model's precision.

    python -m pipelines.followup --image-dir DIR --cases CASES.csv --output OUT.csv [--films FILMS.csv]

CASES.csv: one row per film, ``id`` (the image DIR/<id>.png, .jpg, .jpeg or .dcm), ``male`` or ``sex``,
``patient_id`` (a DICOM's PatientID when left out), and ``birth_date`` + ``study_date`` (ISO, YYYY-MM-DD) or
``chronological_age_months`` (a DICOM's header otherwise). OUT.csv: one row per patient with two or more
readable films: patient_id, films, first_study_date, last_study_date, ba_velocity (bone-age months per month
of life, least squares over the series), ba_velocity_lower_90 / _upper_90 (from the test-retest SD of
artifacts/precision.json) and note (films too close to tell, duplicate dates, a later film reading younger,
sex or laterality changing, bad dates). ``--films`` also writes every film's own row (the predict schema, with
its SDS). Exit status 0 when at least one patient was followed, 1 when none was, 2 when the input or output
cannot be used (nothing is written then).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from boneage.inference.predictor import ModelNotFoundError, load_predictor
from boneage.inference.series import follow_up_cases, measured_retest_sd
from boneage.io.tables import CasesFileError, read_cases
from boneage.settings import add_path_flags
from boneage.store.artifacts import ArtifactMissingError
from pipelines.predict import check_output_path, write_csv_atomic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-dir", required=True, help="folder with <id>.png/.jpg/.dcm files")
    ap.add_argument("--cases", required=True, help="CSV: id, male/sex, patient_id, birth_date + study_date or "
                                                   "chronological_age_months")
    ap.add_argument("--output", required=True, help="output CSV, one row per followed patient")
    ap.add_argument("--films", help="also write each film's row (the predict schema) to this CSV")
    add_path_flags(ap, data=False, model=True)
    args = ap.parse_args(argv)
    for out in filter(None, (args.output, args.films)):
        if problem := check_output_path(out, args.cases):
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if not Path(args.image_dir).is_dir():
        print(f"error: --image-dir {args.image_dir} is not a folder.", file=sys.stderr)
        return 2
    try:
        table = read_cases(args.cases)
        sd = measured_retest_sd()
        predictor = load_predictor(args.model_dir)
    except (CasesFileError, ArtifactMissingError, ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batch = follow_up_cases(table.all_rows, args.image_dir, sd, predictor)
    write_csv_atomic(batch.table(), Path(args.output))
    print(f"wrote {len(batch.series)} patients to {args.output} (test-retest SD {sd:.2f} months, "
          "artifacts/precision.json)")
    if args.films:
        write_csv_atomic(batch.film_rows, Path(args.films))
        print(f"wrote {len(batch.film_rows)} film rows to {args.films}")
    for cid, err in batch.film_rows.loc[batch.film_rows["error"] != "", ["id", "error"]].itertuples(index=False):
        print(f"failed {cid}: {err}", file=sys.stderr)
    for why in batch.skipped:
        print(f"not followed: {why}", file=sys.stderr)
    if not batch.series:
        print("error: no patient has two readable films.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
