"""Precompute everything the dashboard browses from the shipped model and the data.

    python -m pipelines.precompute [--data-dir DIR] [--artifacts artifacts] [--only PART ...]
                                   [--max-cases N]

Parts (in order; ``--only`` redoes some, reading the others' outputs from disk):
  predictions  one forward pass over every case of every split and the 200 official test cases:
               predictions.parquet, conformal calibration (model/conformal.json) and coverage report,
               LOF outlier scores, penultimate features (float16) for similar-case look-up
  intervals    (``--only`` only; part of predictions) recalibrate the conformal intervals and coverage
               report from the stored predictions, without the network or the data
  embeddings   t-SNE / UMAP maps (2-D, 3-D) of the penultimate layer for all cases and of earlier
               layers for a subsample, and the layer-wise age-quality scores
  calibration  stage classifier calibration (reliability, ECE, Brier, entropy, confusion, ROC)
  fairness     audit tables by sex / age band with bootstrap CIs and the male-female gap test
  errors       worst cases, Bland-Altman data, do the flags catch the big errors
  atlas        Grad-CAM of every case the maturation atlas shows and the per-age-band averages
               (atlas/gradcam.npz; optional: the dashboard computes them live without it)
  explanations the explanation audit (attention on the hand, deletion / insertion curves against random,
               the randomisation sanity check, the default method) on a seeded sample of 60 internal and 60
               official test cases (``--max-cases N``: N each): explanation_audit.json + _cases.parquet
A manifest (artifacts/manifest.json) is rewritten at the end (``--only manifest`` rewrites just that).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.config import ARTIFACTS_DIR, DataDirError, resolve_data_dir, write_atomic, write_json_atomic
from boneage.evaluation.conformal import add_intervals, coverage_report
from boneage.training.image_cache import load_images
from boneage.evaluation.embeddings import (OutlierDetector, embed_maps, extract_features, layer_age_quality,
                                layer_description)
from boneage.store.manifest import write_manifest
from boneage.evaluation.predictions_table import for_storage, model_columns, read_predictions, write_predictions
from boneage.inference.predictor import load_predictor
from boneage.io.tables import read_cases
from boneage.settings import Settings, add_path_flags

PARTS = ("predictions", "embeddings", "calibration", "fairness", "errors", "atlas", "explanations")
EARLY_LAYERS = ("stage3", "stage5", "head")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def _write_binary(path: Path, save) -> None:
    """``save(file)`` into an open temporary file, renamed over ``path`` (numpy appends a suffix to bare names)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            save(f)

    write_atomic(path, write)


def _save_npy(arr: np.ndarray, path: Path) -> None:
    _write_binary(path, lambda f: np.save(f, arr))


def all_cases(data_dir: Path, splits_path: Path, max_cases: int | None) -> pd.DataFrame:
    """Every case with its split and image folder; official test rows keep NaN where unlabelled."""
    splits = pd.read_csv(splits_path, dtype={"id": str})
    official = read_cases(data_dir / "test.csv").cases.assign(split="official_test")
    if max_cases:  # a small but complete sample: some of every split
        splits = splits.groupby("split", group_keys=False).head(max_cases)
        official = official.head(max_cases)
    splits["image_dir"] = str(data_dir / "train")
    official["image_dir"] = str(data_dir / "test")
    return pd.concat([splits, official], ignore_index=True)


def part_predictions(art: Path, data_dir: Path, max_cases: int | None, log) -> None:
    predictor = load_predictor(art / "model")
    cfg = predictor.cfg
    cases = all_cases(data_dir, art / "splits.csv", max_cases)
    frames, images, extra_views, extra_owner = [], [], [], []
    failed = []
    n_rows = 0
    for image_dir, group in cases.groupby("image_dir", sort=False):
        loaded = load_images(group.reset_index(drop=True), image_dir, cfg.geometry, progress=False)
        failed += loaded.failed
        frames.append(loaded.cases)
        images.append(loaded.images)
        extra_views.append(loaded.extra_views.reshape(-1, cfg.base_size, cfg.base_size))
        extra_owner.append(loaded.extra_owner + n_rows)
        n_rows += len(loaded.cases)
    cases = pd.concat(frames, ignore_index=True)
    images = np.concatenate(images)
    extra_views, extra_owner = np.concatenate(extra_views), np.concatenate(extra_owner)
    log(f"loaded {len(cases)} images ({len(failed)} failed; {len(extra_views)} further phase views)")
    t0 = time.time()
    male = cases["male"].to_numpy().astype(bool)
    # Features and layers describe the plain pass; the reading is the one every door gives
    # (BoneAgePredictor.read: phase views averaged in, test-time passes shared out, the laterality blend).
    _, layer_feats = extract_features(predictor.model, images, male, EARLY_LAYERS)
    raw = predictor.read(images, male, extra_views=extra_views if len(extra_views) else None,
                         extra_owner=extra_owner if len(extra_views) else None)
    log(f"forward pass + features (TTA {'on' if predictor.tta else 'off'}, {1 + len(predictor.members)} "
        f"network(s)): {time.time() - t0:.0f}s")

    df = model_columns(cases.drop(columns=["image_dir"]), raw.age, raw.scale, raw.stage_prob, cfg.stages)
    add_intervals(df, art / "model" / "conformal.json")
    reports = coverage_report(df)

    # Outliers: LOF fitted on training-split penultimate features.
    feats = layer_feats["penultimate"]
    train_mask = (df["split"] == "train").to_numpy()
    det = OutlierDetector().fit(feats[train_mask])
    df["outlier_score"] = det.score(feats)
    df["is_outlier"] = df["outlier_score"] > det.threshold

    write_predictions(df, art / "predictions.parquet")
    _save_npy(feats.astype(np.float16), art / "embeddings" / "features_penultimate.npy")
    write_json_atomic(art / "coverage.json", reports)
    write_json_atomic(art / "outliers.json", {
        "method": "LocalOutlierFactor(n_neighbors=20, novelty=True) on standardised penultimate features of the "
                  "training split", "threshold": det.threshold, "threshold_rule": "99th percentile of training LOF",
        "flagged_by_split": df.groupby("split")["is_outlier"].mean().round(4).to_dict()})
    write_json_atomic(art / "failed_images.json", [{"id": c, "reason": r} for c, r in failed])
    # Earlier layers are big: keep them out of artifacts/, only the maps computed from them are committed.
    cache = art.parent / "runs" / "layer_features.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, ids=df["id"].astype(str).to_numpy(), split=df["split"].to_numpy(),
             **{k: v.astype(np.float16) for k, v in layer_feats.items()})
    log(f"predictions: {len(df)} rows; conformal 90% coverage internal test "
        f"{reports['mondrian']['test']['90']['coverage']:.3f}")


def part_intervals(art: Path, log) -> None:
    """Recalibrate the intervals from the stored predictions, without running the network again."""
    path = art / "predictions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m pipelines.precompute --only predictions` first")
    df = read_predictions(path)
    add_intervals(df, art / "model" / "conformal.json")
    reports = coverage_report(df)
    write_predictions(df, path)
    write_json_atomic(art / "coverage.json", reports)
    log(f"intervals: conformal 90% coverage internal test {reports['mondrian']['test']['90']['coverage']:.3f}")


TSNE3_MAX_CASES = 5000


def _layer_describer(model_dir: Path):
    """name -> 'stage 3 (40 channels, 1/8 resolution)' for the model's own backbone (architecture only)."""
    from boneage.config import model_config_from_dict
    from boneage.nn.model import BoneAgeNet

    cfg = model_config_from_dict(json.loads((model_dir / "config.json").read_text())["model"])
    net = BoneAgeNet(cfg, pretrained=False)
    return lambda name: layer_description(net, name)


def part_embeddings(art: Path, log, seed: int = 0, subsample: int = 3000) -> None:
    df = read_predictions(art / "predictions.parquet")
    feats = np.load(art / "embeddings" / "features_penultimate.npy").astype(np.float32)
    t0 = time.time()
    # 3-D t-SNE on a subsample (see embed_maps): every non-training case, then training cases at random.
    rng = np.random.default_rng(seed)
    is_train = (df["split"] == "train").to_numpy()
    idx_all = np.arange(len(df))
    tsne3 = np.r_[idx_all[~is_train], rng.permutation(idx_all[is_train])][:TSNE3_MAX_CASES]
    maps = embed_maps(feats, seed=seed, tsne3_subset=tsne3)
    maps.insert(0, "id", df["id"].to_numpy())
    maps.insert(1, "split", df["split"].to_numpy())
    _write_parquet(maps, art / "embeddings" / "maps_penultimate.parquet")
    log(f"penultimate maps ({len(df)} cases): {time.time() - t0:.0f}s")

    cache = art.parent / "runs" / "layer_features.npz"
    if not cache.is_file():
        raise FileNotFoundError(f"{cache} is missing: run `python -m pipelines.precompute --only predictions` first")
    z = np.load(cache, allow_pickle=True)
    if list(z["ids"]) != df["id"].astype(str).tolist():
        raise RuntimeError(f"{cache} does not match predictions.parquet: rerun --only predictions")
    rng = np.random.default_rng(seed)
    # Subsample stratified so every split is present: all non-train cases up to the budget, rest train.
    idx = np.arange(len(df))
    non_train = idx[df["split"].to_numpy() != "train"]
    train = idx[df["split"].to_numpy() == "train"]
    take = np.sort(np.r_[rng.permutation(non_train)[: subsample // 2],
                         rng.permutation(train)[: max(0, subsample - min(len(non_train), subsample // 2))]])
    quality, layer_maps = {}, []
    age = df["boneage"].to_numpy(float)
    describe = _layer_describer(art / "model")
    for name in (*EARLY_LAYERS, "penultimate"):
        x = z[name].astype(np.float32)
        quality[name] = {"description": describe(name), **layer_age_quality(x[take], age[take], seed=seed)}
        t1 = time.time()
        m = embed_maps(x[take], seed=seed, dims=(2,))  # the layer comparison shows 2-D maps only
        m.insert(0, "layer", name)
        m.insert(0, "id", df["id"].to_numpy()[take])
        layer_maps.append(m)
        log(f"layer {name}: kNN age MAE {quality[name]['knn_mae']:.1f}, maps {time.time() - t1:.0f}s")
    _write_parquet(pd.concat(layer_maps, ignore_index=True), art / "embeddings" / "maps_layers.parquet")
    write_json_atomic(art / "embeddings" / "layer_quality.json",
                      {"subsample": int(len(take)), "seed": seed, "tsne3_cases": int(len(tsne3)), "metric": "5-fold kNN (k=15) regression of "
                       "reference age from standardised globally pooled features", "layers": quality})


def part_calibration(art: Path, log) -> None:
    from boneage.evaluation.calibration import stage_calibration_report
    from boneage.config import model_config_from_dict

    cfg = model_config_from_dict(json.loads((art / "model" / "config.json").read_text())["model"])
    df = read_predictions(art / "predictions.parquet")
    out = {}
    for split in ("test", "official_test"):
        d = df[(df["split"] == split) & (df["stage_true"] >= 0)]
        out[split] = stage_calibration_report(d, cfg.stages)
    write_json_atomic(art / "stage_calibration.json", out)
    log("stage calibration written")


def part_fairness(art: Path, log) -> None:
    from boneage.evidence.fairness import audit

    df = read_predictions(art / "predictions.parquet")
    out_dir = art / "fairness"
    for split in ("test", "official_test"):
        tables = audit(df, [split])
        for name, table in tables.items():
            write_atomic(out_dir / f"{split}_{name}.csv", lambda tmp, table=table: table.to_csv(tmp, index=False))
    log("fairness tables written")


def part_errors(art: Path, log) -> None:
    from boneage.evidence.error_analysis import bland_altman, flag_effectiveness, worst_cases

    df = read_predictions(art / "predictions.parquet")
    out = {}
    for split in ("test", "official_test"):
        d = df[(df["split"] == split) & df["boneage"].notna()]
        flags = flag_effectiveness(d)
        out[split] = {"flags": flags.summary}
        _write_parquet(flags.deciles, art / "errors" / f"{split}_flag_deciles.parquet")
        _write_parquet(for_storage(worst_cases(d)), art / "errors" / f"{split}_worst.parquet")
        ba = bland_altman(d)
        out[split]["bland_altman"] = ba.summary
        _write_parquet(for_storage(ba.points), art / "errors" / f"{split}_bland_altman.parquet")
    write_json_atomic(art / "errors" / "summary.json", out)
    log("error analysis written")


def part_atlas(art: Path, data_dir: Path, log) -> None:
    from boneage.evidence.atlas import ATLAS_FILE, compute_atlas
    from boneage.training.image_cache import load_case_image
    from boneage.io.imaging import ImageLoadError
    from boneage.store.manifest import sha256_file
    from boneage.geometry.preprocess import to_uint8

    predictor = load_predictor(art / "model")
    df = read_predictions(art / "predictions.parquet")
    df["id"] = df["id"].astype(str)

    def load(case_id: str, split: str):
        try:
            return to_uint8(load_case_image(data_dir / ("test" if split == "official_test" else "train"), case_id,
                                            predictor.cfg.geometry))
        except ImageLoadError:
            return None

    t0 = time.time()
    arrays = compute_atlas(predictor.model, df, load)
    arrays["model_sha256"] = np.array(sha256_file(art / "model" / "model.pt"))
    _write_binary(art / ATLAS_FILE, lambda f: np.savez_compressed(f, **arrays))
    log(f"atlas: {len(arrays['ids'])} case Grad-CAMs, {len(arrays['bands'])} band averages: {time.time() - t0:.0f}s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap, artifacts=True)
    ap.add_argument("--only", nargs="+", choices=(*PARTS, "intervals", "manifest"),
                    help="redo only these parts ('manifest' alone: just rewrite the manifest, e.g. after the model "
                         "card or benchmark changed)")
    ap.add_argument("--max-cases", type=int, help="at most N cases per split (smoke tests)")
    ap.add_argument("--subsample", type=int, default=3000, help="cases in the earlier-layer maps")
    args = ap.parse_args(argv)
    art = Settings.from_args(args).artifacts_dir
    parts = args.only or PARTS
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)

    try:
        if "predictions" in parts:
            data_dir = resolve_data_dir(args.data_dir)
            part_predictions(art, data_dir, args.max_cases, log)
        elif "intervals" in parts:
            part_intervals(art, log)
        if "embeddings" in parts:
            part_embeddings(art, log, subsample=min(args.subsample, args.max_cases * 5) if args.max_cases else args.subsample)
        if "calibration" in parts:
            part_calibration(art, log)
        if "fairness" in parts:
            part_fairness(art, log)
        if "errors" in parts:
            part_errors(art, log)
        if "atlas" in parts:
            part_atlas(art, resolve_data_dir(args.data_dir), log)
        if "explanations" in parts:
            from pipelines.explanation_audit import DEFAULT_CASES, run as run_explanation_audit

            run_explanation_audit(art, resolve_data_dir(args.data_dir), args.max_cases or DEFAULT_CASES, log)
    except (DataDirError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model_cfg = json.loads((art / "model" / "config.json").read_text())
    write_manifest(art, {"backbone": model_cfg["model"]["backbone"], "input_size": model_cfg["model"]["input_size"],
                         "best_epoch": model_cfg.get("best_epoch"), "best_val_mae": model_cfg.get("best_val_mae"),
                         "ensemble_members": model_cfg.get("inference", {}).get("members", [])})
    log(f"done: {', '.join(parts)}; manifest written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
