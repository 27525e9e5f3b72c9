"""Benchmark the shipped model: load time, single-radiograph latency end to end, and accuracy.

    python -m pipelines.benchmarks.inference [--data-dir DIR] [--repeats 30] [--out artifacts/benchmark.json]

Latency = read the file + preprocess + network (+ conformal intervals), one radiograph at a time, after the
model is loaded; median and 90th percentile over real official test radiographs (native size).
Targets: load < 3 s, median < 100 ms; official test MAE <= 7.0, internal test MAE <= 8.5 months.
``--skip-accuracy`` measures speed only and keeps the MAE fields already in ``--out`` when they were
measured on the same weights (``model_sha256``).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from boneage.config import ARTIFACTS_DIR, write_json_atomic
from boneage.store.manifest import model_fingerprint
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


# Accuracy variants: TTA off / on, and the same with the ensemble members (when the model has any).
ACCURACY_TAGS = ("plain", "tta", "plain_ensemble", "tta_ensemble")


def _accuracy_of_same_model(out: Path, model_sha: str) -> dict:
    """With --skip-accuracy, the MAE fields of an earlier run are kept if (and only if) it measured the same
    weights, so a speed-only rerun neither loses them nor pairs them with another model."""
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    if old.get("model_sha256") != model_sha:
        return {}
    return {k: v for k, v in old.items() if k.endswith(tuple(f"_mae_{tag}" for tag in ACCURACY_TAGS))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "benchmark.json"), help="write the numbers as JSON here (read by the model card)")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    from boneage.inference.predictor import BoneAgePredictor

    predictor = BoneAgePredictor.from_dir()
    load_s = time.perf_counter() - t0

    files = sorted((data_dir / "test").glob("*.png"))[: args.repeats + 3]
    t = time.perf_counter()
    predictor.predict_file(files[0], True)  # warm-up: also traces the fast network once
    first_s = time.perf_counter() - t
    lat = []
    for f in files[3:]:
        t = time.perf_counter()
        predictor.predict_file(f, True)
        lat.append((time.perf_counter() - t) * 1000)
    res = {"hardware": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "model_load_s": round(load_s, 3),
           "first_prediction_s": round(first_s, 3),
           "latency_ms_median": round(float(np.median(lat)), 1), "latency_ms_p90": round(float(np.percentile(lat, 90)), 1),
           "latency_n": len(lat), "latency_tta": predictor.tta, "networks": 1 + len(predictor.members), "model_sha256": model_fingerprint()}
    print(f"model load: {load_s:.2f} s (target < 3 s); first prediction (traces the network once): {first_s:.2f} s")
    print(f"single radiograph end to end: median {res['latency_ms_median']:.1f} ms, p90 {res['latency_ms_p90']:.1f} ms "
          f"over {len(lat)} native-size test images, TTA {'on' if predictor.tta else 'off'} (target median < 100 ms)")
    if not args.skip_accuracy:
        from pipelines.evaluate import evaluate

        for ensemble in (False, True) if predictor.members else (False,):
            for tta in (False, True):
                ev = evaluate(predictor.with_options(tta=tta, ensemble=ensemble), data_dir, ARTIFACTS_DIR / "splits.csv")
                tag = ("tta" if tta else "plain") + ("_ensemble" if ensemble else "")
                for name, target in (("official_test", 7.0), ("internal_test", 8.5)):
                    mae = ev[name]["overall"]["mae"]
                    res[f"{name}_mae_{tag}"] = round(mae, 3)
                    print(f"{name} MAE ({tag}): {mae:.2f} months on {ev[name]['overall']['n']} cases "
                          f"(target <= {target})")
    elif args.out:
        res.update(_accuracy_of_same_model(Path(args.out), res["model_sha256"]))
    if args.out:
        write_json_atomic(Path(args.out), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
