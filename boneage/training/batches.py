"""Training batches from an images array that may be a memory map: dataset, epoch orders, rank shards.

The images stay on disk (:mod:`boneage.training.image_cache`); a :class:`CaseBatches` dataset reads one whole batch
of rows per item, so a ``torch.utils.data.DataLoader`` with worker processes prefetches batches while the
network trains, and memory holds a few batches, not the data set. Augmentation is done afterwards, on the
batch, by the training loop.

Epoch order: one process draws it exactly as before this module existed (a permutation, or a weighted
draw with replacement, from the training generator), so a single-process run is reproducible across the
change. Under DDP every rank draws the same order from a generator seeded by (seed, epoch), as
``torch.utils.data.DistributedSampler`` does, pads it to a multiple of the world size and takes its own
interleaved shard; every rank then has the same number of equal-sized batches, which DDP needs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class CaseBatches(Dataset):
    """Item ``idx`` (a 1-D tensor of row numbers) -> (uint8 images (B, H, W), ages (B,), male (B,)), and the
    packed hand masks (B, H, W) uint8 when ``masks`` is given.

    ``images`` may be a ``np.memmap`` (read-only cache): only the requested rows are read. A memory map
    is reopened by file name in each worker process rather than pickled (pickling one copies it)."""

    def __init__(self, images: np.ndarray, age: np.ndarray, male: np.ndarray, masks: np.ndarray | None = None):
        self._images = images
        self.masks = masks  # packed hand masks (boneage.training.hand_masks) or None: then items have no 4th part
        self._mmap = None
        if isinstance(images, np.memmap) and images.filename:
            self._mmap = (str(images.filename), int(images.offset), images.dtype.str, tuple(images.shape))
        self.age = torch.as_tensor(np.asarray(age, np.float32))
        self.male = torch.as_tensor(np.asarray(male).astype(np.int64))

    def __len__(self) -> int:
        return len(self.age)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            name, offset, dtype, shape = self._mmap
            self._images = np.memmap(name, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        return self._images

    def __getstate__(self):
        state = dict(self.__dict__)
        if self._mmap is not None:
            state["_images"] = None
        return state

    def __getitem__(self, idx):
        rows = np.asarray(idx, dtype=np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        t = torch.from_numpy(rows)
        if self.masks is None:
            return x, self.age[t], self.male[t]
        return x, self.age[t], self.male[t], torch.from_numpy(np.ascontiguousarray(self.masks[rows]))


def single_process_order(n: int, weights: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """The epoch's order in one process: drawn from the training generator (as it always was)."""
    if weights is not None:
        return torch.multinomial(weights, n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen)


def rank_shard_order(n: int, weights: torch.Tensor | None, seed: int, epoch: int, rank: int,
                     world: int) -> torch.Tensor:
    """This rank's share of the epoch under DDP (see the module docstring); ``ceil(n / world)`` rows."""
    if weights is None:
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                     drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(iter(sampler)), dtype=torch.long)
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.multinomial(weights, n, replacement=True, generator=g)
    per = math.ceil(n / world)
    order = torch.cat([order, order[: per * world - n]])
    return order[rank::world]


def batches_of(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of an order (the last may be smaller)."""
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


class Rows:
    """A lazy row subset of an images array: ``Rows(a, idx)[s:e]`` reads only ``a[idx[s:e]]``."""

    def __init__(self, images: np.ndarray, idx: np.ndarray):
        self.images, self.idx = images, np.asarray(idx, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, s):
        return np.asarray(self.images[self.idx[s]])
