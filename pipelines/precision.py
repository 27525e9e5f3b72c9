"""Precision benchmark: does the same hand get the same reading however it was framed, rotated or exposed?

    python -m pipelines.precision [--data-dir DIR] [--model-dir artifacts/model] [--n-internal 300]
                                  [--n-official 200] [--out artifacts/precision.json] [--no-diagnostics]

Every perturbation of :mod:`boneage.evidence.precision` is applied to a seeded sample of the internal test split
(100 px files) and to the official test radiographs (native size; no labels needed, so all 200), and the
reading of each perturbed radiograph is compared with the original's. Prints a table and writes the JSON
the Uncertainty page and the model card show. Beside the targets it measures the diagnostics
(:data:`boneage.evidence.precision.DIAGNOSTICS`; ``--no-diagnostics`` leaves them out): changes that keep the hand as
it was and only resample or re-encode its pixels, the floor under every perturbation, never counted in the
targets.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from boneage.config import ARTIFACTS_DIR, MODEL_DIR, to_jsonable, write_json_atomic
from boneage.io.imaging import ImageLoadError, read_radiograph, safe_image_path
from boneage.evidence.precision import (DIAGNOSTICS, PERTURBATIONS, TARGET_MEAN_ABS, TARGET_P95_ABS, PrecisionReport,
                               reading_changes, summarise)
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError, load_predictor
from boneage.io.tables import read_cases
from pipelines.benchmarks.inference import model_fingerprint
from pipelines.cli import data_dir_or_report
from boneage.settings import add_path_flags

SAMPLE_SEED = 0


def _reader(predictor: BoneAgePredictor, progress: bool, label: str, n_changes: int):
    """``predict(arrays, male) -> months`` for :func:`boneage.evidence.precision.reading_changes`, in batches."""
    calls = tqdm(total=n_changes + 1, desc=label, disable=not progress)

    def predict(arrays: list[np.ndarray], male: np.ndarray) -> np.ndarray:
        """Months per array; NaN for one the predictor refuses (a model that reads the hand alone refuses a film
        in which no hand is found), so the statistics count only readings that exist."""
        prepared, ok = [], []
        for i, a in enumerate(arrays):
            try:
                prepared.append(predictor.prepare(a))
                ok.append(i)
            except ImageLoadError:
                pass
        calls.update(1)
        out = np.full(len(arrays), np.nan)
        if ok:
            out[ok] = predictor.read_prepared(prepared, np.asarray(male)[ok]).age
        return out

    return predict


def load_set(cases: pd.DataFrame, image_dir: Path) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """The radiographs as read from file, their sex, their ids, and "id: reason" for each one that could not
    be read."""
    arrays, male, ids, failed = [], [], [], []
    for cid, m in zip(cases["id"].astype(str), cases["male"]):
        try:
            arrays.append(read_radiograph(safe_image_path(image_dir, cid)))
            male.append(bool(m))
            ids.append(cid)
        except ImageLoadError as exc:
            failed.append(f"{cid}: {exc}")
    return arrays, np.array(male, bool), ids, failed


def benchmark_sets(data_dir: Path, splits_path: Path, n_internal: int, n_official: int,
                   internal_split: str = "test") -> list[tuple[str, pd.DataFrame, Path]]:
    """(set name, cases, image folder) of a benchmark's two sets: a seeded sample of ``internal_split``
    (``internal_<split>``) and the first ``n_official`` official test films. The context benchmark uses them too."""
    splits = pd.read_csv(splits_path, dtype={"id": str})
    internal = splits[splits["split"] == internal_split]
    internal = internal.sample(min(n_internal, len(internal)), random_state=SAMPLE_SEED).reset_index(drop=True)
    official = read_cases(data_dir / "test.csv").cases.head(n_official)
    return [(f"internal_{internal_split}", internal, data_dir / "train"), ("official_test", official, data_dir / "test")]


def open_benchmark(ap: argparse.ArgumentParser, args) -> tuple[Path, BoneAgePredictor] | None:
    """The data folder and the model of a benchmark command (``--n-internal``, ``--n-official``, ``--data-dir``,
    ``--model-dir``), or None after saying why (argparse exits for bad counts)."""
    if min(args.n_internal, args.n_official) < 0 or args.n_internal + args.n_official == 0:
        ap.error("--n-internal and --n-official count radiographs: 0 or more each, and at least one in all")
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return None
    try:
        return data_dir, load_predictor(args.model_dir)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def run(predictor: BoneAgePredictor, data_dir: Path, splits_path: Path, n_internal: int, n_official: int,
        progress: bool = True, diagnostics: bool = False, internal_split: str = "test") -> tuple[PrecisionReport, dict]:
    """The benchmark on a seeded sample of ``internal_split`` (set ``internal_<split>``) and the official films."""
    report, sizes = PrecisionReport(), {}
    for name, cases, folder in benchmark_sets(data_dir, splits_path, n_internal, n_official, internal_split):
        arrays, male, _, failed = load_set(cases, folder)
        report.failed[name], sizes[name] = failed, len(arrays)
        if not arrays:  # none asked for (--n-... 0), or none readable (the failures say why): no statistics
            continue
        names = [*PERTURBATIONS, *(DIAGNOSTICS if diagnostics else ())]
        changes = reading_changes(_reader(predictor, progress, name, len(names)), arrays, male, names)
        report.sets[name], report.pooled_sd[name] = summarise({k: changes[k] for k in PERTURBATIONS})
        if diagnostics:
            report.diagnostics[name] = summarise({k: changes[k] for k in DIAGNOSTICS})[0]
    return report, sizes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--model-dir", default=str(MODEL_DIR))
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--n-internal", type=int, default=300,
                    help="seeded sample of the internal split (--internal-split, default test)")
    ap.add_argument("--internal-split", choices=("test", "val", "train"), default="test",
                    help="split the internal sample is drawn from (default test; train shows whether training for "
                         "precision made the network steady on the very images it trained on)")
    ap.add_argument("--n-official", type=int, default=200, help="official test radiographs (first N)")
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "precision.json"))
    ap.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the resampling and re-encoding floor (no targets; written as 'diagnostics'; "
                         "default on)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    opened = open_benchmark(ap, args)
    if opened is None:
        return 2
    data_dir, predictor = opened
    t0 = time.time()
    report, sizes = run(predictor, data_dir, Path(args.splits), args.n_internal, args.n_official, not args.quiet,
                        args.diagnostics, args.internal_split)
    if not report.sets:
        print("error: no radiograph of either set could be read, so nothing was measured: "
              + "; ".join(f for fails in report.failed.values() for f in fails[:3]), file=sys.stderr)
        return 2
    internal = f"internal_{args.internal_split}"
    cfg = predictor.cfg
    out = {
        "model_sha256": model_fingerprint(Path(args.model_dir)),
        "geometry": cfg.geometry.key(), "phases": cfg.geometry.phases, "mirror_invariant": cfg.mirror_invariant, "tta": predictor.tta,
        "targets": {"mean_abs_months": TARGET_MEAN_ABS, "p95_abs_months": TARGET_P95_ABS},
        "sample": {internal: f"{sizes[internal]} cases, pandas sample random_state={SAMPLE_SEED}",
                   "official_test": f"{sizes['official_test']} radiographs (labels not used)"},
        "sets": {k: [to_jsonable(s) for s in v] for k, v in report.sets.items()},
        "test_retest_sd": report.pooled_sd, "failed": report.failed, "all_targets_met": report.all_met(),
        "seconds": round(time.time() - t0, 1),
    }
    if report.diagnostics:
        out["diagnostics"] = {k: [{f: v for f, v in to_jsonable(s).items() if f != "meets_target"} for s in rows]
                              for k, rows in report.diagnostics.items()}
    write_json_atomic(Path(args.out), out)
    for name, stats in report.sets.items():
        print(f"\n{name} ({sizes[name]} images; test-retest SD over all perturbations "
              f"{report.pooled_sd[name]:.2f} months)")
        print(f"  {'perturbation':<16}{'mean |d|':>10}{'p95 |d|':>10}{'mean d':>9}{'SD':>7}  target")
        rows = [(s, "met" if s.meets_target else "missed") for s in stats]
        for s, verdict in rows + [(s, "diagnostic") for s in report.diagnostics.get(name, [])]:
            print(f"  {s.name:<16}{s.mean_abs:>10.2f}{s.p95_abs:>10.2f}{s.mean_signed:>9.2f}{s.test_retest_sd:>7.2f}  "
                  f"{verdict}")
    print(f"\nwrote {args.out} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
