"""Decide on the validation split whether a retrained model replaces the shipped one.

    python -m pipelines.choose_model --candidate runs/framed2 [--adopt] [--out runs/model_choice.json]
                                     [--native-cases CSV --native-dir DIR]

Each model reads the validation images prepared in its own geometry (a framing model and the shipped
squeeze model see different inputs of the same radiographs). The candidate is measured with and without
test-time augmentation, and its TTA default is the better of the two on validation. The rule: the
candidate may replace the shipped model when its validation MAE is not worse beyond bootstrap noise, i.e.
the paired bootstrap 95 % interval of (candidate - shipped) absolute errors reaches down to 0 or below.
Test sets are not read here.

The validation files are the 100 px training files, already at the base size, so a candidate whose ``fit``
differs from the shipped model's (say ``area`` instead of ``squeeze``), or that reads native films at another
number of phase views, reads them (almost) as the shipped model does, while it reads native-size films
differently: validation cannot judge that change. Trimming uniform bars and reading left hands only are
different: they change the 100 px files too (88 and 25 of the 1,008 validation images), so validation
judges them like any other change. Such a
candidate is refused unless a labelled set of native-size radiographs is given (``--native-cases`` with
``id``, ``male``, ``boneage`` and ``--native-dir``: a hospital's own cases, never the official test set),
on which the same rule must pass too.

``--adopt`` (only when the rule passes) replaces ``<model-dir>`` by the candidate's ``model.pt``,
``config.json`` (with ``inference.tta`` and how it was chosen) and ``history.csv``, through a temporary
folder and a rename. Nothing else of the old folder is kept: its ``conformal.json`` was calibrated on the
old model's predictions. Rerun ``pipelines.precompute`` (which calibrates the intervals again),
``evaluate``, ``benchmark``, ``precision`` and ``model_card`` afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.config import ARTIFACTS_DIR, MODEL_DIR, REPO_ROOT, write_json_atomic
from boneage.training.image_cache import load_images
from boneage.evaluation.metrics import bootstrap_ci
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError
from boneage.io.tables import read_cases
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


def validation_errors(predictor: BoneAgePredictor, cases: pd.DataFrame, image_dir: Path, cache_dir: Path | None,
                      ttas: tuple[bool, ...]) -> dict[bool, np.ndarray]:
    """Signed errors (months) of ``predictor`` on ``cases`` for each TTA setting of ``ttas``, the images
    prepared once in the predictor's own geometry."""
    loaded = load_images(cases, image_dir, predictor.cfg.geometry, cache_dir=cache_dir, progress=False)
    if loaded.failed:
        raise RuntimeError(f"{len(loaded.failed)} validation images could not be read, e.g. {loaded.failed[0]}")
    male = loaded.cases["male"].to_numpy().astype(bool)
    age = loaded.cases["boneage"].to_numpy(np.float64)
    return {tta: predictor.with_options(tta=tta).read_loaded(loaded).age - age for tta in ttas}


def compare(shipped: BoneAgePredictor, candidate: BoneAgePredictor, cases: pd.DataFrame, image_dir: Path,
            cache_dir: Path | None) -> dict:
    e_ship = validation_errors(shipped, cases, image_dir, cache_dir, (shipped.tta,))[shipped.tta]
    res = {"n": len(cases), "shipped": {"tta": shipped.tta, "mae": round(float(np.mean(np.abs(e_ship))), 3)}}
    for tta, e in validation_errors(candidate, cases, image_dir, cache_dir, (False, True)).items():
        diff, lo, hi = bootstrap_ci(np.abs(e) - np.abs(e_ship), n_boot=2000, seed=0)
        res["tta" if tta else "plain"] = {"mae": round(float(np.mean(np.abs(e))), 3),
                                          "minus_shipped": {"mae_diff": round(diff, 3), "ci95": [round(lo, 3), round(hi, 3)]}}
    res["candidate_tta"] = res["tta"]["mae"] < res["plain"]["mae"]
    best = res["tta" if res["candidate_tta"] else "plain"]
    res["passes"] = best["minus_shipped"]["ci95"][0] <= 0
    return res


def native_blind_spot(shipped: BoneAgePredictor, candidate: BoneAgePredictor) -> str:
    """Why the validation split alone cannot judge the candidate ('' when it can): see the module docstring."""
    a, b = shipped.cfg.geometry, candidate.cfg.geometry
    if a.fit != b.fit or a.phases != b.phases:
        how = lambda g: (f"fit {g.fit!r}" + (", uniform bars trimmed" if g.trims else "")  # noqa: E731
                         + (f", read at {g.phases}x{g.phases} phases" if g.phases > 1 else ""))
        return (f"the candidate brings native-size films to its input with {how(b)}, the shipped model with "
                f"{how(a)}; the validation files are already at the base size, so validation cannot measure what "
                "that changes: give labelled native-size radiographs with --native-cases/--native-dir")
    return ""


# inference record -> the model setting whose choice it documents
GEOMETRY_RECORDS = {"phases_chosen_on": "phases", "laterality_chosen_on": "laterality", "trim_chosen_on": "trim_bars"}


def carried_records(shipped: dict, candidate: dict) -> dict:
    """The shipped config's records of how a geometry setting was chosen, for each setting the candidate keeps
    unchanged (a retrained network inherits the choice; its own config, written by training, has no record)."""
    old, new = shipped.get("model", {}), candidate.get("model", {})
    records = shipped.get("inference", {})
    return {k: records[k] for k, field in GEOMETRY_RECORDS.items()
            if k in records and field in old and old.get(field) == new.get(field)}


def adopt(candidate_dir: Path, model_dir: Path, tta: bool, why: str) -> None:
    """Replace ``model_dir`` by the candidate (temporary folder, then rename; the old folder is removed last)."""
    tmp = model_dir.with_name(model_dir.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("model.pt", "history.csv"):
        if (candidate_dir / name).is_file():
            shutil.copy2(candidate_dir / name, tmp / name)
    config = json.loads((candidate_dir / "config.json").read_text())
    shipped_path = model_dir / "config.json"
    shipped = json.loads(shipped_path.read_text()) if shipped_path.is_file() else {}
    # the candidate's other inference records (how its phases or laterality were chosen, members) stay, and
    # so do the shipped model's records of the geometry choices the candidate keeps
    config["inference"] = {**carried_records(shipped, config), **config.get("inference", {}),
                           "tta": tta, "chosen_on": why}
    write_json_atomic(tmp / "config.json", config)
    old = model_dir.with_name(model_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(model_dir, old)
    os.replace(tmp, model_dir)
    shutil.rmtree(old)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", required=True, help="run folder of the retrained model (model.pt, config.json)")
    ap.add_argument("--model-dir", default=str(MODEL_DIR))
    add_path_flags(ap)
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--cache-dir", default=str(REPO_ROOT / "runs" / "cache"))
    ap.add_argument("--max-cases", type=int, help="the first N validation cases only (smoke tests)")
    ap.add_argument("--adopt", action="store_true", help="replace the shipped model when the rule passes")
    ap.add_argument("--native-cases", help="CSV (id, male, boneage) of labelled native-size radiographs; required "
                    "when the candidate's fit differs from the shipped model's (never the official test set)")
    ap.add_argument("--native-dir", help="folder of the --native-cases images (<id>.png, .jpg or .dcm)")
    ap.add_argument("--out", default=str(REPO_ROOT / "runs" / "model_choice.json"))
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    try:
        shipped = BoneAgePredictor.from_dir(args.model_dir)
        candidate = BoneAgePredictor.from_dir(args.candidate)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    splits = pd.read_csv(args.splits, dtype={"id": str})
    val = splits[splits["split"] == "val"].reset_index(drop=True)
    if args.max_cases:
        val = val.head(args.max_cases)
    if bool(args.native_cases) != bool(args.native_dir):
        print("error: give both --native-cases and --native-dir, or neither", file=sys.stderr)
        return 2
    native = None
    if args.native_cases:
        try:
            table = read_cases(args.native_cases, require_age=True)
        except (OSError, ValueError) as exc:
            print(f"error: --native-cases {args.native_cases}: {exc}", file=sys.stderr)
            return 2
        for row, why in table.rejected:
            print(f"native case {row} left out: {why}", file=sys.stderr)
        native = table.cases.reset_index(drop=True)
    res = compare(shipped, candidate, val, data_dir / "train", Path(args.cache_dir))
    blind = native_blind_spot(shipped, candidate)
    if native is not None:
        res["native"] = compare(shipped, candidate, native, Path(args.native_dir), None)
        res["passes"] = res["passes"] and res["native"]["passes"]
    elif blind:
        res["validation_passes"], res["passes"], res["blocked"] = res["passes"], False, blind
    res.update(candidate=str(args.candidate), date=date.today().isoformat())
    write_json_atomic(Path(args.out), res)
    print(json.dumps(res, indent=2))
    if not res["passes"]:
        print(f"not adopted: {blind}" if "blocked" in res else
              "not adopted: the candidate is worse on validation beyond bootstrap noise"
              + (" (or on the native-size cases)" if native is not None else ""))
        return 0
    if args.adopt:
        c = res["tta" if res["candidate_tta"] else "plain"]
        views = json.loads((Path(args.candidate) / "config.json").read_text())["model"].get("tta_views", "zooms")
        why = (f"validation MAE {res['tta']['mae']} with TTA ({views}) vs {res['plain']['mae']} without "
               f"({res['n']} cases, pipelines.choose_model {res['date']})")
        adopt(Path(args.candidate), Path(args.model_dir), res["candidate_tta"], why)
        print(f"adopted {args.candidate} into {args.model_dir} (TTA {'on' if res['candidate_tta'] else 'off'}, "
              f"validation MAE {c['mae']} vs shipped {res['shipped']['mae']}); rerun precompute, evaluate, "
              "benchmark, precision and model_card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
