"""Make the stratified train/val/calib/test split of the RSNA training table and save it.

    python -m pipelines.prepare [--data-dir DIR] [--out artifacts/splits.csv]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from boneage.config import ARTIFACTS_DIR, write_atomic, write_json_atomic
from boneage.training.splits import SplitConfig, make_splits
from boneage.io.tables import read_cases
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags


def prepare_splits(data_dir: Path, out: Path, cfg: SplitConfig = SplitConfig()) -> Path:
    table = read_cases(data_dir / "train.csv", require_age=True)
    for cid, reason in table.rejected:
        print(f"skipped row {cid}: {reason}", file=sys.stderr)
    df = make_splits(table.cases, cfg)
    write_atomic(out, lambda tmp: df.to_csv(tmp, index=False))
    write_json_atomic(out.with_suffix(".json"), {"split_config": cfg, "counts": df["split"].value_counts().to_dict(),
                                                 "source": "train.csv", "rejected_rows": table.rejected})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    out = prepare_splits(data_dir, Path(args.out), SplitConfig(seed=args.seed))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
