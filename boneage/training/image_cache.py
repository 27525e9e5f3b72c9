"""An on-disk cache of prepared base images: each radiograph decoded once, by several processes.

Why: native RSNA radiographs are 1,500-2,000 px PNGs (about 9 GB for 12,611); decoding and preparing one
takes tens of milliseconds, and 12,611 of them at a 512 px base geometry are 3.3 GB as uint8, more than a
training process should hold in RAM. The cache is one uint8 ``.npy`` (N, base, base) that training and
evaluation open memory-mapped (``np.load(mmap_mode="r")``), so the pages in use are read from disk on
demand and peak memory does not grow with the number or size of the images.

Layout in ``cache_dir`` for a key (:func:`cache_key`: the data folder, the ordered ids and the geometry's
:meth:`~boneage.geometry.framing.Geometry.key`):

``images_<key>.npy``
    the prepared images of the ids that loaded, in table order;
``images_<key>.json``
    the sidecar: ids that loaded, ids that failed with their reasons, the geometry and ``complete: true``.

A build writes ``images_<key>.npy.partial`` (worker processes fill its rows in place), renames it when
every row is written and flushed, and writes the sidecar last (atomically). The sidecar is the commit
marker: a build that is killed or raises at any point leaves no sidecar (or one that does not match the
array), so the next run rebuilds instead of trusting half-written pixels.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from boneage.config import write_json_atomic
from boneage.geometry.framing import Geometry, as_geometry
from boneage.geometry.hand import SEGMENTATION_VERSION
from boneage.io.imaging import ImageLoadError, read_radiograph, safe_image_path
from boneage.geometry.preprocess import BASE_SIZE, prepare, preprocess_array, to_uint8

CACHE_VERSION = "v7"  # bump when the layout or the preparation of the pixels changes
CHUNK = 32  # images per task sent to a worker process
SMALL_TABLE = 256  # below this many cases load_images decodes in this process unless told otherwise


@dataclass
class LoadedImages:
    """Prepared images of a case table: ``images[i]`` is the base image of ``cases.iloc[i]``."""

    cases: pd.DataFrame  # rows that loaded, in the order of ``images``
    images: np.ndarray  # (N, base, base) uint8, prepared; a read-only memmap when it comes from the cache
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    # The other phase views of films larger than the base size (geometry ``phases`` > 1), (M, base, base)
    # uint8, and the row of ``images`` each belongs to: every reading averages a film's views
    # (boneage.nn.forward.average_views). Empty when the geometry has one phase.
    extra_views: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.uint8))
    extra_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def load_case_image(image_dir: str | os.PathLike, case_id: str, geometry: Geometry | int = BASE_SIZE) -> np.ndarray:
    """One case's prepared image (base x base float32 in [0, 1]) in ``geometry``; raises ImageLoadError.

    An ``int`` geometry is that base size, squeezed, no framing (see :func:`boneage.geometry.preprocess.prepare`)."""
    return preprocess_array(read_radiograph(safe_image_path(image_dir, case_id)), as_geometry(geometry))


def cache_key(image_dir: str | os.PathLike, ids: list[str], geometry: Geometry) -> str:
    """16 hex digits naming the cache of these ids (in this order) from this folder in this geometry."""
    text = "|".join(ids) + f"|{Path(image_dir).resolve()}|{geometry.key()}|{CACHE_VERSION}"
    if geometry.mask == "hand":  # the masked pixels depend on the segmentation too
        text += f"|segmentation-v{SEGMENTATION_VERSION}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cache_paths(cache_dir: str | os.PathLike, key: str) -> tuple[Path, Path]:
    """(array, sidecar) paths of a key."""
    d = Path(cache_dir)
    return d / f"images_{key}.npy", d / f"images_{key}.json"


def open_image_cache(cases: pd.DataFrame, image_dir: str | os.PathLike, geometry: Geometry | int,
                     cache_dir: str | os.PathLike) -> LoadedImages | None:
    """The cached images of ``cases`` (memory-mapped, read-only), or None when there is no complete cache.

    Complete means: the sidecar exists, names this key, says ``complete``, and its id count matches the
    array's first dimension and its geometry the array's shape."""
    geometry = as_geometry(geometry)
    ids = cases["id"].astype(str).tolist()
    key = cache_key(image_dir, ids, geometry)
    arr_path, meta_path = cache_paths(cache_dir, key)
    if not (arr_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(arr_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok_ids = [str(i) for i in meta.get("ok_ids", [])]
    size = geometry.base_size
    if (not meta.get("complete") or meta.get("key") != key or images.shape != (len(ok_ids), size, size)
            or images.dtype != np.uint8):
        return None
    kept = cases[cases["id"].astype(str).isin(set(ok_ids))].reset_index(drop=True)
    if kept["id"].astype(str).tolist() != ok_ids:
        return None
    return LoadedImages(kept, images, [tuple(x) for x in meta.get("failed", [])])


def _decode_rows(arr_path: str, image_dir: str, ids: list[str], start: int, geometry: dict) -> list[tuple[int, str]]:
    """Worker: prepare ``ids`` into rows ``start..`` of the array file; returns (row, reason) of failures.

    Runs in a worker process (or in-process with one worker); writes straight into the memory-mapped
    file so no image travels back through a pipe."""
    geo = Geometry(**geometry)
    out = np.load(arr_path, mmap_mode="r+", allow_pickle=False)
    failed = []
    for k, cid in enumerate(ids):
        try:
            out[start + k] = to_uint8(load_case_image(image_dir, cid, geo))
        except ImageLoadError as exc:
            failed.append((start + k, str(exc)))
    out.flush()
    del out
    return failed


def _compact(src: Path, dst: Path, keep: np.ndarray, block: int = 256) -> None:
    """Copy rows ``keep`` of ``src`` into a new .npy ``dst``, a block at a time (bounded memory)."""
    a = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=(len(keep), *a.shape[1:]))
    for s in range(0, len(keep), block):
        out[s:s + block] = a[keep[s:s + block]]
    out.flush()
    del out, a


def default_workers() -> int:
    """Worker processes for a build: the CPU cores this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def build_image_cache(cases: pd.DataFrame, image_dir: str | os.PathLike, geometry: Geometry | int,
                      cache_dir: str | os.PathLike, workers: int | None = None,
                      progress: bool = True) -> LoadedImages:
    """Decode and prepare every case into the cache (see the module docstring) and open it.

    ``workers`` processes (default :func:`default_workers`; 1 decodes in this process) each fill chunks
    of rows. Unreadable or missing files are reported in ``failed`` and left out of the array."""
    geometry = as_geometry(geometry)
    ids = cases["id"].astype(str).tolist()
    key = cache_key(image_dir, ids, geometry)
    arr_path, meta_path = cache_paths(cache_dir, key)
    arr_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # whatever was there is no longer vouched for
    size = geometry.base_size
    partial = arr_path.with_name(arr_path.name + ".partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(ids), size, size))
    del out  # the header and the file's full length are on disk; workers map it themselves
    workers = default_workers() if workers is None else max(1, int(workers))
    geo = dataclasses.asdict(geometry)  # every field: a worker must prepare exactly what the key names
    tasks = [(str(partial), str(image_dir), ids[s:s + CHUNK], s, geo) for s in range(0, len(ids), CHUNK)]
    bad: dict[int, str] = {}
    bar = tqdm(total=len(ids), desc=f"preparing images ({geometry.key()}, {workers} proc.)",
               disable=not progress, mininterval=2, unit="img")
    try:
        if workers == 1 or len(tasks) <= 1:
            for t in tasks:
                bad.update(_decode_rows(*t))
                bar.update(len(t[2]))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                futures = {pool.submit(_decode_rows, *t): len(t[2]) for t in tasks}
                for f in as_completed(futures):
                    bad.update(f.result())
                    bar.update(futures[f])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    keep = np.array([i for i in range(len(ids)) if i not in bad], dtype=np.int64)
    if bad:
        compact = arr_path.with_name(arr_path.name + ".compact.partial")
        _compact(partial, compact, keep)
        partial.unlink()
        partial = compact
    os.replace(partial, arr_path)
    failed = [(ids[i], bad[i]) for i in sorted(bad)]
    write_json_atomic(meta_path, {"key": key, "complete": True, "version": CACHE_VERSION,
                                  "image_dir": str(Path(image_dir).resolve()), "geometry": geo,
                                  "n_requested": len(ids), "ok_ids": [ids[i] for i in keep],
                                  "failed": [list(x) for x in failed]})
    loaded = open_image_cache(cases, image_dir, geometry, cache_dir)
    if loaded is None:  # an invariant of the code above, not of the data
        raise RuntimeError(f"the image cache {arr_path} did not reopen after it was built")
    return loaded


def load_extra_views(cases: pd.DataFrame, image_dir: str | os.PathLike,
                     geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The other phase views (uint8) of the films of ``cases`` that are larger than the base size, and the
    row of ``cases`` each belongs to (see :class:`LoadedImages`). Decoded in this process: only geometries
    with ``phases`` > 1 need them, and the films worth it are the few native ones."""
    if geometry.phases == 1:
        return np.zeros((0, geometry.base_size, geometry.base_size), np.uint8), np.zeros(0, np.int64)
    views, owner = [], []
    for row, cid in enumerate(cases["id"].astype(str)):
        try:
            arr = read_radiograph(safe_image_path(image_dir, cid))
        except ImageLoadError as exc:  # it loaded into the cache earlier: the folder changed since
            raise ImageLoadError(f"{cid} is in the image cache but cannot be read again for its phase views "
                                 f"({exc}); the data folder changed since the cache was built: delete the "
                                 "cache folder and rerun") from None
        if max(arr.shape) <= geometry.base_size:
            continue  # one view (boneage.geometry.framing.phase_views): nothing to prepare again
        extra = prepare(arr, geometry).extra_views
        if extra is not None:
            views.append(to_uint8(extra))
            owner += [row] * len(extra)
    size = geometry.base_size
    return (np.concatenate(views) if views else np.zeros((0, size, size), np.uint8)), np.asarray(owner, np.int64)


def load_images(cases: pd.DataFrame, image_dir: str | os.PathLike, geometry: Geometry | int = BASE_SIZE,
                cache_dir: str | os.PathLike | None = None, progress: bool = True,
                workers: int | None = None) -> LoadedImages:
    """Prepared images of ``cases``: from the cache when it is complete, else decoded (and cached).

    Without ``cache_dir`` the images are decoded the same way into a temporary cache and read into memory
    (for small tables: tests, a subset, one evaluation). ``workers`` defaults to one process below
    ``SMALL_TABLE`` cases (starting processes costs more than it saves there). With ``phases`` > 1 the
    cache holds the first view and the other views of larger films are added (:func:`load_extra_views`)."""
    geometry = as_geometry(geometry)
    if geometry.phases > 1:
        loaded = load_images(cases, image_dir, dataclasses.replace(geometry, phases=1), cache_dir, progress, workers)
        loaded.extra_views, loaded.extra_owner = load_extra_views(loaded.cases, image_dir, geometry)
        return loaded
    if workers is None and len(cases) < SMALL_TABLE:
        workers = 1
    if cache_dir is not None:
        hit = open_image_cache(cases, image_dir, geometry, cache_dir)
        if hit is not None:
            return hit
        return build_image_cache(cases, image_dir, geometry, cache_dir, workers, progress)
    with tempfile.TemporaryDirectory(prefix="boneage-images-") as tmp:
        loaded = build_image_cache(cases, image_dir, geometry, tmp, workers, progress)
        images = np.array(loaded.images)  # into memory before the temporary folder goes
        del loaded.images
        return LoadedImages(loaded.cases, images, loaded.failed)
