"""Evaluate the shipped model: internal test split and the 100 labelled official test cases.

    python -m pipelines.evaluate [--data-dir DIR] [--model-dir artifacts/model] [--out artifacts/metrics.json]

Metrics (MAE, RMSE, bias, R^2, share within 6/12/24 months, stage accuracy, macro F1, quadratic weighted
kappa, ROC-AUC), overall, by sex and by age band. Unlabelled official test rows are predicted but never
scored.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from boneage.config import ARTIFACTS_DIR, DataDirError, resolve_data_dir, write_json_atomic
from boneage.evaluation.metrics import grouped_metrics
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError, load_predictor
from boneage.io.tables import read_cases
from boneage.inference.assess import assess_cases
from boneage.settings import add_path_flags


def evaluate(predictor: BoneAgePredictor, data_dir: Path, splits_path: Path, max_cases: int | None = None) -> dict:
    splits = pd.read_csv(splits_path, dtype={"id": str})
    internal = splits[splits["split"] == "test"].reset_index(drop=True)
    official = read_cases(data_dir / "test.csv").cases
    if max_cases:
        internal, official = internal.head(max_cases), official.head(max_cases)
    result = {}
    for name, cases, image_dir in (("internal_test", internal, data_dir / "train"),
                                   ("official_test", official, data_dir / "test")):
        t0 = time.time()
        pred = assess_cases(cases, image_dir, predictor=predictor)
        pred["boneage"] = cases["boneage"].to_numpy()
        ok = pred[pred["error"] == ""]
        labelled = ok[ok["boneage"].notna()]
        result[name] = {"n_cases": int(len(cases)), "n_failed": int(len(cases) - len(ok)),
                        "n_labelled": int(len(labelled)), "seconds": round(time.time() - t0, 1),
                        **grouped_metrics(labelled, predictor.cfg.stages)}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    add_path_flags(ap, data=False, model=True)
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "metrics.json"))
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="average over the model's test-time augmentation passes (ModelConfig.tta_views; default: the model's stored choice, inference.tta in config.json)")
    ap.add_argument("--ensemble", action=argparse.BooleanOptionalAction, default=True,
                    help="average the ensemble members listed in config.json (default); --no-ensemble: the "
                    "primary network alone")
    ap.add_argument("--max-cases", type=int, help="evaluate the first N cases of each set (smoke tests)")
    args = ap.parse_args(argv)
    try:
        data_dir = resolve_data_dir(args.data_dir)
        predictor = load_predictor(args.model_dir, tta=args.tta, ensemble=args.ensemble)
    except (DataDirError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = evaluate(predictor, data_dir, Path(args.splits), args.max_cases)
    res["tta"] = predictor.tta
    res["networks"] = 1 + len(predictor.members)
    write_json_atomic(Path(args.out), res)
    for name in ("internal_test", "official_test"):
        o = res[name]["overall"]
        print(f"{name}: n={o['n']} MAE {o['mae']:.2f} RMSE {o['rmse']:.2f} bias {o['bias']:+.2f} R2 {o['r2']:.3f} "
              f"stage acc {o['stage_accuracy']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
