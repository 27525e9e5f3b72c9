"""The explanation audit on a fixed seeded sample: artifacts/explanation_audit.json (+ per-case parquet).

    boneage explanation-audit [--max-cases N] [--data-dir DIR] [--artifacts-dir DIR]

the same as ``boneage precompute --only explanations`` (which this command runs).

(``--max-cases N``: N cases per set instead of 60, for smoke tests; the manifest is rewritten afterwards.)

The sample: 60 cases (``DEFAULT_CASES``) drawn with a fixed seed from the internal test split (``artifacts/splits.csv``,
split == test) and as many from the 200 official test radiographs (no labels needed). The rules of every
number are in :mod:`boneage.evidence.explanation_audit`. The JSON also stores the sha256 of the model it explained, so
the dashboard can tell when it is stale.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.config import write_atomic, write_json_atomic
from boneage.settings import add_path_flags
from boneage.training.image_cache import load_case_image
from boneage.evidence.explanation_audit import AUDIT_FILE, CASES_FILE, AuditCase, AuditConfig, run_audit
from boneage.geometry.framing import Geometry
from boneage.io.imaging import ImageLoadError
from boneage.geometry.preprocess import to_uint8
from boneage.io.tables import read_cases

SAMPLE_SEED = 17
DEFAULT_CASES = 60


def sample_cases(art: Path, data_dir: Path, n: int, seed: int = SAMPLE_SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fixed seeded sample: ``n`` internal test cases and ``n`` official test cases (id, male, boneage)."""
    splits = pd.read_csv(art / "splits.csv", dtype={"id": str})
    test = splits[splits["split"] == "test"]
    official = read_cases(data_dir / "test.csv").cases
    official["id"] = official["id"].astype(str)
    pick = lambda d: d.sample(n=min(n, len(d)), random_state=seed).reset_index(drop=True)  # noqa: E731
    return pick(test), pick(official)


def load_audit_cases(data_dir: Path, internal: pd.DataFrame, official: pd.DataFrame, geometry: Geometry,
                     log) -> tuple[list[AuditCase], list[dict]]:
    """The sample's images prepared in the audited model's own geometry (what its network reads, framing
    included); unreadable ones are reported and skipped."""
    cases, failed = [], []
    for set_name, frame, folder in (("test", internal, data_dir / "train"), ("official_test", official, data_dir / "test")):
        for r in frame.itertuples(index=False):
            try:
                img = to_uint8(load_case_image(folder, str(r.id), geometry))
            except ImageLoadError as exc:
                failed.append({"id": str(r.id), "set": set_name, "reason": str(exc)})
                continue
            ref = getattr(r, "boneage", float("nan"))
            cases.append(AuditCase(id=str(r.id), set=set_name, image=img, male=bool(r.male),
                                   boneage=float(ref) if pd.notna(ref) else float("nan")))
    if failed:
        log(f"explanation audit: {len(failed)} image(s) could not be read: " + "; ".join(f["id"] for f in failed))
    return cases, failed


def run(art: Path, data_dir: Path, n_cases: int = DEFAULT_CASES, log=print, cfg: AuditConfig | None = None) -> dict:
    """Run the audit and write ``AUDIT_FILE`` and ``CASES_FILE`` into ``art`` (atomically); returns the summary."""
    from boneage.store.manifest import sha256_file
    from boneage.inference.predictor import load_predictor

    t0 = time.time()
    predictor = load_predictor(art / "model")
    internal, official = sample_cases(art, data_dir, n_cases)
    cases, failed = load_audit_cases(data_dir, internal, official, predictor.cfg.geometry, log)
    if not cases:
        raise RuntimeError("explanation audit: none of the sampled radiographs could be read (see above)")
    cfg = cfg or AuditConfig(sanity_cases=max(1, min(AuditConfig().sanity_cases, n_cases)))
    log(f"explanation audit: {len(cases)} cases, methods {', '.join(cfg.methods)}")
    result = run_audit(predictor.model, cases, cfg, log=log)
    summary = result.summary
    summary["model_sha256"] = sha256_file(art / "model" / "model.pt")
    summary["sample"] = {"seed": SAMPLE_SEED, "per_set": n_cases, "failed": failed,
                         "rule": "seeded random sample of the internal test split (splits.csv) and of the official "
                                 "test radiographs"}
    summary["runtime_seconds"] = round(time.time() - t0, 1)
    write_atomic(art / CASES_FILE, lambda tmp: result.cases.to_parquet(tmp, index=False))
    write_json_atomic(art / AUDIT_FILE, summary)
    d = summary["default_method"]
    log(f"explanation audit: {summary['runtime_seconds']:.0f}s; default method {d['method']}; "
        f"{summary['verdict']['text']}")
    return summary


def main(argv=None) -> int:
    """``precompute --only explanations`` with these options: the audit, then the manifest rewritten."""
    import argparse

    from pipelines import precompute

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap, artifacts=True)
    ap.add_argument("--max-cases", type=int, default=None, help=f"cases per set (default {DEFAULT_CASES})")
    args = ap.parse_args(argv)
    forward = ["--only", "explanations"]
    for flag, value in (("--data-dir", args.data_dir), ("--artifacts-dir", args.artifacts_dir),
                        ("--max-cases", args.max_cases)):
        if value is not None:
            forward += [flag, str(value)]
    return precompute.main(forward)


if __name__ == "__main__":
    raise SystemExit(main())
