"""``artifacts/manifest.json``: every artifact file with its sha256, kind and schema, so the dashboard can
say precisely what is missing or stale instead of failing somewhere deep inside a page.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boneage.config import MODEL_DIR, write_json_atomic
import pandas as pd

MANIFEST_NAME = "manifest.json"
SKIP = {MANIFEST_NAME, "last.pt"}  # resume state is not an artifact the product reads


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def member_dirs(model_dir: str | Path, config: dict) -> list[Path]:
    """The ensemble members' folders (``inference.members`` in config.json, relative to the model folder)."""
    model_dir = Path(model_dir).resolve()
    dirs = []
    for rel in config.get("inference", {}).get("members", []):
        d = (model_dir / rel).resolve()
        if not d.is_relative_to(model_dir):
            raise ValueError(f"ensemble member {rel!r} in {model_dir / 'config.json'} lies outside the model folder")
        dirs.append(d)
    return dirs


def model_fingerprint(model_dir: Path | None = None, members: bool = True) -> str:
    """sha256 of the primary weights, joined with each ensemble member's (``members=False``: the primary's
    alone): which networks made a set of predictions (benchmark, site profiles)."""
    model_dir = Path(MODEL_DIR if model_dir is None else model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    dirs = [model_dir] + (member_dirs(model_dir, config) if members else [])
    return "+".join(sha256_file(d / "model.pt") for d in dirs)


def describe(path: Path) -> tuple[str, object]:
    """(kind, schema) of an artifact file, read from the file itself."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        # deferred: pyarrow only to read parquet schemas when the manifest is built
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        return "table", {name: str(t) for name, t in zip(schema.names, schema.types)}
    if suffix == ".csv":
        head = pd.read_csv(path, nrows=5)
        return "table", {c: str(t) for c, t in head.dtypes.items()}
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        return "array", {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if suffix == ".json":
        obj = json.loads(path.read_text())
        return "json", sorted(obj.keys()) if isinstance(obj, dict) else type(obj).__name__
    if suffix in (".pt", ".pth"):
        return "weights", None
    if suffix in (".md", ".html", ".txt"):
        return "document", None
    if suffix == ".png":
        return "image", None
    return "file", None


def build_manifest(artifacts_dir: Path, model_info: dict | None = None) -> dict:
    artifacts_dir = Path(artifacts_dir)
    files = []
    for p in sorted(artifacts_dir.rglob("*")):
        if not p.is_file() or p.name in SKIP or p.name.endswith(".tmp"):
            continue
        kind, schema = describe(p)
        files.append({"path": p.relative_to(artifacts_dir).as_posix(), "sha256": sha256_file(p), "kind": kind,
                      "schema": schema, "bytes": p.stat().st_size})
    return {"files": files, "model": model_info or {},
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def write_manifest(artifacts_dir: Path, model_info: dict | None = None) -> Path:

    path = Path(artifacts_dir) / MANIFEST_NAME
    write_json_atomic(path, build_manifest(artifacts_dir, model_info))
    return path


@dataclass
class ManifestProblem:
    path: str
    problem: str  # "missing", "changed", "no manifest"

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_manifest(artifacts_dir: Path, required: tuple[str, ...] = ()) -> list[ManifestProblem]:
    """Files listed in the manifest that are missing or whose content changed since it was written,
    plus ``required`` files the manifest does not list. Empty list = all good."""
    artifacts_dir = Path(artifacts_dir)
    mpath = artifacts_dir / MANIFEST_NAME
    if not mpath.is_file():
        return [ManifestProblem(MANIFEST_NAME, "no manifest: run `python -m pipelines.precompute`")]
    manifest = json.loads(mpath.read_text())
    problems, listed = [], set()
    for entry in manifest.get("files", []):
        listed.add(entry["path"])
        p = artifacts_dir / entry["path"]
        if not p.is_file():
            problems.append(ManifestProblem(entry["path"], "missing"))
        elif sha256_file(p) != entry["sha256"]:
            problems.append(ManifestProblem(entry["path"], "changed since the manifest was written (stale)"))
    for r in required:
        if r not in listed:
            problems.append(ManifestProblem(r, "missing (not produced by the last precompute)"))
    return problems
