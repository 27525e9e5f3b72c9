"""Collect training runs made at several base sizes into one ``resolution_curve`` experiment entry.

    python -m pipelines.experiments.resolution_curve RUN_DIR [RUN_DIR ...] --name NAME --command CMD --decision TEXT \\
        [--input-rule TEXT] [--append artifacts/experiments.json]

Each RUN_DIR is a ``pipelines.train`` output folder (``config.json`` + ``history.csv``); the entry lists,
per run, its base size, input size, best validation MAE, validation MAE by epoch and minutes. With
``--append`` the entry is added to the experiments file (written atomically), where the model card reads it
(``pipelines.model_card.resolution_curve_lines``); otherwise it is printed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from boneage.config import write_atomic


def curve_point(run_dir: Path) -> dict:
    """One run's point of the curve; raises FileNotFoundError naming a missing file."""
    cfg_path, hist_path = run_dir / "config.json", run_dir / "history.csv"
    for f in (cfg_path, hist_path):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: is {run_dir} a finished pipelines.train run?")
    cfg = json.loads(cfg_path.read_text())
    hist = pd.read_csv(hist_path)
    point = {"base_size": int(cfg["model"]["base_size"]), "input_size": int(cfg["model"]["input_size"]),
             "fit": cfg["model"].get("fit", "squeeze"), "best_val_mae": round(float(cfg["best_val_mae"]), 3),
             "best_weights": cfg.get("best_weights", "raw"), "epochs_run": int(cfg["epochs_run"]),
             "n_train": int(cfg["n_train"]), "n_val": int(cfg["n_val"]),
             "val_mae_by_epoch": [round(float(v), 2) for v in hist["val_mae"]],
             "train_minutes": round(float(cfg["train_seconds"]) / 60, 1)}
    if "val_mae_ema" in hist.columns:
        point["val_mae_ema_by_epoch"] = [round(float(v), 2) for v in hist["val_mae_ema"]]
    return point


def curve_entry(run_dirs: list[Path], name: str, command: str, decision: str, input_rule: str = "") -> dict:
    points = sorted((curve_point(Path(d)) for d in run_dirs), key=lambda p: p["base_size"])
    return {"name": name, "command": command, "shipped": False, "decision": decision,
            "resolution_curve": {"input_rule": input_rule, "points": points}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--decision", required=True)
    ap.add_argument("--input-rule", default="")
    ap.add_argument("--append", help="experiments.json to append the entry to")
    args = ap.parse_args(argv)
    try:
        entry = curve_entry([Path(r) for r in args.runs], args.name, args.command, args.decision, args.input_rule)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    if not args.append:
        print(json.dumps(entry, indent=1))
        return 0
    path = Path(args.append)
    doc = json.loads(path.read_text()) if path.is_file() else {"experiments": []}
    doc["experiments"].append(entry)
    # the file's own layout (one-space indent, non-ASCII kept), so an append is a small diff
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False)))
    print(f"appended '{args.name}' ({len(entry['resolution_curve']['points'])} points) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
