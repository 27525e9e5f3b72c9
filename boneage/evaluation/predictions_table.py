"""The predictions table: one row per case (every split of the RSNA training data and the official test set),
the table the dashboard, the fairness audit, the error analysis and the metrics all read.

``python -m pipelines.precompute`` writes it to ``artifacts/predictions.parquet``. This module owns its schema
(:data:`COLUMNS`, in table order) and every column that follows from others, so that no consumer derives
``sex``, ``age_band``, ``residual``, ``abs_error``, ``stage_true`` or ``entropy`` its own way; the interval
columns come from :func:`boneage.evaluation.conformal.add_intervals`, the outlier columns from
:class:`boneage.evaluation.embeddings.OutlierDetector`.

``age_band`` is an ordered categorical (:data:`boneage.training.splits.AGE_BAND`) in memory, so tables sort and group
in age order without a hand-made key; on disk it is plain text (:func:`for_storage`, read back by
:func:`read_predictions`), which keeps the stored file what it was.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from boneage.config import StageConfig, stages_from_months, write_atomic
from boneage.training.splits import AGE_BAND, age_band

COLUMNS: dict[str, str] = {
    "id": "case id (text)",
    "male": "sex as given (bool)",
    "boneage": "reference bone age, months; NaN where unknown (100 of the official test cases): never guessed",
    "split": "train, val, calib, test (the RSNA training table, artifacts/splits.csv) or official_test",
    "sex": "'M' or 'F', from male",
    "age_band": "band of the reference age (boneage.training.splits.AGE_BAND_LABELS); NaN without a reference",
    "boneage_pred": "predicted bone age, months",
    "residual": "boneage_pred - boneage, months (positive: the model says older); NaN without a reference",
    "abs_error": "|residual|",
    "uncertainty": "the model's Laplace scale for the case, months",
    "stage_true": "stage index of the reference age (0 Child, 1 Adolescent, 2 Adult); -1 without a reference",
    "stage_pred": "name of the most probable stage",
    "p_<stage>": "stage probabilities, one column per stage name in lower case (p_child, p_adolescent, p_adult)",
    "entropy": "Shannon entropy (nats) of the stage probabilities",
    "lower_<L>, upper_<L>": "Mondrian conformal bounds for L in 80, 90, 95 (boneage.evaluation.conformal.add_intervals)",
    "lower_<L>_global, upper_<L>_global": "the same from one global calibration",
    "outlier_score": "Local Outlier Factor of the penultimate features (higher: more unusual)",
    "is_outlier": "outlier_score above the training split's threshold (outliers.json)",
}


def sex_labels(male) -> np.ndarray:
    """'M' / 'F' for a boolean sequence."""
    return np.where(np.asarray(male).astype(bool), "M", "F")


def model_columns(cases: pd.DataFrame, age: np.ndarray, scale: np.ndarray, stage_prob: np.ndarray,
                  stages: StageConfig = StageConfig()) -> pd.DataFrame:
    """``cases`` (id, male, boneage, split) with the model's outputs and everything derived from them, in
    :data:`COLUMNS` order up to ``entropy``: ``age`` and ``scale`` (months) and ``stage_prob`` (n, stages)
    are one row per case."""

    df = cases.copy()
    df["sex"] = sex_labels(df["male"])
    df["age_band"] = age_band(df["boneage"].to_numpy()).to_numpy()  # categorical values, text on disk
    df["age_band"] = df["age_band"].astype(AGE_BAND)
    df["boneage_pred"] = np.asarray(age).astype(float)
    df["residual"] = df["boneage_pred"] - df["boneage"]
    df["abs_error"] = df["residual"].abs()
    df["uncertainty"] = np.asarray(scale).astype(float)
    names = list(stages.names)
    true = np.where(df["boneage"].notna(), stages_from_months(df["boneage"].fillna(0), stages), -1)
    df["stage_true"] = true.astype(int)
    df["stage_pred"] = [names[i] for i in stage_prob.argmax(1)]
    for j, n in enumerate(names):
        df[f"p_{n.lower()}"] = stage_prob[:, j].astype(float)
    p = np.clip(stage_prob, 1e-12, 1)
    df["entropy"] = -(p * np.log(p)).sum(1)
    return df


def with_reference(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a known reference age, as a copy: ``residual`` and ``abs_error`` recomputed from
    ``boneage`` and ``boneage_pred`` (they can never disagree with the reference used), ``sex`` and
    ``age_band`` derived where the table lacks them, ``age_band`` as the ordered categorical."""
    d = df[df["boneage"].notna()].copy()
    d["residual"] = d["boneage_pred"].astype(float) - d["boneage"].astype(float)
    d["abs_error"] = d["residual"].abs()
    if "sex" not in d.columns and "male" in d.columns:
        d["sex"] = sex_labels(d["male"])
    band = age_band(d["boneage"].to_numpy()).to_numpy()
    if "age_band" in d.columns:
        given = d["age_band"].astype(object)
        d["age_band"] = pd.Series(np.where(given.notna(), given, band), index=d.index).astype(AGE_BAND)
    else:
        d["age_band"] = pd.Categorical(band, dtype=AGE_BAND)
    return d


def for_storage(df: pd.DataFrame) -> pd.DataFrame:
    """A table with an ``age_band`` column as it is written to parquet: the band as text (missing stays missing),
    the column typed as pandas types any column of labels."""
    out = df.copy()
    if "age_band" in out.columns:
        out["age_band"] = out["age_band"].to_numpy(dtype=object)
    return out


def from_storage(df: pd.DataFrame) -> pd.DataFrame:
    """A stored table as the library uses it: ``id`` as text, ``age_band`` as the ordered categorical."""
    out = df.copy()
    out["id"] = out["id"].astype(str)
    if "age_band" in out.columns:
        out["age_band"] = out["age_band"].astype(object).astype(AGE_BAND)
    return out


def read_predictions(path: str | Path) -> pd.DataFrame:
    """``predictions.parquet`` with :func:`from_storage` applied."""
    return from_storage(pd.read_parquet(path))


def write_predictions(df: pd.DataFrame, path: str | Path) -> None:
    """Write the table (:func:`for_storage`) through a temporary file and rename."""
    table = for_storage(df)
    write_atomic(Path(path), lambda tmp: table.to_parquet(tmp, index=False))
