"""Compare backbones and input sizes under one equal, short training budget on the same split.

    python -m pipelines.experiments.compare_backbones [--data-dir DIR] [--epochs 2] [--train-cases 3000]

Each candidate (EfficientNet-Lite0 at two input sizes, Lite1, and a small CNN trained from scratch) is
trained with identical settings and seed on the first N cases of the training split and scored on the
validation split and the labelled official test cases. The budget is deliberately small (CPU): the numbers
rank candidates, they are not the shipped model's accuracy. Results: artifacts/comparison.json.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.config import ARTIFACTS_DIR, REPO_ROOT, ModelConfig, TrainConfig, write_json_atomic
from boneage.training.image_cache import load_images
from boneage.nn.forward import run_network
from boneage.inference.predictor import load_model_dir
from boneage.io.tables import read_cases
from boneage.training.loop import train_model
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags

CANDIDATES = (
    ("efficientnet-lite0", 128, "ImageNet"),
    ("efficientnet-lite0", 96, "ImageNet"),
    ("efficientnet-lite1", 128, "ImageNet"),
    ("smallcnn", 128, "from scratch"),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-cases", type=int, default=3000)
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "comparison.json"))
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    splits = pd.read_csv(ARTIFACTS_DIR / "splits.csv", dtype={"id": str})
    cache = REPO_ROOT / "runs" / "cache"
    tr = load_images(splits[splits["split"] == "train"].head(args.train_cases).reset_index(drop=True), data_dir / "train", cache_dir=cache)
    va = load_images(splits[splits["split"] == "val"].reset_index(drop=True), data_dir / "train", cache_dir=cache)
    official = read_cases(data_dir / "test.csv").cases
    off = load_images(official[official["boneage"].notna()].reset_index(drop=True), data_dir / "test")
    results = []
    for backbone, size, init in CANDIDATES:
        cfg = ModelConfig(backbone=backbone, input_size=size)
        tcfg = TrainConfig(epochs=args.epochs, max_train_cases=args.train_cases, patience=99, warmup_epochs=0.3)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            res = train_model(tr.images, tr.cases, va.images, va.cases, tmp, cfg, tcfg, resume=False, progress=False)
            secs = time.time() - t0
            model, _ = load_model_dir(tmp)
            pred = run_network(model, off.images, off.cases["male"].to_numpy())
        row = {"backbone": backbone, "input_size": size, "init": init, "epochs": args.epochs,
               "train_cases": len(tr.images), "val_mae": round(res.best_val_mae, 2),
               "official_test_mae": round(float(np.mean(np.abs(pred.age - off.cases["boneage"].to_numpy()))), 2),
               "train_minutes": round(secs / 60, 1), "load_average_1min": round(os.getloadavg()[0], 2), "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        print(row, flush=True)
        results.append(row)
    write_json_atomic(Path(args.out), {"budget": f"{args.epochs} epochs on the first {len(tr.images)} training-split cases, "
                                       "same seed and settings", "cpu_cores": os.cpu_count(),
                                       "timing_note": "train_minutes are wall-clock on this machine; a load average "
                                       "above the core count means another job shared the CPU", "validation_cases": len(va.images),
                                       "official_test_cases": len(off.images), "results": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
