"""Fit the learned polarity check (is a radiograph a negative?) and measure it on held-out images.

    python -m pipelines.fit_polarity [--data-dir DIR] [--out boneage/geometry/polarity.json] [--max-cases N]

Fits on the training split's images and their negatives, at several exposures (see :mod:`boneage.geometry.polarity`),
then counts, on the validation and internal test splits and on the official test images, how many normal
images it would flip (must be none), also once brightened (gamma 0.7) or darkened (gamma 1.4), and how many
negatives it catches. The counts are stored with the coefficients.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from boneage.geometry.polarity import COEF_PATH, REFERENCE_SIZE, PolarityCheck, exposed, fit_polarity_check
from boneage.geometry.preprocess import squeeze_to_base
from pipelines.cli import check_fit_parser, check_sets, data_dir_or_report, read_films

# the check reads every film squeezed to its reference size
_at_reference = partial(squeeze_to_base, base_size=REFERENCE_SIZE)


def held_out_counts(check: PolarityCheck, images: list[np.ndarray]) -> dict:
    """How many normal images the check would flip, as they are and at gamma 0.7 and 1.4 (the exposures of
    the precision benchmark), and how many of their negatives it catches."""
    normal = np.array([check.probability(a) for a in images])
    out = {"n": len(images), "normal_flipped": sum(check.is_inverted(a) for a in images),
           "negatives_caught": sum(check.is_inverted(a.max() + a.min() - a) for a in images),
           "max_p_normal": round(float(normal.max()), 4) if len(normal) else None}
    for g in (0.7, 1.4):
        out[f"normal_flipped_gamma_{g}"] = sum(check.is_inverted(exposed(a, g)) for a in images)
    return out


def main(argv=None) -> int:
    ap = check_fit_parser(__doc__, COEF_PATH)
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    sets = check_sets(args.splits, data_dir, args.max_cases)
    train = read_films(*sets.pop("train"), "training images", _at_reference)
    check = fit_polarity_check(train, threshold=args.threshold,
                               fitted_on=f"training split ({len(train)} images) and their negatives")
    check.evaluation = {"train": held_out_counts(check, train)}
    for name, (ids, folder) in sets.items():
        check.evaluation[name] = held_out_counts(check, read_films(ids, folder, name, _at_reference))
    check.save(Path(args.out))
    for name, c in check.evaluation.items():
        print(f"{name}: n={c['n']} normal images flipped {c['normal_flipped']} (at gamma 0.7: "
              f"{c['normal_flipped_gamma_0.7']}, 1.4: {c['normal_flipped_gamma_1.4']}), negatives caught "
              f"{c['negatives_caught']}/{c['n']}, highest P(negative) of a normal image {c['max_p_normal']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
