"""Train the bone-age model on the RSNA training split (CPU or CUDA, picked automatically).

    python -m pipelines.train [--data-dir DIR] [--out artifacts/model] [--epochs 20] [--input-size 128]
                              [--backbone efficientnet-lite0] [--no-resume]

Writes model.pt, config.json (configs, seed, split file, hardware, timings), history.csv and last.pt (for
resume) into --out. Creates artifacts/splits.csv first if it does not exist.

Several processes or GPUs (DistributedDataParallel; NCCL on CUDA, gloo on CPU; ``--batch-size`` is per
process, so the global batch is N times it):

    torchrun --standalone --nproc_per_node N -m pipelines.train --base-size 512 --fit letterbox ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import pandas as pd

from boneage.training import distributed
from boneage.geometry.acquisition import KNOWN
from boneage.config import (ANTIALIAS_SIZES, ARTIFACTS_DIR, INTENSITIES, MASKS, MODEL_DIR, REPO_ROOT, TTA_VIEW_SETS,
                            ModelConfig, TrainConfig)
from boneage.geometry.hand import SEGMENTATION_VERSION
from boneage.training.hand_masks import load_hand_masks
from boneage.training.image_cache import load_images
from boneage.geometry.framing import FITS, GeometryError
from boneage.store.manifest import sha256_file
from boneage.training.loop import ResumeCheckpointError, train_model
from pipelines.cli import data_dir_or_report
from pipelines.prepare import prepare_splits
from boneage.settings import add_path_flags


def _dropout(text: str) -> float:
    """``--dropout``: a fraction in [0, 1), refused by argparse (exit 2, the flag named) otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a dropout fraction; give a number from 0 up to, "
                                         "but not including, 1")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_flags(ap)
    ap.add_argument("--splits", default=str(ARTIFACTS_DIR / "splits.csv"))
    ap.add_argument("--out", default=str(MODEL_DIR))
    ap.add_argument("--cache-dir", help="folder of the prepared-image cache (default runs/cache; with "
                    "--max-train-cases no cache unless this is given)")
    ap.add_argument("--backbone", default=ModelConfig.backbone)
    ap.add_argument("--input-size", type=int, default=ModelConfig.input_size)
    ap.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--patience", type=int, default=TrainConfig.patience)
    ap.add_argument("--seed", type=int, default=TrainConfig.seed)
    ap.add_argument("--max-train-cases", type=int, help="train on the first N training cases (smoke tests)")
    ap.add_argument("--max-val-cases", type=int)
    ap.add_argument("--no-amp", action="store_true", help="disable bf16 autocast")
    ap.add_argument("--no-resume", action="store_true", help="ignore last.pt in --out and start afresh")
    ap.add_argument("--init-from", help="warm-start from an earlier run folder's model.pt (fresh optimiser and "
                    "schedule, history carried over); its config.json is recorded as 'init_from'")
    ap.add_argument("--warmup-epochs", type=float, default=TrainConfig.warmup_epochs)
    ap.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                    help="keep an exponential moving average of the weights (e.g. 0.998); 0 = off")
    ap.add_argument("--balance-power", type=float, default=TrainConfig.balance_power,
                    help="sample cases ~ (cases of their sex x age band)^-P with replacement; 0 = each case once an epoch")
    ap.add_argument("--base-size", type=int, default=ModelConfig.base_size,
                    help="side of the base image every radiograph is brought to (100: the RSNA files here)")
    ap.add_argument("--fit", choices=FITS, default=ModelConfig.fit,
                    help="squeeze the film to a square as the 100 px files were (nearest neighbour, or 'area': "
                         "box-filtered, bars trimmed) or keep its aspect ratio (letterbox)")
    ap.add_argument("--hand-mask", choices=MASKS, default=ModelConfig.hand_mask,
                    help="'hand': the network reads the hand alone, the film outside the dilated hand mask set to "
                         "the background (boneage.geometry.masking); 'none': the whole film")
    ap.add_argument("--mask-dilation", type=int, default=ModelConfig.mask_dilation,
                    help="base pixels the hand mask is grown by before the background is removed")
    ap.add_argument("--hand-intensity", choices=INTENSITIES, default=ModelConfig.hand_intensity,
                    help="with --hand-mask hand: 'hand' scales the hand from its own pixels of the fitted film, so "
                         "nothing outside the outline moves them (and trims no bars unless --trim-bars); 'film': "
                         "within the whole film's normalisation (boneage.config.Geometry.intensity)")
    ap.add_argument("--mask-noise", type=int, default=TrainConfig.mask_noise,
                    help="training: each image's dilation is drawn within this many pixels of --mask-dilation")
    ap.add_argument("--mask-tight", type=float, default=TrainConfig.mask_tight,
                    help="training: probability that an image uses the segmentation's tight mask")
    ap.add_argument("--framing", choices=("none", "hand", "hand-upright"), default=ModelConfig.framing,
                    help="read the whole film, or a square around the hand (optionally turned upright)")
    ap.add_argument("--trim-bars", action="store_true",
                    help="remove uniform bars (export padding, a mat) around every film before the fit")
    ap.add_argument("--phases", type=int, default=None,
                    help="read a native film as the mean of PxP phase-shifted squeezes (squeeze fit only; default 3 "
                         "with it, 1 otherwise; films at the base size, such as the 100 px training files, have one "
                         "view, so training itself is unchanged)")
    ap.add_argument("--laterality", choices=("as-is", "left"), default=ModelConfig.laterality,
                    help="left: films the learned check takes for right hands are mirrored first, for training "
                         "and every input (boneage.geometry.laterality)")
    ap.add_argument("--mirror-invariant", action="store_true",
                    help="train with mirrored copies and average every prediction with its mirror image")
    ap.add_argument("--antialias", type=int, choices=ANTIALIAS_SIZES, default=ModelConfig.antialias,
                    help="low-pass filter size at every stride of 2 of the backbone (0: plain strides); "
                         "weights of either kind warm-start the other")
    ap.add_argument("--dropout", type=_dropout, default=ModelConfig.dropout,
                    help="dropout before the head's hidden layer while training (inference never drops)")
    ap.add_argument("--tta-views", choices=TTA_VIEW_SETS, default="shifts",
                    help="the passes the model's test-time augmentation averages (saved with the model)")
    ap.add_argument("--aug-rotate", type=float, default=TrainConfig.aug_rotate_deg, help="max rotation, degrees")
    ap.add_argument("--aug-contrast", type=float, default=TrainConfig.aug_contrast, help="gamma/contrast strength")
    ap.add_argument("--aug-resolution", type=float, default=TrainConfig.aug_resolution,
                    help="max fraction of resolution lost (half the images, down and up again); 0 = off")
    ap.add_argument("--aug-noise", type=float, default=TrainConfig.aug_noise, help="max Gaussian noise SD; 0 = off")
    ap.add_argument("--aug-scale", type=float, default=TrainConfig.aug_scale,
                    help="max zoom in or out (0.2: 0.8-1.2), which covers tighter or looser collimation")
    ap.add_argument("--aug-jpeg", type=float, default=TrainConfig.aug_jpeg,
                    help="probability of a JPEG round trip (quality --aug-jpeg-quality..95); 0 = off")
    ap.add_argument("--aug-jpeg-quality", type=int, default=TrainConfig.aug_jpeg_quality,
                    help="lowest JPEG quality of that round trip")
    ap.add_argument("--consistency", type=float, default=TrainConfig.consistency,
                    help="training for precision: weight of the disagreement between each image's reading and "
                         "the reading of it acquired differently (JPEG, resolution, crop, border); 0 = off")
    ap.add_argument("--consistency-anchored", action="store_true",
                    help="with --consistency: pull the other acquisition's reading to the plain reading (held "
                         "fixed) and train the label on the plain reading only")
    ap.add_argument("--consistency-families", default=",".join(TrainConfig.consistency_families),
                    help="with --consistency: the acquisition changes drawn, comma-separated, from "
                         "jpeg, downscale, crop, border, rotate")
    ap.add_argument("--consistency-shared-affine", action="store_true",
                    help="with --consistency: both readings of a hand get the same random rotation, zoom and "
                         "shift, so they differ by the acquisition change alone")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's own choice); 1 on a shared machine")
    ap.add_argument("--loader-workers", type=int, default=None,
                    help="DataLoader worker processes reading training batches (default: 0 on CPU, several per GPU)")
    ap.add_argument("--decode-workers", type=int, default=None,
                    help="processes that decode radiographs into the image cache (default: the CPU cores)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    info = distributed.init_from_env()
    try:
        return _run(args, info)
    finally:
        distributed.shutdown()


def _run(args, info: distributed.DistInfo) -> int:
    data_dir = data_dir_or_report(args.data_dir)
    if data_dir is None:
        return 2
    splits_path = Path(args.splits)
    if info.is_main and not splits_path.is_file():
        prepare_splits(data_dir, splits_path)
        print(f"created split {splits_path}")
    distributed.barrier()
    splits = pd.read_csv(splits_path, dtype={"id": str})
    tr = splits[splits["split"] == "train"].reset_index(drop=True)
    va = splits[splits["split"] == "val"].reset_index(drop=True)
    if args.max_train_cases:
        tr = tr.head(args.max_train_cases)
    if args.max_val_cases:
        va = va.head(args.max_val_cases)
    model_cfg = ModelConfig(backbone=args.backbone, input_size=args.input_size, base_size=args.base_size,
                            fit=args.fit, framing=args.framing, mirror_invariant=args.mirror_invariant,
                            trim_bars=args.trim_bars, laterality=args.laterality, phases=args.phases or (3 if args.fit == "squeeze" else 1),
                            antialias=args.antialias, tta_views=args.tta_views, dropout=args.dropout,
                            hand_mask=args.hand_mask, mask_dilation=args.mask_dilation,
                            hand_intensity=args.hand_intensity)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                            seed=args.seed, amp=not args.no_amp, max_train_cases=args.max_train_cases,
                            max_val_cases=args.max_val_cases, warmup_epochs=args.warmup_epochs,
                            ema_decay=args.ema_decay, balance_power=args.balance_power,
                            aug_rotate_deg=args.aug_rotate, aug_contrast=args.aug_contrast,
                            aug_resolution=args.aug_resolution, aug_noise=args.aug_noise,
                            aug_scale=args.aug_scale, aug_jpeg=args.aug_jpeg,
                            aug_jpeg_quality=args.aug_jpeg_quality, consistency=args.consistency,
                            consistency_anchored=args.consistency_anchored,
                            consistency_families=tuple(f.strip() for f in args.consistency_families.split(",")
                                                       if f.strip()),
                            consistency_shared_affine=args.consistency_shared_affine,
                            num_threads=args.threads, loader_workers=args.loader_workers,
                            mask_noise=args.mask_noise, mask_tight=args.mask_tight)
    unknown = [f for f in train_cfg.consistency_families if f not in KNOWN]
    if unknown or not train_cfg.consistency_families:
        print(f"error: --consistency-families {args.consistency_families!r}: unknown {unknown or 'empty list'}; "
              f"choose from {', '.join(KNOWN)}", file=sys.stderr)
        return 2
    cache = args.cache_dir or (None if args.max_train_cases else str(REPO_ROOT / "runs" / "cache"))
    try:
        geometry = model_cfg.geometry
    except GeometryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    show = not args.quiet and info.is_main

    # a model that reads the hand alone trains on unmasked images and their masks (mask noise per batch,
    # boneage.training.hand_masks) and validates on images masked as every door masks them
    train_geometry = dataclasses.replace(geometry, mask="none")
    # the outline is always found on the film-normalised image (boneage.geometry.preprocess.prepare); with the
    # hand's own intensity scale the training pixels are not that image, so its masks come from a second cache
    seg_geometry = (dataclasses.replace(geometry, mask="none", intensity="film", framing="none",
                                        trim_bars=geometry.trims)
                    if geometry.mask == "hand" and geometry.intensity == "hand" else None)

    def load_both():
        sets = [(tr, train_geometry), (va, geometry)] + ([(tr, seg_geometry)] if seg_geometry else [])
        return tuple(load_images(c, data_dir / "train", g, cache_dir=cache, progress=show,
                                 workers=args.decode_workers) for c, g in sets)

    if cache is not None and info.distributed:
        # rank 0 builds the cache (its decode workers use the machine); the others then open it
        if info.is_main:
            loaded = load_both()
        distributed.barrier()
        if not info.is_main:
            loaded = load_both()
    else:  # one process, or a subset without a cache: every rank decodes its own small copy
        loaded = load_both()
    tr_img, va_img = loaded[:2]
    seg_img = loaded[2] if seg_geometry else tr_img
    if list(seg_img.cases["id"]) != list(tr_img.cases["id"]):  # both decode the same files; a difference is a bug
        print("error: the training images and the images their hand masks are found on hold different cases",
              file=sys.stderr)
        return 2
    if info.is_main:
        for cid, reason in tr_img.failed + va_img.failed:
            print(f"skipped {cid}: {reason}", file=sys.stderr)
    split_sha = sha256_file(splits_path)
    extra = {"splits_file": splits_path.name, "splits_sha256": split_sha, "data": f"RSNA Pediatric Bone Age 2017, train/ prepared as {geometry.key()}"}
    if geometry.mask == "hand":
        extra["hand_segmentation_version"] = SEGMENTATION_VERSION
    if args.init_from:
        init_cfg = Path(args.init_from) / "config.json"
        extra["init_from"] = json.loads(init_cfg.read_text()) if init_cfg.is_file() else str(args.init_from)
    masks = load_hand_masks(seg_img.images, cache, progress=show) if geometry.mask == "hand" else None
    try:
        res = train_model(tr_img.images, tr_img.cases, va_img.images, va_img.cases, args.out, model_cfg, train_cfg,
                          extra_config=extra, resume=not args.no_resume, progress=not args.quiet,
                          init_from=args.init_from, train_masks=masks)
    except ResumeCheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if info.is_main:
        print(f"best epoch {res.best_epoch}: val MAE {res.best_val_mae:.2f} months; {res.epochs_run} epochs in "
              f"{res.seconds / 60:.1f} min -> {res.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
