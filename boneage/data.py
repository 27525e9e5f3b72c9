"""Loading a whole case table's radiographs into memory, preprocessed, with per-case failure reasons.

The training set at 100x100 is 126 MB as uint8, so it is loaded once and kept in memory; augmentation
then runs on batched tensors (:mod:`boneage.preprocess`), which is what makes CPU training practical.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .imaging import ImageLoadError, read_radiograph, safe_image_path
from .geometry import Geometry
from .preprocess import BASE_SIZE, _geometry, preprocess_array, to_uint8


@dataclass
class LoadedImages:
    cases: pd.DataFrame  # rows that loaded, in the order of ``images``
    images: np.ndarray  # (N, base, base) uint8, preprocessed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)


def load_case_image(image_dir: str | os.PathLike, case_id: str, geometry: Geometry | int = BASE_SIZE) -> np.ndarray:
    """One case's preprocessed image (base x base float32 in [0, 1]) in the model's ``geometry``;
    raises ImageLoadError."""
    return preprocess_array(read_radiograph(safe_image_path(image_dir, case_id)), geometry)


def load_images(cases: pd.DataFrame, image_dir: str | os.PathLike, geometry: Geometry | int = BASE_SIZE,
                cache_dir: str | os.PathLike | None = None, progress: bool = True) -> LoadedImages:
    """Load and preprocess every case; unreadable or missing files are reported and skipped.

    With ``cache_dir`` the preprocessed array is kept as .npz keyed by the ids, folder and preprocessing
    geometry, so retraining does not decode 12,611 PNGs again.
    """
    geometry = _geometry(geometry)
    base_size = geometry.base_size
    # The original geometry keeps its original cache key, so existing caches stay valid.
    gkey = str(base_size) if geometry == Geometry(base_size) else geometry.key()
    ids = cases["id"].astype(str).tolist()
    cache_path = None
    if cache_dir is not None:
        key = hashlib.sha1(("|".join(ids) + str(Path(image_dir).resolve()) + f"|{gkey}|v2").encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / f"images_{key}.npz"
        if cache_path.is_file():
            z = np.load(cache_path, allow_pickle=False)
            ok = set(z["ok_ids"].tolist())
            failed = [tuple(x) for x in z["failed"].tolist()]
            kept = cases[cases["id"].astype(str).isin(ok)].reset_index(drop=True)
            return LoadedImages(kept, z["images"], failed)
    images, keep, failed = [], [], []
    for i, cid in enumerate(tqdm(ids, desc="loading images", disable=not progress, mininterval=2)):
        try:
            images.append(to_uint8(load_case_image(image_dir, cid, geometry)))
            keep.append(i)
        except ImageLoadError as exc:
            failed.append((cid, str(exc)))
    arr = np.stack(images) if images else np.zeros((0, base_size, base_size), np.uint8)
    kept = cases.iloc[keep].reset_index(drop=True)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(cache_path.stem + ".tmp.npz")
        np.savez(tmp, images=arr, ok_ids=np.array(kept["id"].astype(str).tolist()),
                 failed=np.array(failed, dtype=str).reshape(-1, 2))
        os.replace(tmp, cache_path)
    return LoadedImages(kept, arr, failed)
