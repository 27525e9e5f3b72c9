"""Command-line plumbing shared by the pipelines."""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from boneage.config import ARTIFACTS_DIR, DataDirError, resolve_data_dir
from boneage.settings import add_path_flags


def data_dir_or_report(arg: str | None) -> Path | None:
    """The RSNA data folder from ``--data-dir`` or ``$BONEAGE_DATA``; None after printing why it is unusable
    (the caller then exits with status 2)."""
    try:
        return resolve_data_dir(arg)
    except DataDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def check_sets(splits_path: str | Path, data_dir: Path, max_cases: int | None = None) -> dict[str, tuple[list[str], Path]]:
    """``{name: (ids, folder)}`` of the training, validation and internal test splits and of the official
    test films (the first ``max_cases`` of each): what the learned input checks (negatives, laterality) are
    fitted on (``train``) and counted on (the others)."""
    import pandas as pd

    splits = pd.read_csv(splits_path, dtype={"id": str})
    out = {s: (splits.loc[splits["split"] == s, "id"].tolist()[:max_cases], data_dir / "train")
           for s in ("train", "val", "test")}
    out["official_test"] = (sorted(p.stem for p in (data_dir / "test").glob("*.png"))[:max_cases], data_dir / "test")
    return out


def check_fit_parser(description: str, out_default: Path) -> argparse.ArgumentParser:
    """The options every learned input check's fitting CLI takes (``fit_polarity``, ``fit_laterality``): the
    data folder, the splits file, where the coefficients go and a smoke-test cap; each adds its own."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--out", default=str(out_default))
    ap.add_argument("--max-cases", type=int, help="use the first N cases of each set (smoke tests)")
    return ap


def read_films(ids: list[str], image_dir: Path, desc: str,
               transform: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """The radiographs ``ids`` of ``image_dir`` as read from file (then ``transform``-ed), with a progress bar;
    a film that cannot be read is skipped with its reason on stderr, and the rest are still read."""
    from tqdm import tqdm

    from boneage.io.imaging import ImageLoadError, read_radiograph, safe_image_path

    out = []
    for cid in tqdm(ids, desc=desc, mininterval=5):
        try:
            arr = read_radiograph(safe_image_path(image_dir, cid))
        except ImageLoadError as exc:
            print(f"skipped {cid}: {exc}", file=sys.stderr)
            continue
        out.append(transform(arr) if transform is not None else arr)
    return out


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server a benchmark or test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """Ask ``proc`` to terminate, and kill it when it has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
