"""Read-only access to the committed artifacts, with messages that say what is missing and how to fix it.

The dashboard reads everything through :class:`ArtifactStore`; nothing here computes analysis results.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from boneage.settings import Settings
from boneage.store.manifest import ManifestProblem, check_manifest
from boneage.evaluation.predictions_table import from_storage


# relative path -> the pipeline command that produces it
PRODUCERS = {
    "model/model.pt": "python -m pipelines.train",
    "model/config.json": "python -m pipelines.train",
    "model/history.csv": "python -m pipelines.train",
    "model/conformal.json": "python -m pipelines.precompute --only predictions",
    "metrics.json": "python -m pipelines.evaluate",
    "splits.csv": "python -m pipelines.prepare",
    "predictions.parquet": "python -m pipelines.precompute --only predictions",
    "coverage.json": "python -m pipelines.precompute --only predictions",
    "outliers.json": "python -m pipelines.precompute --only predictions",
    "embeddings/features_penultimate.npy": "python -m pipelines.precompute --only predictions",
    "embeddings/maps_penultimate.parquet": "python -m pipelines.precompute --only embeddings",
    "embeddings/maps_layers.parquet": "python -m pipelines.precompute --only embeddings",
    "embeddings/layer_quality.json": "python -m pipelines.precompute --only embeddings",
    "stage_calibration.json": "python -m pipelines.precompute --only calibration",
    "errors/summary.json": "python -m pipelines.precompute --only errors",
    "explanation_audit.json": "python -m pipelines.precompute --only explanations",
    "explanation_audit_cases.parquet": "python -m pipelines.precompute --only explanations",
    "precision.json": "python -m pipelines.precision",
    "context.json": "python -m pipelines.context",
    "mask_quality.json": "python -m pipelines.mask_quality",
}


class ArtifactMissingError(FileNotFoundError):
    """An artifact file is missing; the message names it and the command that makes it."""


def default_artifacts_dir() -> Path:
    """The artifact set in use: ``$BONEAGE_ARTIFACTS`` as it is now (:class:`boneage.settings.Settings`), else
    the repository's ``artifacts/``."""
    return Settings.from_env().artifacts_dir


@dataclass
class ArtifactStore:
    root: Path

    @classmethod
    def default(cls) -> "ArtifactStore":
        return cls(default_artifacts_dir())

    def path(self, rel: str) -> Path:
        p = self.root / rel
        if not p.is_file():
            how = PRODUCERS.get(rel)
            if how is None and rel.startswith("fairness/"):
                how = "python -m pipelines.precompute --only fairness"
            if how is None and rel.startswith("errors/"):
                how = "python -m pipelines.precompute --only errors"
            raise ArtifactMissingError(f"Artifact {p} is missing. Make it with `{how or 'python -m pipelines.precompute'}`"
                                       " (or restore it with `git checkout artifacts/`).")
        return p

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def problems(self) -> list[ManifestProblem]:
        return check_manifest(self.root, required=tuple(PRODUCERS))

    # -- loaders ---------------------------------------------------------------------------------
    def json(self, rel: str):
        return json.loads(self.path(rel).read_text())

    def table(self, rel: str) -> pd.DataFrame:
        p = self.path(rel)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        if "id" in df.columns:
            df["id"] = df["id"].astype(str)
        return df

    def predictions(self) -> pd.DataFrame:
        """The predictions table (schema: :data:`boneage.evaluation.predictions_table.COLUMNS`), age bands ordered."""
        return from_storage(self.table("predictions.parquet"))

    def features(self) -> np.ndarray:
        return np.load(self.path("embeddings/features_penultimate.npy")).astype(np.float32)

    def history(self) -> pd.DataFrame:
        return self.table("model/history.csv")

    def model_config(self) -> dict:
        return self.json("model/config.json")

    def metrics(self) -> dict:
        return self.json("metrics.json")

    def model_card(self) -> str:
        return self.path("MODEL_CARD.md").read_text()

    def fairness_table(self, split: str, name: str) -> pd.DataFrame:
        return self.table(f"fairness/{split}_{name}.csv")

    def fairness_tables(self, split: str) -> dict[str, pd.DataFrame]:
        prefix = f"{split}_"
        folder = self.root / "fairness"
        if not folder.is_dir():
            self.path(f"fairness/{split}_by_sex.csv")  # raises with the fix
        return {p.stem[len(prefix):]: self.table(f"fairness/{p.name}") for p in sorted(folder.glob(f"{prefix}*.csv"))}
