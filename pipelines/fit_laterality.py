"""Fit the learned laterality check (is this a right hand?) and measure it on held-out images.

    python -m pipelines.fit_laterality [--data-dir DIR] [--out boneage/geometry/laterality.json] [--max-cases N]

Fits on the training split's prepared images (background 0, bone 1, at the 100 px reference size) and on one
acquisition change of each (a turn of up to 15 degrees, an exposure, a JPEG, a lower resolution, a crop or a
border), so the answer holds when a film is taken differently (see :mod:`boneage.geometry.laterality`). About 2 % of
the RSNA films are right hands, labelled like the rest: a first fit finds them (score > 0), their label is
turned, and the check is fitted again.

Measured on the validation and internal test splits and the official test films: the share taken for right
hands, and the share whose answer changes under each perturbation of the precision benchmark (a changed
answer mirrors the film one way and not the other, and moves the reading). A film and its mirror image always
get opposite answers, by construction. The numbers are stored with the coefficients.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from boneage.geometry.acquisition import FAMILIES, acquired
from boneage.geometry.laterality import COEF_PATH, REFERENCE_SIZE, LateralityCheck, fit_laterality_check, mirror_contrast
from boneage.geometry.polarity import exposed
from boneage.evidence.precision import PERTURBATIONS
from boneage.geometry.preprocess import prepare
from pipelines.cli import check_fit_parser, check_sets, data_dir_or_report, read_films


def _reference(arr: np.ndarray) -> np.ndarray:
    """A raw radiograph as the check reads it: prepared at the reference size (the first, plain view)."""
    return prepare(arr, REFERENCE_SIZE).image


def changed(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random acquisition change of a prepared image: one of :data:`boneage.geometry.acquisition.FAMILIES`, a turn
    (the acquisition's ``rotate`` family) or an exposure."""
    families = FAMILIES + ("rotate",)
    kind = rng.integers(0, len(families) + 1)
    if kind == len(families):
        return exposed(img, float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))))
    return acquired(img, families[kind], float(rng.uniform()))


def held_out(check: LateralityCheck, raws: list[np.ndarray]) -> dict:
    """Share taken for right hands, and per precision perturbation the share whose answer changes."""
    base = np.array([check.is_right(_reference(a)) for a in raws])
    out = {"n": len(raws), "taken_right": int(base.sum()), "answer_changed": {}}
    for name, (_, fn) in PERTURBATIONS.items():
        if name == "mirror":
            continue
        moved = np.array([check.is_right(_reference(fn(a))) for a in raws]) != base
        out["answer_changed"][name] = round(float(moved.mean()), 4)
    return out


def main(argv=None) -> int:
    ap = check_fit_parser(__doc__, COEF_PATH)
    ap.add_argument("--C", type=float, default=0.1, help="inverse regularisation of the logistic regression")
    ap.add_argument("--held-out-cases", type=int, default=400,
                    help="validation / internal test cases measured under every perturbation (each is read 9 "
                         "times); the official films are all measured")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    sets = check_sets(args.splits, data_dir, args.max_cases)
    rng = np.random.default_rng(args.seed)
    train_raw = read_films(*sets.pop("train"), "training images")
    train = [_reference(a) for a in tqdm(train_raw, desc="prepare", mininterval=5)]
    del train_raw
    plain = np.array([mirror_contrast(a) for a in tqdm(train, desc="features", mininterval=5)])
    varied = np.array([mirror_contrast(changed(a, rng)) for a in tqdm(train, desc="changed", mininterval=5)])
    first = fit_laterality_check(np.concatenate([plain, varied]), C=args.C)
    right = np.array([first.is_right(a) for a in train])
    sign = np.where(right, -1.0, 1.0)[:, None]  # a right hand's contrast, negated, is a left hand's
    check = fit_laterality_check(np.concatenate([plain * sign, varied * sign]), C=args.C, fitted_on=(
        f"training split ({len(train)} images, {int(right.sum())} taken for right hands by a first fit and "
        f"turned), one acquisition change of each, and their mirror images; C={args.C}, seed {args.seed}"))
    evaluation = {"train": {"n": len(train), "taken_right_first_fit": int(right.sum()),
                            "taken_right": int(sum(check.is_right(a) for a in train))}}
    for name, (ids, folder) in sets.items():
        ids = ids if name == "official_test" else ids[:args.held_out_cases]
        evaluation[name] = held_out(check, read_films(ids, folder, name))
    check.evaluation = evaluation
    check.save(Path(args.out))
    for name, c in evaluation.items():
        moved = ", ".join(f"{k} {v:.1%}" for k, v in c.get("answer_changed", {}).items())
        print(f"{name}: n={c['n']} taken for right hands {c['taken_right']}" + (f"; answer changed: {moved}" if moved else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
