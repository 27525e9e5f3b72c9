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
