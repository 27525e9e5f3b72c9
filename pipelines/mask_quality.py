"""Mask-quality report: how often the hand segmentation fails, per split, and how stable it is under re-acquisition.

    python -m pipelines.mask_quality [--data-dir DIR] [--n-internal 500] [--n-official 200] [--n-stability 100]
                                     [--out artifacts/mask_quality.json] [--sheet docs/images/mask_quality_worst.png]
                                     [--films-sheet runs/mask_quality_films.png]

Failure rates (:func:`boneage.evidence.mask_quality.failure_rates`) on seeded samples of the internal train,
validation and test splits and on all official test films, each prepared with the shipped model's geometry;
stability (:func:`boneage.evidence.mask_quality.stability`) on the first ``--n-stability`` films of the internal
test sample and of the official set. The contact sheet of the worst cases shows the outlines only, never
the films (radiographs are not committed); ``--films-sheet`` writes the same cases with their films, for
looking at locally (keep it out of the repository).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from boneage.config import ARTIFACTS_DIR, MODEL_DIR, REPO_ROOT, model_config_from_dict, write_json_atomic
from boneage.evidence.mask_quality import (PERTURBATIONS, STABILITY_GEOMETRY, SetQuality, carried_mask, failure_rates,
                                           segment_film, stability, stability_summary)
from boneage.geometry.framing import trim_uniform_border
from boneage.geometry.hand import SEGMENTATION_VERSION, segment_hand
from boneage.geometry.preprocess import prepare
from boneage.io.imaging import ImageLoadError, read_radiograph, safe_image_path
from boneage.io.tables import read_cases
from boneage.settings import add_path_flags
from pipelines.cli import data_dir_or_report

SAMPLE_SEED = 0
WORST = 16  # cases on the contact sheet


def _geometry(model_dir: Path):
    cfg = model_config_from_dict(json.loads((model_dir / "config.json").read_text())["model"])
    return dataclasses.replace(cfg.geometry, mask="none", phases=1)


def _tile(base: np.ndarray | None, mask: np.ndarray, tight: np.ndarray, label: str, size: int = 160) -> np.ndarray:
    """One contact-sheet tile: two outlines (red, yellow) over the film or over black. A failure: the outline
    and the tight outline; a stability case: the perturbed film's outline and the original's, carried."""
    rgb = np.zeros((*mask.shape, 3), np.float32) if base is None else np.repeat(base[..., None], 3, -1)
    if base is None:
        rgb[mask] = 0.35
    for m, colour in ((mask, (1.0, 0.1, 0.1)), (tight, (1.0, 0.9, 0.1))):
        rgb[m & ~ndimage.binary_erosion(m)] = colour
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    canvas = Image.new("RGB", (size, size + 28), (255, 255, 255))
    canvas.paste(img, (0, 0))
    d = ImageDraw.Draw(canvas)
    for k, line in enumerate((label[:26], label[26:52])):
        d.text((3, size + 2 + 12 * k), line, fill=(0, 0, 0))
    return np.asarray(canvas)


def _sheet(tiles: list[np.ndarray], path: Path, cols: int = 8) -> None:
    if not tiles:
        return
    blank = np.full_like(tiles[0], 255)
    rows = [np.concatenate((tiles[k:k + cols] + [blank] * cols)[:cols], 1) for k in range(0, len(tiles), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.png")
    Image.fromarray(np.concatenate(rows, 0)).save(tmp)
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--model-dir", default=str(MODEL_DIR), help="the model whose geometry prepares the films")
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--n-internal", type=int, default=500, help="seeded sample of each internal split")
    ap.add_argument("--n-official", type=int, default=200, help="official test films (first N)")
    ap.add_argument("--n-stability", type=int, default=100, help="films per set measured under re-acquisition")
    ap.add_argument("--out", default=str(ARTIFACTS_DIR / "mask_quality.json"))
    ap.add_argument("--sheet", default=str(REPO_ROOT / "docs" / "images" / "mask_quality_worst.png"),
                    help="contact sheet of the worst cases, outlines only")
    ap.add_argument("--films-sheet", help="the same cases with their films (for looking at; never commit it)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.n_internal < 1 or args.n_official < 1 or args.n_stability < 0:
        ap.error("--n-internal and --n-official must be at least 1, --n-stability at least 0")
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    try:
        geometry = _geometry(Path(args.model_dir))
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: cannot read the model's geometry from {args.model_dir}/config.json ({exc})", file=sys.stderr)
        return 2
    t0 = time.time()
    splits = pd.read_csv(args.splits, dtype={"id": str})
    sets = {f"internal_{s}": (splits[splits["split"] == s].sample(min(args.n_internal, int((splits["split"] == s).sum())),
                                                                  random_state=SAMPLE_SEED), data_dir / "train")
            for s in ("train", "val", "test")}
    sets["official_test"] = (read_cases(data_dir / "test.csv").cases.head(args.n_official), data_dir / "test")
    report, worst_tiles, film_tiles, unreadable = {}, [], [], {}
    candidates = []  # (badness, set, id, label, base image, segmentation)
    for name, (cases, folder) in sets.items():
        segs, unreadable[name], per_film = [], [], []
        measure = name in ("internal_test", "official_test")
        for k, cid in enumerate(tqdm(cases["id"].astype(str), desc=name, disable=args.quiet)):
            try:
                film = read_radiograph(safe_image_path(folder, cid))
            except ImageLoadError as exc:
                unreadable[name].append(f"{cid}: {exc}")
                continue
            base = prepare(film, geometry).image
            seg = segment_hand(base)
            segs.append(seg)
            if not seg.ok:
                candidates.append((2.0, name, cid, f"{cid} {seg.failure}", base, seg))
            if measure and k < args.n_stability:
                st = stability(film)
                per_film.append(st)
                if st:
                    p, v = min(st.items(), key=lambda kv: kv[1])
                    candidates.append((1.0 - v, name, cid, f"{cid} {p} IoU {v:.2f}", (film, p), seg))
        q = SetQuality(len(segs), failure_rates(segs), stability_summary(per_film))
        report[name] = q
    candidates.sort(key=lambda c: -c[0])
    for badness, name, cid, label, base, seg in candidates[:WORST]:
        report[name].worst.append((cid, label.split(" ", 1)[1], round(float(badness), 3)))
        first, second = seg.mask, seg.tight  # a failure: the outline and the tight outline
        if isinstance(base, tuple):  # a stability case: the perturbed film's outline and the carried original's
            film, p = base
            change, carry = PERTURBATIONS[p]
            film = trim_uniform_border(np.asarray(film, np.float32))
            base = prepare(change(film), STABILITY_GEOMETRY).image
            first, second = segment_hand(base).mask, carried_mask(segment_film(film).mask, film.shape, carry)
        worst_tiles.append(_tile(None, first, second, f"{name[:8]} {label}"))
        film_tiles.append(_tile(base, first, second, f"{name[:8]} {label}"))
    out = {"segmentation_version": SEGMENTATION_VERSION, "geometry": geometry.key(),
           "samples": {k: f"{v.n} films" + ("" if k == "official_test" else f", pandas sample random_state={SAMPLE_SEED}")
                       for k, v in report.items()},
           "stability_perturbations": list(PERTURBATIONS), "n_stability": args.n_stability,
           "sets": {k: dataclasses.asdict(v) for k, v in report.items()}, "unreadable": unreadable,
           "seconds": round(time.time() - t0, 1)}
    write_json_atomic(Path(args.out), out)
    _sheet(worst_tiles, Path(args.sheet))
    if args.films_sheet:
        _sheet(film_tiles, Path(args.films_sheet))
    for name, q in report.items():
        rates = ", ".join(f"{k} {v:.1%}" for k, v in q.failure_rates.items())
        print(f"{name} ({q.n} films): failures {rates}")
        for p, s in q.stability.items():
            print(f"    {p:<14} IoU mean {s['mean']:.3f}  p05 {s['p05']:.3f}  min {s['min']:.3f}  (n {s['n']})")
    print(f"wrote {args.out} and {args.sheet} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
