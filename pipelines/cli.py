"""Command-line plumbing shared by the pipelines."""
from __future__ import annotations

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
