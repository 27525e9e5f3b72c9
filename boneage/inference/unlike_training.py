"""The "unlike the training data" check for every door: an image that passed the input gate but whose
network features lie outside the training radiographs' (Local Outlier Factor on the penultimate features,
:class:`boneage.evaluation.embeddings.OutlierDetector`, the same check the dashboard's Predict page shows).

The gate (:mod:`boneage.io.input_gate`) refuses what cannot be a hand radiograph; this check only *marks* what
passes but is unusual (e.g. a radiograph of an adult's foot, a heavily cropped hand), so that the estimate is
read with extra caution. It needs the artifact set's training features, which belong to the shipped model:
a different model folder has different features, and the check is then unavailable.
"""
from __future__ import annotations

import numpy as np

from boneage.store.artifacts import ArtifactStore
from boneage.evaluation.embeddings import OutlierDetector


def fit_training_outlier_check(store: ArtifactStore | None = None) -> OutlierDetector:
    """LOF fitted on the training split's precomputed features (deterministic; about 2 s on 2 cores).

    Raises :class:`boneage.store.artifacts.ArtifactMissingError` naming the missing file and how to make it."""
    store = store or ArtifactStore.default()
    df = store.predictions()
    feats = store.features()
    if len(feats) != len(df):
        raise ValueError(f"{store.root}: {len(feats)} feature rows for {len(df)} predictions; rerun "
                         "`python -m pipelines.precompute`.")
    return OutlierDetector().fit(feats[(df["split"] == "train").to_numpy()])


def outlier_scores(detector: OutlierDetector, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(LOF scores, flagged) for (N, D) penultimate features."""
    scores = detector.score(np.asarray(features, np.float32))
    return scores, scores > detector.threshold
