"""Feature extraction from several depths of the network, 2-D/3-D maps (t-SNE, UMAP), Local Outlier
Factor scores, and a layer-wise score of how well each layer's features encode age.

Why several layers: early layers encode texture and exposure (where hospitals differ), the penultimate
layer encodes maturity; showing both lets a user see where domain shift lives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor, LocalOutlierFactor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from boneage.nn.forward import INFERENCE_BATCH, FastNetwork, Member, RawPredictions, forward_batch
from boneage.nn.model import BoneAgeNet

# Named depths: (stage of the backbone's ``feature_info``, description). "penultimate" is the fused
# image+sex feature the heads read. The module behind a name comes from the loaded network's own stage
# structure (:func:`layer_path`), so lite0, lite1 and lite2 each tap their own stage ends; the
# descriptions here are lite0's (see :func:`layer_description` for any backbone).
LAYERS = {
    "stage3": ("stage3", "stage 3 (40 channels, 1/8 resolution)"),
    "stage5": ("stage5", "stage 5 (112 channels, 1/16 resolution)"),
    "head": ("head", "backbone head (1280 channels, before pooling)"),
    "penultimate": (None, "penultimate fused image + sex features (256)"),
}


def layer_path(model: BoneAgeNet, name: str) -> str:
    """Module path in ``model`` of a named layer (``stage3``, ``stage5``, ``head``, or any stage of the
    backbone's ``feature_info``)."""
    stage = LAYERS[name][0] if name in LAYERS else name
    if stage is None:
        raise KeyError(f"{name!r} is computed by the network's heads, not a backbone module")
    return "backbone." + model.backbone.feature_module(stage)


def layer_description(model: BoneAgeNet, name: str) -> str:
    """'stage 3 (40 channels, 1/8 resolution)' for this model's own backbone."""
    stage = LAYERS[name][0] if name in LAYERS else name
    if stage is None:
        return f"penultimate fused image + sex features ({model.cfg.hidden_dim})"
    f = model.backbone.feature(stage)
    if stage == "head":
        return f"backbone head ({f['num_chs']} channels, before pooling)"
    return f"{stage.replace('stage', 'stage ')} ({f['num_chs']} channels, 1/{f['reduction']} resolution)"


@torch.no_grad()
def extract_features(model: BoneAgeNet, images: np.ndarray, male: np.ndarray, layers=("stage3", "stage5", "head"),
                     batch_size: int = INFERENCE_BATCH, progress=None, tta: bool = False,
                     members: Sequence[Member] = ()) -> tuple[RawPredictions, dict[str, np.ndarray]]:
    """One pass giving predictions, penultimate features and globally pooled earlier layers.

    With ``tta`` the predictions are averaged over the passes of :func:`forward_batch`, as the predictor
    reads a film without phase views (a native film's reading is :meth:`BoneAgePredictor.read`'s, which
    ``pipelines.precompute`` uses); every feature comes from the plain pass alone. All passes run on a
    traced copy of the network with the layers as extra outputs (:class:`FastNetwork`), about twice as
    fast as the eager network with forward hooks. ``members`` (an ensemble) are averaged into the
    predictions only.
    """
    model.eval()
    paths = [layer_path(model, name) for name in layers]
    fast = FastNetwork(model, paths)
    ages, scales, probs, feats = [], [], [], []
    layer_feats: dict[str, list] = {n: [] for n in layers}
    images_t = torch.as_tensor(images)
    male_t = torch.as_tensor(np.asarray(male).astype(np.int64))
    for start in range(0, len(images), batch_size):
        out = forward_batch(model, images_t[start:start + batch_size], male_t[start:start + batch_size], tta,
                            fast=fast, members=members)
        ages.append(out.age)
        scales.append(out.scale)
        probs.append(out.stage_prob)
        feats.append(out.features)
        for name, path in zip(layers, paths):
            layer_feats[name].append(out.layers[path])
        if progress is not None:
            progress(min(start + batch_size, len(images)), len(images))
    cat = lambda xs: torch.cat(xs).numpy()  # noqa: E731
    raw = RawPredictions(cat(ages), cat(scales), cat(probs), cat(feats))
    return raw, {"penultimate": raw.features, **{n: cat(v) for n, v in layer_feats.items()}}


def embed_maps(features: np.ndarray, seed: int = 0, methods=("tsne", "umap"), dims=(2, 3),
               tsne3_subset: np.ndarray | None = None) -> pd.DataFrame:
    """t-SNE and UMAP coordinates (columns ``tsne2_x`` ... ``umap3_z``) of standardised features.

    PCA to 50 components first: the usual step that makes t-SNE fast and less noisy. Barnes-Hut t-SNE in
    3-D costs many times the 2-D map (an octree instead of a quadtree): on all 12,811 cases it was still
    running after 7 minutes on a shared 2-core CPU, when the whole 2-D map had taken about 3 minutes of
    CPU. ``tsne3_subset`` (row indices) restricts the 3-D t-SNE to those rows; the others get NaN
    coordinates and are left out of that one map.
    """
    x = StandardScaler().fit_transform(np.asarray(features, np.float32))
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    out = {}
    for method in methods:
        for d in dims:
            if method == "tsne":
                rows = np.arange(len(x)) if d == 2 or tsne3_subset is None else np.sort(np.asarray(tsne3_subset))
                perplexity = float(min(30, max(5, (len(rows) - 1) / 4)))
                coords = np.full((len(x), d), np.nan, np.float32)
                coords[rows] = TSNE(n_components=d, perplexity=perplexity, init="pca", random_state=seed,
                                    max_iter=750).fit_transform(x[rows])
            else:
                # deferred: umap imports numba, whose compilation costs seconds; only the precompute maps need it
                import umap

                coords = umap.UMAP(n_components=d, n_neighbors=min(15, len(x) - 1), random_state=seed,
                                   n_jobs=1).fit_transform(x)
            for k, axis in enumerate("xyz"[:d]):
                out[f"{method}{d}_{axis}"] = coords[:, k].astype(np.float32)
    return pd.DataFrame(out)


def layer_age_quality(features: np.ndarray, age: np.ndarray, seed: int = 0, k: int = 15) -> dict[str, float]:
    """How well a layer's features encode age: 5-fold cross-validated kNN regression MAE and R^2.

    kNN (not a trained probe) because it asks the question the maps show: are cases of similar age
    neighbours in this feature space?
    """
    age = np.asarray(age, float)
    ok = ~np.isnan(age)
    x, y = np.asarray(features, np.float32)[ok], age[ok]
    model = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=k))
    pred = cross_val_predict(model, x, y, cv=KFold(5, shuffle=True, random_state=seed))
    mae = float(np.mean(np.abs(pred - y)))
    r2 = float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))
    return {"knn_mae": mae, "knn_r2": r2, "n": int(ok.sum()), "dims": int(x.shape[1])}


@dataclass
class OutlierDetector:
    """Local Outlier Factor fitted on training-set features (novelty mode, so new cases can be scored).

    Score = LOF (about 1 for typical cases, larger for unusual ones). Threshold: the ``quantile`` of the
    training cases' own scores (default 99th percentile), so about 1% of training cases are flagged.
    """

    n_neighbors: int = 20
    quantile: float = 0.99
    threshold: float = float("nan")

    def fit(self, train_features: np.ndarray) -> "OutlierDetector":
        self._scaler = StandardScaler().fit(train_features)
        self._lof = LocalOutlierFactor(n_neighbors=self.n_neighbors, novelty=True)
        self._lof.fit(self._scaler.transform(train_features))
        train_scores = -self._lof.negative_outlier_factor_
        self.threshold = float(np.quantile(train_scores, self.quantile))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        return -self._lof.score_samples(self._scaler.transform(np.asarray(features, np.float32)))

    def flag(self, features: np.ndarray) -> np.ndarray:
        return self.score(features) > self.threshold


class SimilarCases:
    """Nearest training cases in the penultimate feature space (cosine distance)."""

    def __init__(self, features: np.ndarray, table: pd.DataFrame):
        f = np.asarray(features, np.float32)
        self._nn = NearestNeighbors(metric="cosine").fit(f)
        self.table = table.reset_index(drop=True)

    def query(self, feature: np.ndarray, k: int = 5, exclude_id: str | None = None) -> pd.DataFrame:
        n = min(len(self.table), k + (1 if exclude_id is not None else 0))
        dist, idx = self._nn.kneighbors(np.asarray(feature, np.float32).reshape(1, -1), n_neighbors=n)
        res = self.table.iloc[idx[0]].copy()
        res["distance"] = dist[0]
        if exclude_id is not None:
            res = res[res["id"].astype(str) != str(exclude_id)]
        return res.head(k).reset_index(drop=True)


# -- reading the precomputed maps (used by the dashboard) ------------------------------------------------

MAP_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}


def map_columns(method: str, dims: int) -> list[str]:
    """Coordinate columns of a map table, e.g. ``map_columns("umap", 3)`` -> umap3_x, umap3_y, umap3_z."""
    if method not in MAP_METHODS or dims not in (2, 3):
        raise ValueError(f"method must be one of {tuple(MAP_METHODS)} and dims 2 or 3, got {method!r}, {dims!r}")
    return [f"{method}{dims}_{axis}" for axis in "xyz"[:dims]]


def maps_with_cases(maps: pd.DataFrame, cases: pd.DataFrame, case_columns=None) -> pd.DataFrame:
    """Map coordinates joined with case columns (from the predictions table) by ``id``.

    Every map row must find its case: a map from a different predictions run is an error, not a silent
    partial join. ``case_columns`` defaults to every column of ``cases`` that the map table lacks.
    """
    maps = maps.assign(id=maps["id"].astype(str))
    cases = cases.assign(id=cases["id"].astype(str))
    cols = [c for c in (case_columns or cases.columns) if c != "id" and c not in maps.columns]
    out = maps.merge(cases[["id", *cols]], on="id", how="left", validate="many_to_one", indicator=True)
    missing = int((out.pop("_merge") != "both").sum())
    if missing:
        raise ValueError(f"{missing} map rows have no case in the predictions table: the embedding maps are stale "
                         "(rerun `python -m pipelines.precompute --only embeddings`)")
    return out


def layer_quality_table(report: dict) -> pd.DataFrame:
    """``layer_quality.json`` as a table, one row per layer from shallow to deep.

    Columns: layer, description, knn_mae, knn_r2, n, dims.
    """
    layers = report.get("layers", {})
    order = [n for n in LAYERS if n in layers] + [n for n in layers if n not in LAYERS]
    rows = [{"layer": n, "description": layers[n].get("description", LAYERS.get(n, (None, n))[1]),
             **{k: layers[n].get(k, np.nan) for k in ("knn_mae", "knn_r2", "n", "dims")}} for n in order]
    return pd.DataFrame(rows, columns=["layer", "description", "knn_mae", "knn_r2", "n", "dims"])


def most_unusual(cases: pd.DataFrame, k: int = 12) -> pd.DataFrame:
    """Cases ordered by LOF outlier score, highest first: all flagged ones, then up to ``k`` in total."""
    d = cases.sort_values("outlier_score", ascending=False, kind="stable")
    flagged = d[d["is_outlier"].fillna(False).astype(bool)]
    return d.head(max(k, len(flagged))).reset_index(drop=True)
