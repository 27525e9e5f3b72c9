"""Choosing the cases of the maturation atlas: typical radiographs of a given bone age and sex.

"Typical" = a training case whose reference bone age is close to the age asked for *and* which the model
reads well (small absolute error), so the picture and its attention map show what a correctly read hand
of that age looks like. Selection is deterministic (no randomness), so the atlas is the same every visit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from boneage.training.splits import AGE_BAND, AGE_BAND_EDGES, AGE_BAND_LABELS
from boneage.evidence import explain

ATLAS_COLUMNS = ("id", "split", "male", "sex", "boneage", "boneage_pred", "abs_error", "age_band")


def _pool(df: pd.DataFrame, male: bool | None, split: str | None) -> pd.DataFrame:
    d = df[df["boneage"].notna() & df["boneage_pred"].notna()]
    if split is not None:
        d = d[d["split"] == split]
    if male is not None:
        d = d[d["male"].astype(bool) == bool(male)]
    d = d.assign(abs_error=(d["boneage_pred"].astype(float) - d["boneage"].astype(float)).abs())
    return d


def typical_cases(df: pd.DataFrame, age_months: float, male: bool, k: int = 4, window_months: float = 6.0,
                  min_pool: int | None = None, split: str | None = "train") -> pd.DataFrame:
    """``k`` well-read cases of sex ``male`` whose reference age is nearest ``age_months``.

    The candidates are the cases within ``window_months`` of the age, widened to the nearest ``min_pool``
    (default ``3 * k``) when the window holds fewer; of these the ``k`` with the smallest absolute error are
    returned, ordered by reference age. Adds ``age_distance`` (months from the requested age).
    """
    d = _pool(df, male, split)
    cols = [c for c in ATLAS_COLUMNS if c in d.columns] + ["age_distance"]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.assign(age_distance=(d["boneage"].astype(float) - float(age_months)).abs())
    d = d.sort_values(["age_distance", "abs_error", "id"], kind="stable")
    min_pool = 3 * k if min_pool is None else min_pool
    within = d[d["age_distance"] <= window_months]
    pool = within if len(within) >= min_pool else d.head(min_pool)
    pick = pool.sort_values(["abs_error", "id"], kind="stable").head(k)
    return pick.sort_values(["boneage", "id"], kind="stable")[cols].reset_index(drop=True)


def band_samples(df: pd.DataFrame, male: bool | None = None, n_per_band: int = 8, split: str | None = "train",
                 bands=AGE_BAND_LABELS, balance_sex: bool = True) -> pd.DataFrame:
    """Per age band, the ``n_per_band`` well-read cases nearest the band's middle age.

    For averaging attention maps over a band: cases read with small error, close to the band centre
    rather than piled at one edge (ties broken by id). The open last band is centred 1 year above its
    lower edge. Bands without cases are absent. With ``male=None`` and ``balance_sex`` half the cases of a
    band are girls and half boys (bone age already measures maturity, so both sexes belong in a band).
    """
    if male is None and balance_sex:
        half = (n_per_band + 1) // 2
        parts = [band_samples(df, m, k, split, bands, balance_sex=False)
                 for m, k in ((False, half), (True, n_per_band - half))]
        out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
        out = out.astype({"age_band": AGE_BAND})  # ordered categorical: sorts in age order
        return out.sort_values(["age_band", "male", "boneage", "id"], kind="stable").reset_index(drop=True)
    d = _pool(df, male, split)
    cols = [c for c in ATLAS_COLUMNS if c in d.columns or c == "age_band"]
    frames = []
    for i, band in enumerate(AGE_BAND_LABELS):
        if band not in bands:
            continue
        lo, hi = AGE_BAND_EDGES[i], AGE_BAND_EDGES[i + 1]
        hi = min(hi, lo + 24)
        g = d[(d["boneage"] >= AGE_BAND_EDGES[i]) & (d["boneage"] < AGE_BAND_EDGES[i + 1])]
        if g.empty:
            continue
        # Well read: at most the band's median error (all of them when the band is tiny).
        good = g[g["abs_error"] <= g["abs_error"].median()] if len(g) > n_per_band else g
        centre = (lo + hi) / 2
        good = good.assign(_d=(good["boneage"] - centre).abs()).sort_values(["_d", "abs_error", "id"], kind="stable")
        frames.append(good.head(n_per_band).assign(age_band=band)[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


# -- precomputed Grad-CAMs (optional; the dashboard computes them live when this artifact is absent) -------

AGE_GRID_YEARS = tuple(float(x) for x in np.round(np.arange(0.0, 19.0 + 1e-9, 0.5), 1))  # the page's slider
N_TYPICAL = 4
N_PER_BAND = 8
ATLAS_FILE = "atlas/gradcam.npz"


def atlas_cases(df: pd.DataFrame, ages_years=AGE_GRID_YEARS, k: int = N_TYPICAL,
                n_per_band: int = N_PER_BAND) -> pd.DataFrame:
    """Every case the atlas can show: the typical cases of each grid age and sex, and the band samples.

    One row per case (id, split, male), in a stable order.
    """
    frames = [typical_cases(df, y * 12, male, k=k) for y in ages_years for male in (False, True)]
    frames.append(band_samples(df, None, n_per_band=n_per_band))
    frames = [f[["id", "split", "male"]] for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["id", "split", "male"])
    out = pd.concat(frames, ignore_index=True).astype({"id": str})
    return out.drop_duplicates(["id", "split"]).sort_values(["split", "id"], kind="stable").reset_index(drop=True)


def _to_u8(heat: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(heat, np.float32), 0, 1) * 255).astype(np.uint8)


def compute_atlas(model, df: pd.DataFrame, load_image, k: int = N_TYPICAL, n_per_band: int = N_PER_BAND,
                  layer: str | None = None, progress=None) -> dict[str, np.ndarray]:
    """Grad-CAM of every atlas case and the average Grad-CAM of every band sample.

    ``load_image(id, split)`` returns the preprocessed base-size uint8 image or None (case skipped). Heatmaps
    are stored as uint8 (0-255 for [0, 1]). Returns arrays: layer (its label), ids, splits, heatmaps (N, H, W); bands,
    band_members (the ids of each band joined by spaces), band_n, band_heatmaps (B, H, W).
    """
    cases = atlas_cases(df, k=k, n_per_band=n_per_band)
    ids, splits, heats = [], [], []
    for i, r in enumerate(cases.itertuples(index=False)):
        img = load_image(r.id, r.split)
        if img is not None:
            ids.append(r.id)
            splits.append(r.split)
            heats.append(_to_u8(explain.attribute(model, img, bool(r.male), "gradcam", layer=layer)))
        if progress is not None:
            progress(i + 1, len(cases))
    bands = band_samples(df, None, n_per_band=n_per_band)
    b_names, b_members, b_n, b_heats = [], [], [], []
    for band, g in bands.groupby("age_band", sort=False):
        imgs, males, used = [], [], []
        for r in g.itertuples(index=False):
            img = load_image(str(r.id), r.split)
            if img is not None:
                imgs.append(img)
                males.append(bool(r.male))
                used.append(str(r.id))
        if imgs:
            b_names.append(band)
            b_members.append(" ".join(used))
            b_n.append(len(imgs))
            b_heats.append(_to_u8(explain.average_gradcam(model, np.stack(imgs), np.array(males), layer=layer)))
    shape = heats[0].shape if heats else (0, 0)
    layers = explain.gradcam_layers(model)
    label = next(iter(layers)) if layer is None else next((k for k, v in layers.items() if layer in (k, v)), layer)
    return {"layer": np.array(label), "ids": np.array(ids, dtype=str), "splits": np.array(splits, dtype=str),
            "heatmaps": np.stack(heats) if heats else np.zeros((0, *shape), np.uint8),
            "bands": np.array(b_names, dtype=str), "band_members": np.array(b_members, dtype=str),
            "band_n": np.array(b_n, dtype=int),
            "band_heatmaps": np.stack(b_heats) if b_heats else np.zeros((0, *shape), np.uint8)}


class AtlasHeatmaps:
    """Look-up of precomputed atlas Grad-CAMs (float [0, 1] maps), see :func:`compute_atlas`."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._case = {(str(i), str(s)): k for k, (i, s) in enumerate(zip(arrays["ids"], arrays["splits"]))}
        self._heat = arrays["heatmaps"]
        self._band = {str(b): k for k, b in enumerate(arrays["bands"])}
        self._members = [str(m).split() for m in arrays["band_members"]]
        self._band_heat = arrays["band_heatmaps"]
        self.layer = str(arrays["layer"]) if "layer" in arrays else None

    def case(self, case_id: str, split: str) -> np.ndarray | None:
        k = self._case.get((str(case_id), str(split)))
        return None if k is None else self._heat[k].astype(np.float32) / 255.0

    def band(self, band: str, members) -> np.ndarray | None:
        """The band's average map, only if it was computed over exactly ``members`` (else None: stale)."""
        k = self._band.get(str(band))
        if k is None or sorted(map(str, members)) != sorted(self._members[k]):
            return None
        return self._band_heat[k].astype(np.float32) / 255.0

    def __len__(self) -> int:
        return len(self._case)
