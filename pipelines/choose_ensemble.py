"""Decide on the validation split whether a separately trained network should join the shipped model.

    python -m pipelines.choose_ensemble --member runs/seed7 [--adopt seed7] [--out runs/ensemble_choice.json]

Why a rule and not a look: averaging networks almost always moves the validation MAE by a few hundredths
either way, and chasing such noise is how a test set ends up tuned on. A candidate is adopted only when
the ensemble is better on the validation split with a paired bootstrap 95 % interval of the MAE difference
entirely below zero. Test sets are not read here.

``--adopt NAME`` (only when the rule passes) copies the candidate's ``model.pt`` and ``config.json`` into
``<model-dir>/members/NAME/`` and lists it in ``config.json`` (``inference.members``). Its conformal intervals
were calibrated on the old predictions: rerun ``python -m pipelines.precompute`` (and evaluate, benchmark,
model_card) afterwards.
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
from boneage.nn.forward import run_network
from boneage.evaluation.metrics import bootstrap_ci
from boneage.inference.predictor import BoneAgePredictor, load_model_dir
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


def compare(predictor: BoneAgePredictor, candidate, images: np.ndarray, male: np.ndarray, age: np.ndarray) -> dict:
    """Validation numbers for the model as shipped, the candidate alone and both averaged (TTA off and on).

    The ensemble's age is derived rather than run again: :func:`boneage.nn.forward.forward_batch` weighs
    every network equally over the same passes, so adding one network to ``n`` gives
    ``(n * shipped + candidate) / (n + 1)`` (tests/inference/test_ensemble.py checks that identity).
    """
    res: dict = {}
    n = 1 + len(predictor.members)
    for tta in (False, True):
        tag = "tta" if tta else "plain"
        shipped = predictor.with_options(tta=tta).predict_preprocessed(images, male).age
        alone = run_network(candidate, images, male, tta=tta).age
        both = (n * shipped + alone) / (n + 1)
        e_shipped, e_alone, e_both = shipped - age, alone - age, both - age
        diff, lo, hi = bootstrap_ci(np.abs(e_both) - np.abs(e_shipped), n_boot=2000, seed=0)
        res[tag] = {"shipped_mae": round(float(np.mean(np.abs(e_shipped))), 3),
                    "candidate_mae": round(float(np.mean(np.abs(e_alone))), 3),
                    "ensemble_mae": round(float(np.mean(np.abs(e_both))), 3),
                    "ensemble_minus_shipped": {"mae_diff": round(diff, 3), "ci95": [round(lo, 3), round(hi, 3)]},
                    "error_correlation": round(float(np.corrcoef(e_shipped, e_alone)[0, 1]), 3)}
    return res


def passes_rule(result: dict, tta: bool) -> bool:
    """The adoption rule: the ensemble's paired 95 % interval of the MAE difference lies below zero."""
    return result["tta" if tta else "plain"]["ensemble_minus_shipped"]["ci95"][1] < 0


def adopt(model_dir: Path, candidate_dir: Path, name: str, reason: str) -> Path:
    """Copy the candidate into ``members/NAME`` (via a temporary folder, renamed at the end) and list it."""
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"member name {name!r}: use letters, digits, '-' and '_' only")
    dest = model_dir / "members" / name
    if dest.exists():
        raise FileExistsError(f"{dest} exists already: pick another --adopt name or remove it first")
    tmp = dest.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("model.pt", "config.json", "history.csv"):
        if (candidate_dir / f).is_file():
            shutil.copy2(candidate_dir / f, tmp / f)
    os.replace(tmp, dest)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    inference = config.setdefault("inference", {})
    inference["members"] = [*inference.get("members", []), f"members/{name}"]
    inference["members_chosen_on"] = reason
    write_json_atomic(config_path, config)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--model-dir", default=str(MODEL_DIR))
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--member", required=True, help="the candidate's run folder (model.pt + config.json)")
    ap.add_argument("--adopt", metavar="NAME", help="add the candidate as members/NAME if it passes the rule")
    ap.add_argument("--cache-dir", default=str(REPO_ROOT / "runs" / "cache"))
    ap.add_argument("--out", help="write the comparison as JSON here")
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    model_dir, candidate_dir = Path(args.model_dir), Path(args.member)
    predictor = BoneAgePredictor.from_dir(model_dir)
    candidate, _ = load_model_dir(candidate_dir)
    splits = pd.read_csv(args.splits, dtype={"id": str})
    val = load_images(splits[splits["split"] == "val"].reset_index(drop=True), data_dir / "train",
                      predictor.cfg.geometry, cache_dir=args.cache_dir, progress=False)
    male = val.cases["male"].to_numpy().astype(bool)
    res = {"candidate": str(candidate_dir), "validation_cases": len(val.images),
           **compare(predictor, candidate, val.images, male, val.cases["boneage"].to_numpy(float))}
    for tag in ("plain", "tta"):
        r = res[tag]
        d = r["ensemble_minus_shipped"]
        print(f"validation ({tag}): shipped {r['shipped_mae']:.3f}, candidate {r['candidate_mae']:.3f}, ensemble "
              f"{r['ensemble_mae']:.3f} (difference {d['mae_diff']:+.3f}, 95% CI {d['ci95'][0]:+.3f} to "
              f"{d['ci95'][1]:+.3f}); error correlation {r['error_correlation']:.3f}")
    ok = passes_rule(res, predictor.tta)
    res["passes_rule"] = ok
    if args.out:
        write_json_atomic(Path(args.out), res)
    if args.adopt:
        if not ok:
            print("not adopted: the ensemble is not better on validation beyond bootstrap noise", file=sys.stderr)
            return 1
        r = res["tta" if predictor.tta else "plain"]
        reason = (f"validation split ({len(val.images)} cases, pipelines.choose_ensemble, {date.today()}): MAE "
                  f"{r['ensemble_mae']:.3f} with {candidate_dir.name} against {r['shipped_mae']:.3f} without, paired "
                  f"bootstrap 95% CI of the difference {r['ensemble_minus_shipped']['ci95'][0]:+.3f} to "
                  f"{r['ensemble_minus_shipped']['ci95'][1]:+.3f}")
        dest = adopt(model_dir, candidate_dir, args.adopt, reason)
        print(f"adopted as {dest}; now rerun python -m pipelines.precompute (intervals), evaluate, benchmark, model_card")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
