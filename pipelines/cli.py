"""Command-line plumbing shared by the pipelines."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from boneage.config import DataDirError, resolve_data_dir


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
