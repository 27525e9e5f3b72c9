"""Training loop: CPU or CUDA, bf16 autocast, cosine schedule with warm-up, batched augmentation, early
stopping on validation MAE, checkpoints every epoch and resume; one process or DDP under ``torchrun``.

Batches come from a DataLoader over the (memory-mapped) images (:mod:`boneage.training.batches`). Under DDP
(:mod:`boneage.training.distributed`) every rank trains on its shard of each epoch, validates its shard of the
validation set, and the predictions are gathered so that every rank computes the same metrics and takes the
same early-stopping decision; only rank 0 writes files, prints and shows progress bars.

Outputs in ``out_dir``: ``model.pt`` (best weights), ``config.json`` (model, training and split configs,
seed, hardware, timings), ``history.csv`` (one row per epoch), ``last.pt`` (full state for resume).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from boneage.training import distributed as D
from boneage.training.batches import CaseBatches, Rows, batches_of, rank_shard_order, single_process_order
from boneage.config import ModelConfig, TrainConfig, to_jsonable, write_atomic, write_json_atomic
from boneage.geometry.acquisition import acquired_batch
from boneage.nn.forward import INFERENCE_BATCH, run_network
from boneage.nn.model import BoneAgeNet, laplace_nll
from boneage.geometry.perturb import jpeg
from boneage.geometry.masking import isolate_hand_batch
from boneage.geometry.preprocess import random_affine, to_model_input
from boneage.training.splits import age_band


class ResumeCheckpointError(ValueError):
    """``last.pt`` cannot be loaded as plain tensors and containers (weights_only); it is never unpickled as
    code. The message says how to go on (delete it, or --no-resume)."""


@dataclass
class TrainResult:
    best_epoch: int
    best_val_mae: float
    epochs_run: int
    seconds: float
    out_dir: Path


def pick_device() -> torch.device:
    """This process's device: CUDA if present (its own GPU under torchrun), else the CPU."""
    return D.current().device()


def loader_workers(train_cfg: TrainConfig, device: torch.device, world: int) -> int:
    """DataLoader worker processes: ``train_cfg.loader_workers`` when set; else none on the CPU (workers
    would take cores from the network) and up to 6 per GPU process (decoding-free reads from the cache
    plus the uint8 copy keep up with a GPU at 512 px)."""
    if train_cfg.loader_workers is not None:
        return max(0, int(train_cfg.loader_workers))
    if device.type != "cuda":
        return 0
    return max(1, min(6, (os.cpu_count() or 2) // max(1, world) - 1))


def _validate(model, images, male: np.ndarray, batch: int, device, info: "D.DistInfo"):
    """Predictions on the whole validation set; under DDP each rank runs its interleaved shard and the
    shards are gathered, so every rank returns the same arrays (same order as ``images``)."""
    if not info.distributed:
        return run_network(model, images, male, batch, device=device)
    idx = np.arange(info.rank, len(male), info.world_size)
    part = run_network(model, Rows(images, idx), male[idx], batch, device=device)
    parts = D.gather_objects((idx, part.age, part.scale))
    order = np.concatenate([p[0] for p in parts])
    age, scale = np.empty(len(male)), np.empty(len(male))
    age[order] = np.concatenate([p[1] for p in parts])
    scale[order] = np.concatenate([p[2] for p in parts])
    return type(part)(age, scale, None, None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_atomic(obj, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def _augment_intensity(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random gamma and contrast on [0,1] images, so exposure differences between hospitals matter less."""
    n = x.shape[0]
    gamma = torch.exp((torch.rand(n, 1, 1, generator=gen) * 2 - 1) * strength)
    contrast = 1 + (torch.rand(n, 1, 1, generator=gen) * 2 - 1) * strength
    return (x.clamp(0, 1) ** gamma * contrast).clamp(0, 1)


def _augment_jpeg(x: torch.Tensor, probability: float, min_quality: int, gen: torch.Generator) -> torch.Tensor:
    """Each (H, W) [0,1] image of ``x``, with ``probability``, saved as an 8-bit JPEG of a random quality in
    ``min_quality`` .. 95 and decoded again (:func:`boneage.geometry.perturb.jpeg`, what the benchmark does to a film)."""
    if probability <= 0:
        return x
    pick = torch.rand(len(x), generator=gen) < probability
    quality = torch.randint(min_quality, 96, (len(x),), generator=gen)
    if not pick.any():
        return x
    x = x.clone()
    for i in torch.nonzero(pick).flatten().tolist():
        x[i] = torch.from_numpy(jpeg(x[i].numpy(), int(quality[i])))
    return x


def _augment_degradation(x: torch.Tensor, resolution: float, noise: float, gen: torch.Generator) -> torch.Tensor:
    """Resolution loss and noise on (N, H, W) [0,1] images (see ``TrainConfig.aug_resolution``)."""
    n, h, w = x.shape
    if resolution > 0:
        s = 1 - float(torch.rand(1, generator=gen)) * resolution  # one factor a batch: a single resize
        pick = torch.rand(n, generator=gen) < 0.5
        if pick.any() and s < 0.99:
            small = F.interpolate(x[pick].unsqueeze(1), size=(max(8, round(h * s)), max(8, round(w * s))),
                                  mode="area")
            x = x.clone()
            x[pick] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    if noise > 0:
        sd = torch.rand(n, 1, 1, generator=gen) * noise
        x = x + torch.randn(x.shape, generator=gen) * sd
    return x.clamp(0, 1)


def masked_batch(x: torch.Tensor, packed: torch.Tensor, dilation: int, train_cfg: TrainConfig,
                 gen: torch.Generator) -> torch.Tensor:
    """The hand alone in each image of a training batch, with mask noise (TrainConfig.mask_noise, mask_tight):
    :func:`boneage.geometry.masking.isolate_hand_batch` with a dilation and a mask (the segmentation's or its
    tight one) drawn per image."""
    n = len(x)
    tight = torch.rand(n, generator=gen) < train_cfg.mask_tight
    masks = torch.where(tight[:, None, None], (packed & 2) > 0, (packed & 1) > 0)
    noise = torch.randint(-train_cfg.mask_noise, train_cfg.mask_noise + 1, (n,), generator=gen)
    return isolate_hand_batch(x, masks, (dilation + noise).clamp(min=0))


def consistency_loss(age: torch.Tensor, scale: torch.Tensor, anchored: bool = False) -> torch.Tensor:
    """Mean disagreement between the two readings of each hand, ``age[:n]`` and ``age[n:]`` of a doubled
    batch, in units of their mean predicted scale (held fixed), the unit in which the Laplace NLL charges
    an error: the readings are pulled together, not their uncertainty inflated. ``anchored`` holds the
    first (plain) reading fixed too, so only the second is pulled (``TrainConfig.consistency_anchored``)."""
    n = len(age) // 2
    b = (0.5 * (scale[:n] + scale[n:])).detach().clamp_min(1e-3)
    first = age[:n].detach() if anchored else age[:n]
    return ((first - age[n:]).abs() / b).mean()


def stage_targets(age: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    s = cfg.stages
    return (age >= s.child_below_months).long() + (age >= s.adult_from_months).long()


def group_sampling_weights(cases: pd.DataFrame, power: float) -> torch.Tensor | None:
    """Per-case sampling weights ~ (cases of the same sex x age band) ** -power, summing to 1; None for 0."""
    if power <= 0:
        return None
    sex = np.where(cases["male"].to_numpy().astype(bool), "M", "F")
    band = age_band(cases["boneage"].to_numpy()).astype(str).to_numpy()
    group = pd.Series([f"{s} {b}" for s, b in zip(sex, band)])  # positional: any index of ``cases`` works
    w = group.map(group.value_counts()).to_numpy(np.float64) ** -power
    return torch.tensor(w / w.sum(), dtype=torch.float64)


def train_model(train_images: np.ndarray, train_cases: pd.DataFrame, val_images: np.ndarray,
                val_cases: pd.DataFrame, out_dir: str | Path, model_cfg: ModelConfig = ModelConfig(),
                train_cfg: TrainConfig = TrainConfig(), extra_config: dict | None = None,
                resume: bool = True, progress: bool = True, init_from: str | Path | None = None,
                train_masks: np.ndarray | None = None) -> TrainResult:
    """Train (or resume) into ``out_dir``.

    A model that reads the hand alone (``model_cfg.hand_mask == "hand"``) needs ``train_masks``: the packed
    masks of the unmasked ``train_images`` (:func:`boneage.training.hand_masks.load_hand_masks`); each batch is
    masked with its own noise (:func:`masked_batch`). ``val_images`` are then already masked, as every
    door prepares them (:func:`boneage.geometry.preprocess.prepare`).

    ``init_from`` warm-starts from an earlier run's folder (its ``model.pt``) with a fresh optimiser and
    schedule: a second cosine cycle is how a CPU-only project extends training without starting over. The
    earlier run's history is carried over (column ``stage``) so the curves show the whole story.
    """
    out_dir = Path(out_dir)
    info = D.current()
    progress = progress and info.is_main
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()
    device = pick_device()
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    seed_everything(train_cfg.seed)
    model = BoneAgeNet(model_cfg, pretrained=init_from is None)
    prior_history: list[dict] = []
    if init_from is not None:
        init_dir = Path(init_from)
        model.load_state_dict(torch.load(init_dir / "model.pt", map_location="cpu", weights_only=True)["state_dict"])
        if (init_dir / "history.csv").is_file():
            prior = pd.read_csv(init_dir / "history.csv")
            if "stage" not in prior.columns:
                prior["stage"] = 1
            prior_history = prior.to_dict("records")
    model = model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    per_rank = math.ceil(len(train_images) / info.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / train_cfg.batch_size))
    total_steps = steps_per_epoch * train_cfg.epochs
    warmup = max(1, int(train_cfg.warmup_epochs * steps_per_epoch))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    # Weight EMA (BatchNorm buffers averaged too): a cheap ensemble over the last epochs, which smooths the
    # noisy single-report labels; validated beside the raw weights and saved only when it is better.
    ema = (torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
        train_cfg.ema_decay), use_buffers=True) if train_cfg.ema_decay > 0 else None)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    history: list[dict] = list(prior_history)
    stage_no = int(max((h.get("stage", 1) for h in prior_history), default=0)) + 1
    epoch_offset = len(prior_history)
    start_epoch, best_mae, best_epoch, elapsed_before = 0, float("inf"), -1, 0.0
    best_kind = "raw"  # which weights model.pt holds: "raw" or "ema"
    last_path = out_dir / "last.pt"
    if resume and last_path.is_file():
        # weights_only: last.pt holds only tensors (the RNG state is a ByteTensor) and plain containers (the
        # history is a list of dicts of floats), so a planted file can never run code on resume.
        try:
            ck = torch.load(last_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            why = ("it holds Python objects, not only tensors" if isinstance(exc, pickle.UnpicklingError)
                   else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}")
            raise ResumeCheckpointError(
                f"{last_path} cannot be loaded as a plain checkpoint ({why}); it was not written by this version "
                "or has been tampered with, and was not unpickled. Delete it to start afresh, or pass "
                "--no-resume.") from None
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema is not None and "ema" in ck:
            ema.load_state_dict(ck["ema"])
        gen.set_state(ck["gen"])
        start_epoch, best_mae, best_epoch = ck["epoch"] + 1, ck["best_mae"], ck["best_epoch"]
        history, elapsed_before = ck["history"], ck.get("elapsed", 0.0)
        best_kind = ck.get("best_weights", "raw")
        if info.is_main:
            print(f"resumed from {last_path} at epoch {start_epoch}, best val MAE {best_mae:.2f}")
    # The network that trains: DDP averages gradients across ranks; ``model`` stays the plain module (for
    # EMA, validation and the saved state_dict, whose keys are the same with or without DDP).
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    masking = model_cfg.hand_mask == "hand"
    if masking and train_masks is None:
        raise ValueError("a model that reads the hand alone is trained with the hand masks of its training images "
                         "(train_masks, from boneage.training.hand_masks.load_hand_masks)")
    dataset = CaseBatches(train_images, train_cases["boneage"].to_numpy(np.float32),
                          train_cases["male"].to_numpy(), train_masks if masking else None)
    n_workers = loader_workers(train_cfg, device, info.world_size)
    sample_w = group_sampling_weights(train_cases, train_cfg.balance_power)
    amp_dtype = torch.bfloat16
    # bf16 autocast is a large win on GPUs but measured 5-9x slower than fp32 on this project's 2-core CPUs
    use_amp = train_cfg.amp and device.type == "cuda"
    t0 = time.time()
    config_blob = {
        "model": to_jsonable(model_cfg), "train": to_jsonable(train_cfg), **(extra_config or {}),
        "device": str(device), "hardware": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores" + (f", {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""),
        "torch": torch.__version__, "n_train": len(train_images), "n_val": len(val_images),
        "distributed": {"world_size": info.world_size, "backend": info.backend,
                        "batch_size_per_process": train_cfg.batch_size,
                        "global_batch_size": train_cfg.batch_size * info.world_size, "loader_workers": n_workers},
    }
    epochs_since_best = 0 if best_epoch < 0 else (start_epoch - 1 - best_epoch)
    for epoch in range(start_epoch, train_cfg.epochs):
        if epochs_since_best >= train_cfg.patience:
            if info.is_main:
                print(f"early stopping: no validation improvement for {train_cfg.patience} epochs")
            break
        model.train()
        if info.distributed:
            # same order on every rank, each its own shard; augmentation differs per rank
            perm = rank_shard_order(len(dataset), sample_w, train_cfg.seed, epoch, info.rank, info.world_size)
            aug_gen = torch.Generator().manual_seed(train_cfg.seed * 100_003 + epoch * 1_009 + info.rank + 1)
        else:
            perm, aug_gen = single_process_order(len(dataset), sample_w, gen), gen
        loader = torch.utils.data.DataLoader(dataset, sampler=batches_of(perm, train_cfg.batch_size),
                                             batch_size=None, num_workers=n_workers,
                                             pin_memory=device.type == "cuda",
                                             # its own generator: the loader's seed draw must not move
                                             # the global RNG that dropout uses
                                             generator=torch.Generator().manual_seed(train_cfg.seed + epoch))
        ep_t0 = time.time()
        loss_sum, ae_sum, n_seen = 0.0, 0.0, 0
        apart_sum = 0.0  # |plain reading - other acquisition's reading|, months (with consistency)
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{train_cfg.epochs}",
                   disable=not progress, mininterval=5)
        for item in bar:
            xb, yb, mb = item[:3]
            n = len(yb)
            if n < 2:  # every rank has equal-sized batches, so all skip together
                continue
            xb = xb.float() / 255.0
            if masking:
                xb = masked_batch(xb, item[3], model_cfg.mask_dilation, train_cfg, aug_gen)
            if train_cfg.consistency > 0:  # the same hands, acquired differently, in the same batch
                xb = torch.cat([xb, acquired_batch(xb, aug_gen, tuple(train_cfg.consistency_families))])
                yb, mb = torch.cat([yb, yb]), torch.cat([mb, mb])
            xb = _augment_jpeg(xb, train_cfg.aug_jpeg, train_cfg.aug_jpeg_quality, aug_gen)
            xb = _augment_intensity(xb, train_cfg.aug_contrast, aug_gen)
            xb = _augment_degradation(xb, train_cfg.aug_resolution, train_cfg.aug_noise, aug_gen)
            shared = train_cfg.consistency > 0 and train_cfg.consistency_shared_affine
            theta = random_affine(n if shared else len(xb), train_cfg.aug_rotate_deg, train_cfg.aug_scale,
                                  train_cfg.aug_translate, aug_gen, flip=model_cfg.mirror_invariant)
            theta = torch.cat([theta, theta]) if shared else theta
            x = to_model_input(xb, model_cfg.input_size, theta).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            yb, mb = yb.to(device, non_blocking=True), mb.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                out = net(x, mb)
            # anchored consistency: the label is trained on the plain readings (the first n) only
            k = n if train_cfg.consistency > 0 and train_cfg.consistency_anchored else len(yb)
            loss = laplace_nll(out.age[:k], out.scale[:k], yb[:k], model_cfg.age_std)
            loss = loss + train_cfg.stage_loss_weight * F.cross_entropy(out.stage_logits[:k],
                                                                        stage_targets(yb[:k], model_cfg))
            if train_cfg.consistency > 0:
                loss = loss + train_cfg.consistency * consistency_loss(out.age, out.scale,
                                                                       train_cfg.consistency_anchored)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += float(loss.detach()) * n
            ae_sum += float((out.age.detach()[:n] - yb[:n]).abs().sum())  # the images as they are
            if train_cfg.consistency > 0:
                apart_sum += float((out.age.detach()[:n] - out.age.detach()[n:]).abs().sum())
            n_seen += n
            bar.set_postfix(loss=f"{loss_sum / n_seen:.3f}", mae=f"{ae_sum / n_seen:.1f}")
        loss_sum, ae_sum, apart_sum, n_seen = D.sum_across([loss_sum, ae_sum, apart_sum, n_seen], device)
        D.broadcast_module(model)  # BatchNorm statistics: every rank validates and keeps rank 0's network
        if ema is not None:
            D.broadcast_module(ema)
        val_male = val_cases["male"].to_numpy()
        val_batch = INFERENCE_BATCH if device.type == "cpu" else 256
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            vp = _validate(model, val_images, val_male, val_batch, device, info)
            ep = _validate(ema.module, val_images, val_male, val_batch, device, info) if ema is not None else None
        vy = val_cases["boneage"].to_numpy(np.float64)
        val_mae = float(np.mean(np.abs(vp.age - vy)))
        val_nll = float(np.mean(np.log(2 * vp.scale) + np.abs(vy - vp.age) / vp.scale))
        row = {"epoch": epoch_offset + epoch + 1, "stage": stage_no, "train_loss": loss_sum / max(n_seen, 1), "train_mae": ae_sum / max(n_seen, 1),
               "val_nll": val_nll, "val_mae": val_mae, "lr": opt.param_groups[0]["lr"]}
        if train_cfg.consistency > 0:
            # whether training for precision is being learned: the two readings of a training hand, apart
            row["train_disagreement"] = apart_sum / max(n_seen, 1)
        candidates = [("raw", val_mae, model)]
        if ep is not None:
            row["val_mae_ema"] = float(np.mean(np.abs(ep.age - vy)))
            candidates.append(("ema", row["val_mae_ema"], ema.module))
        row["seconds"] = time.time() - ep_t0
        history.append(row)
        kind, epoch_best_mae, best_net = min(candidates, key=lambda c: c[1])
        improved = epoch_best_mae < best_mae
        if improved:
            best_mae, best_epoch, epochs_since_best, best_kind = epoch_best_mae, epoch, 0, kind
        else:
            epochs_since_best += 1
        if not info.is_main:
            continue
        if improved:
            _save_atomic({"state_dict": best_net.state_dict(), "epoch": epoch + 1, "val_mae": epoch_best_mae,
                          "weights": kind}, out_dir / "model.pt")
        elapsed = elapsed_before + time.time() - t0
        _save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                      "gen": gen.get_state(), "epoch": epoch, "best_mae": best_mae, "best_epoch": best_epoch,
                      "best_weights": best_kind, "history": history, "elapsed": elapsed,
                      **({"ema": ema.state_dict()} if ema is not None else {})}, last_path)
        write_atomic(out_dir / "history.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
        write_json_atomic(out_dir / "config.json", {**config_blob, "best_epoch": epoch_offset + best_epoch + 1,
                                                    "best_val_mae": best_mae, "best_weights": best_kind,
                                                    "epochs_run": len(history),
                                                    "train_seconds": elapsed})
        apart = f" apart {row['train_disagreement']:.2f}" if "train_disagreement" in row else ""
        print(f"epoch {epoch + 1}: train loss {row['train_loss']:.3f} MAE {row['train_mae']:.2f}{apart} | "
              f"val MAE {val_mae:.2f}" + (f" (EMA {row['val_mae_ema']:.2f})" if ema is not None else "") +
              f" {'*' if improved else ''} ({row['seconds']:.0f}s)", flush=True)
    total = elapsed_before + time.time() - t0
    if info.distributed:
        # every rank must end with the same network; recorded so a run (and the tests) can check it
        digests = D.gather_objects(D.state_sha256(model))
        if info.is_main:
            cfg_path = out_dir / "config.json"
            blob = json.loads(cfg_path.read_text()) if cfg_path.is_file() else dict(config_blob)
            blob["distributed"] = {**blob.get("distributed", {}), "replica_state_sha256": digests,
                                   "replicas_identical": len(set(digests)) == 1}
            write_json_atomic(cfg_path, blob)
            if len(set(digests)) != 1:
                print(f"WARNING: the {info.world_size} processes ended with different weights: {digests}")
        D.barrier()
    return TrainResult(epoch_offset + best_epoch + 1, best_mae, len(history), total, out_dir)
