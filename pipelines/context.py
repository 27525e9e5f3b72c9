"""Context benchmark: does the reading move when only what lies outside the hand changes?

    python -m pipelines.context [--data-dir DIR] [--model-dir artifacts/model] [--n-internal 200]
                                [--n-official 200] [--out artifacts/context.json]

Each variant of :mod:`boneage.evidence.context` (background blacked out, noise, burnt-in labels, a plate edge,
a ruler, a second object) changes the film outside a dilated hand region only; the reading of the changed
film is compared with the original's on a seeded sample of the internal test split (100 px files) and on
the official test radiographs (labels not used). Prints a table and writes the JSON the model card shows.
Target: a mean change of at most 1.5 months per variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from boneage.config import ARTIFACTS_DIR, MODEL_DIR, to_jsonable, write_json_atomic
from boneage.evidence.context import SEED, TARGET_MEAN_ABS, VARIANTS, context_changes, summarise
from boneage.settings import add_path_flags
from pipelines.benchmarks.inference import model_fingerprint
from pipelines.precision import SAMPLE_SEED, _reader, benchmark_sets, load_set, open_benchmark


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--model-dir", default=str(MODEL_DIR))
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--n-internal", type=int, default=200, help="seeded sample of the internal test split")
    ap.add_argument("--n-official", type=int, default=200, help="official test radiographs (first N)")
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "context.json"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    opened = open_benchmark(ap, args)
    if opened is None:
        return 2
    data_dir, predictor = opened
    t0 = time.time()
    sets, failed, sample = {}, {}, {}
    for name, cases, folder in benchmark_sets(data_dir, Path(args.splits), args.n_internal, args.n_official):
        films, male, ids, failed[name] = load_set(cases, folder)
        sample[name] = len(cases)
        if not films:
            continue
        changes, left_out = context_changes(_reader(predictor, not args.quiet, name, len(VARIANTS)), films, male, ids)
        sets[name] = summarise(changes, left_out)
    if not sets:
        print("error: no radiograph of either set could be read, so nothing was measured", file=sys.stderr)
        return 2
    out = {
        "model_sha256": model_fingerprint(Path(args.model_dir)), "geometry": predictor.cfg.geometry.key(),
        "tta": predictor.tta, "target_mean_abs_months": TARGET_MEAN_ABS, "variant_seed": SEED,
        "variants": {k: v[0] for k, v in VARIANTS.items()},
        "sample": {"internal_test": f"{sample['internal_test']} cases, pandas sample random_state={SAMPLE_SEED}",
                   "official_test": f"{sample['official_test']} radiographs (labels not used)"},
        "sets": {k: [to_jsonable(s) for s in v.stats] for k, v in sets.items()},
        "left_out": {k: v.left_out for k, v in sets.items()}, "failed": failed,
        "all_targets_met": all(v.all_met() for v in sets.values()), "seconds": round(time.time() - t0, 1),
    }
    write_json_atomic(Path(args.out), out)
    for name, s in sets.items():
        print(f"\n{name} ({s.stats[0].n if s.stats else 0} films read, {len(s.left_out)} left out: hand not found)")
        print(f"  {'variant':<15}{'mean |d|':>10}{'p95 |d|':>10}{'mean d':>9}  target {TARGET_MEAN_ABS}")
        for st in s.stats:
            print(f"  {st.name:<15}{st.mean_abs:>10.2f}{st.p95_abs:>10.2f}{st.mean_signed:>9.2f}  "
                  f"{'met' if st.meets_target else 'missed'}")
    print(f"\nwrote {args.out} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
