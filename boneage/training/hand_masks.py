"""The hand masks of a training set, computed once and kept beside its image cache.

A model that reads the hand alone (geometry ``mask = "hand"``) is trained on unmasked images and their
masks, so each batch can draw its own mask noise (:func:`boneage.geometry.masking.isolate_hand_batch`): a
dilation around the model's own, and the segmentation's tight mask instead of its mask, at random, so the
network does not learn one mask's quirks. The masks are :func:`boneage.geometry.hand.segment_hand` of the
cached (unmasked) base images, packed two to a byte (:func:`boneage.geometry.masking.pack_masks`), and saved as
``masks_<key>.npy`` (temporary file, then rename) so a resumed run does not segment 12,611 images again.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from boneage.geometry import hand as hand_module
from boneage.geometry.hand import segment_hand
from boneage.geometry.masking import pack_masks

MASKS_VERSION = "v1"  # bump when the packing changes (the segmentation has its own SEGMENTATION_VERSION)


def segment_all(images: np.ndarray, progress: bool = False) -> np.ndarray:
    """Packed masks (N, H, W) uint8 of base images (N, H, W) uint8 (:func:`boneage.geometry.masking.pack_masks`)."""
    out = np.zeros(images.shape, np.uint8)
    for i in tqdm(range(len(images)), desc="segmenting hands", disable=not progress, mininterval=5, unit="img"):
        seg = segment_hand(np.asarray(images[i]))
        out[i] = pack_masks(seg.mask, seg.tight)
    return out


def masks_key(images: np.ndarray) -> str:
    """16 hex digits naming these images' masks: a digest of the pixels, the thresholds and the version."""
    h = hashlib.sha1()
    h.update(repr((images.shape, hand_module.SEGMENTATION_VERSION, MASKS_VERSION)).encode())
    for s in range(0, len(images), 1024):
        h.update(np.ascontiguousarray(images[s:s + 1024]).tobytes())
    return h.hexdigest()[:16]


def load_hand_masks(images: np.ndarray, cache_dir: str | os.PathLike | None, progress: bool = False) -> np.ndarray:
    """The packed masks of ``images``: from ``cache_dir`` when saved there, else computed (and saved)."""
    if cache_dir is None:
        return segment_all(images, progress)
    path = Path(cache_dir) / f"masks_{masks_key(images)}.npy"
    if path.is_file():
        masks = np.load(path, allow_pickle=False)
        if masks.shape == images.shape and masks.dtype == np.uint8:
            return masks
    masks = segment_all(images, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.partial")
    with os.fdopen(fd, "wb") as f:
        np.save(f, masks)
    os.replace(tmp, path)
    return masks
