"""Calibrate the shipped model to one site (hospital) from its own labelled radiographs.

    python -m pipelines.calibrate_site --image-dir DIR --cases LOCAL.csv --name SITE [--out-dir artifacts/sites]

LOCAL.csv: as for ``pipelines.predict`` (``id``, ``male`` or ``sex``) plus the site's reference bone age in
months (``boneage``). Predicts every case with the shipped model, fits the site's per-sex correction and
local conformal intervals (see boneage/evaluation/site_calibration.py), evaluates both by K-fold cross-validation
against the model as it is, and writes the profile to OUT_DIR/SITE.json. Use it with
``pipelines.predict --site SITE``, ``load_predictor(site="SITE")`` or the dashboard's Predict page.

Refused, with nothing written: fewer cases than the intervals need, reference ages missing or outside
0-240 months, ages that look like years (all below 25), all references identical, unreadable rows, cases that
are in the model's training split, an existing profile of that name without ``--overwrite`` (with it, the
previous version is kept as OUT_DIR/history/SITE.<date>.json).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from boneage.config import ARTIFACTS_DIR, resolve_data_dir
from boneage.store.manifest import model_fingerprint
from boneage.inference.predictor import ModelNotFoundError, load_predictor
from boneage.evaluation.site_calibration import (DEFAULT_REFERENCE, HISTORY_DIR, K_FOLDS, LEVELS,
                                                 RECOMMENDED_MIN_CASES, REFERENCE_RANGE, SITES_DIR,
                                                 archive_profile, check_references, fit_profile, min_cases,
                                                 min_cases_all)
from boneage.io.tables import read_cases
from boneage.inference.assess import assess_cases
from boneage.settings import add_path_flags

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CHUNK = 32  # cases per progress-bar step
MISSING_AGE = "missing bone age"  # boneage.io.tables' reason for a row without a reference


class CalibrationRefused(Exception):
    """A guard rail: the message says what is wrong and how to fix it."""


def _listing(ids, k: int = 8) -> str:
    ids = list(ids)
    return ", ".join(map(str, ids[:k])) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def needed_text() -> str:
    return ", ".join(f"{lvl} % needs {min_cases(lvl)}" for lvl in LEVELS)


def check_cases(cases: pd.DataFrame, rejected: list[tuple[str, str]]) -> None:
    """Guard rails on the table alone: unreadable rows, missing / out-of-range references, too few cases."""
    if rejected:
        lines = "\n".join(f"  {cid}: {why}" for cid, why in rejected[:20])
        more = f"\n  ... and {len(rejected) - 20} more" if len(rejected) > 20 else ""
        raise CalibrationRefused(f"{len(rejected)} row(s) of the cases file cannot be used for calibration (every "
                                 f"case needs an id, a sex and a reference bone age of {REFERENCE_RANGE[0]:.0f}-"
                                 f"{REFERENCE_RANGE[1]:.0f} months):\n{lines}{more}\n"
                                 "Fix or remove these rows and rerun.")
    lo, hi = REFERENCE_RANGE
    y = cases["boneage"].to_numpy(float)
    bad = np.isnan(y) | (y < lo) | (y > hi)
    if bad.any():
        raise CalibrationRefused(f"{int(bad.sum())} reference bone age(s) missing or outside {lo:.0f}-{hi:.0f} months "
                                 f"(ids {_listing(cases.loc[bad, 'id'])}); bone age is given in months. Fix them and "
                                 "rerun.")
    try:
        check_references(y)  # years instead of months, one value copied down the column
    except ValueError as exc:
        raise CalibrationRefused(str(exc)) from None
    check_count(len(cases))


def check_overwrite(path: Path, overwrite: bool) -> None:
    """An existing profile is replaced only with ``--overwrite`` (and then kept in the history folder)."""
    if path.exists() and not overwrite:
        raise CalibrationRefused(f"site profile {path} exists. Pass --overwrite to refit it (the current version is "
                                 f"kept as {path.parent / HISTORY_DIR}/{path.stem}.<date>.json), or choose another "
                                 "--name.")


def check_count(n: int) -> None:
    if n < min_cases_all():
        raise CalibrationRefused(
            f"{n} usable case(s): too few. A site profile needs at least {min_cases_all()} labelled cases for its "
            f"80/90/95 % intervals ({needed_text()}; per-sex intervals need that many of each sex). More cases "
            "give more stable intervals and let the correction be checked: a few dozen per sex is a good start.")


def check_leak(cases: pd.DataFrame, image_dir: Path, splits_path: Path) -> None:
    """Refuse cases from the model's own training split: their errors are training errors, not a site's."""
    if not splits_path.is_file():
        raise CalibrationRefused(f"cannot check the cases against the model's training split: {splits_path} is "
                                 "missing (pass --splits with the model's splits.csv).")
    splits = pd.read_csv(splits_path, dtype={"id": str}, usecols=["id", "split"])
    train_ids = set(splits.loc[splits["split"] == "train", "id"].astype(str))
    leaked = [cid for cid in cases["id"] if cid in train_ids]
    if not leaked:
        return
    where = ""
    data = resolve_data_dir(None, required=False)
    if data is not None and image_dir.resolve() == (Path(data) / "train").resolve():
        where = f" {image_dir} is the RSNA training folder the model learnt from."
    raise CalibrationRefused(
        f"{len(leaked)} case(s) are in the model's training split ({splits_path}: ids {_listing(leaked)}).{where} "
        "Their errors are training errors, far smaller than a new patient's: a profile from them would be a "
        "leak. Use radiographs the model never saw; if these are your own radiographs that merely share ids, "
        "rename them (e.g. prefix the site name).")


def predict_with_progress(predictor, cases: pd.DataFrame, image_dir: Path) -> pd.DataFrame:
    parts = []
    with tqdm(total=len(cases), desc="predicting local cases", unit="case", file=sys.stderr) as bar:
        for start in range(0, len(cases), CHUNK):
            chunk = cases.iloc[start:start + CHUNK]
            parts.append(assess_cases(chunk, image_dir, predictor=predictor))
            bar.update(len(chunk))
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-dir", required=True, help="folder with <id>.png/.jpg/.dcm files")
    ap.add_argument("--cases", required=True, help="CSV with id, male/sex and boneage (the site's reference, months)")
    ap.add_argument("--name", required=True, help="site name: letters, digits, '_', '-', '.'")
    ap.add_argument("--out-dir", default=str(SITES_DIR), help="where SITE.json goes (default: artifacts/sites)")
    add_path_flags(ap, data=False, model=True)
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"),
                    help="the model's splits.csv, to refuse training cases (default: artifacts/splits.csv)")
    ap.add_argument("--folds", type=int, default=K_FOLDS, help=f"cross-validation folds (default {K_FOLDS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", default=DEFAULT_REFERENCE,
                    help="what the reference ages are, e.g. 'consensus of six readers' or 'single reader': the "
                         "reference the intervals are for (shown with them)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace an existing profile of this name; the previous version is kept in OUT_DIR/history/")
    ap.add_argument("--skip-unlabelled", action="store_true",
                    help="leave out rows without a reference age (counted) instead of refusing the file")
    args = ap.parse_args(argv)

    if not NAME_RE.match(args.name):
        ap.error(f"--name {args.name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    if args.folds < 2:
        ap.error("--folds must be at least 2")
    image_dir = Path(args.image_dir)
    target = Path(args.out_dir) / f"{args.name}.json"
    try:
        check_overwrite(target, args.overwrite)
        if not image_dir.is_dir():
            raise CalibrationRefused(f"image folder {image_dir} not found")
        try:
            table = read_cases(args.cases, require_age=True)
        except FileNotFoundError:
            raise CalibrationRefused(f"cases file {args.cases} not found") from None
        except ValueError as exc:
            raise CalibrationRefused(f"{args.cases}: {exc}") from None
        rejected = table.rejected
        if args.skip_unlabelled:
            unlabelled = [r for r in rejected if r[1] == MISSING_AGE]
            rejected = [r for r in rejected if r[1] != MISSING_AGE]
            if unlabelled:
                print(f"left out {len(unlabelled)} row(s) without a reference bone age (--skip-unlabelled)", file=sys.stderr)
        check_cases(table.cases, rejected)
        check_leak(table.cases, image_dir, Path(args.splits))
        try:
            predictor = load_predictor(args.model_dir)
        except ModelNotFoundError as exc:
            raise CalibrationRefused(str(exc)) from None
        if predictor.conformal is None:
            raise CalibrationRefused(predictor.conformal_problem or "the model has no conformal calibration "
                                     "(model/conformal.json) to compare against; run `python -m pipelines.precompute`.")
        out = predict_with_progress(predictor, table.cases, image_dir)
        failed = out["error"] != ""
        for cid, err in out.loc[failed, ["id", "error"]].itertuples(index=False):
            print(f"failed {cid}: {err} (left out of the calibration)", file=sys.stderr)
        ok = out.loc[~failed].merge(table.cases[["id", "boneage"]], on="id", how="left")
        check_count(len(ok))
    except CalibrationRefused as exc:
        print(f"error: {exc}\nNothing was written.", file=sys.stderr)
        return 2

    model_dir = Path(args.model_dir) if args.model_dir else ARTIFACTS_DIR / "model"
    profile = fit_profile(args.name, ok["boneage"], ok["boneage_pred"], ok["uncertainty"], ok["male"],
                          ok["lower_90"], ok["upper_90"], model_fingerprint(model_dir, members=bool(predictor.members)),
                          predictor.tta, n_ids=ok["id"].nunique(), k_folds=args.folds, seed=args.seed,
                          phases=predictor.cfg.geometry.phases, laterality=predictor.cfg.geometry.laterality,
                          reference=args.reference)
    if target.exists():
        print(f"kept the previous version as {archive_profile(target)}")
    path = profile.save(target)
    ev = profile.evaluation
    print(f"site '{args.name}': {profile.n_cases} cases ({profile.n_male} boys), {int(failed.sum())} failed")
    print(f"  correction: {profile.correction.reason}")
    g = ev["expected_mae_change"]
    print(f"  expected MAE change on new cases with the correction (nested CV): {g['value']:+.2f} months "
          f"[{g['ci_low']:+.2f}, {g['ci_high']:+.2f}]; {'applied' if ev['correction_applied'] else 'not applied'}")
    if profile.n_cases < RECOMMENDED_MIN_CASES:
        print(f"warning: {profile.n_cases} cases, below the recommended {RECOMMENDED_MIN_CASES} "
              "(docs/site-calibration-curve.md): the intervals rest on few cases and vary from one sample to the "
              "next; label more cases and refit with --overwrite.", file=sys.stderr)
    for note in profile.notes:
        print(f"warning: {note}", file=sys.stderr)
    for lvl in LEVELS:
        q = profile.conformal.quantiles(lvl)
        print(f"  {lvl} % intervals: {'per sex' if profile.conformal.by_sex(lvl) else 'pooled'}, "
              f"+/- {q['F']:.2f} (F) / {q['M']:.2f} (M) x model scale")
    print(f"{ev['k_folds']}-fold cross-validated, before -> after (95 % CI):")
    for key, label in (("mae", "MAE"), ("bias", "bias"), ("coverage", "90 % coverage"), ("width", "90 % width")):
        b, a, d = ev["before"][key], ev["after"][key], ev["difference"][key]
        print(f"  {label}: {b['value']:.3f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] -> {a['value']:.3f} "
              f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]; difference {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    w = ev["width_change_relative"]
    print(f"  90 % width change: {w['value']:+.1%} [{w['ci_low']:+.1%}, {w['ci_high']:+.1%}]")
    print(f"  promise: {profile.to_dict()['promise']['text']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
