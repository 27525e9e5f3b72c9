"""Stratified train / validation / calibration / internal-test split of the RSNA training table.

Stratified by sex x age band so every split has the same mix; saved as CSV in ``artifacts/`` so every later
step (training, conformal calibration, evaluation, the dashboard) sees the same cases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SPLIT_NAMES = ("train", "val", "calib", "test")
AGE_BAND_EDGES = (0, 24, 60, 96, 132, 168, 204, 10_000)
AGE_BAND_LABELS = ("0-2y", "2-5y", "5-8y", "8-11y", "11-14y", "14-17y", "17y+")
AGE_BAND = pd.CategoricalDtype(list(AGE_BAND_LABELS), ordered=True)  # sorts and groups in age order


@dataclass
class SplitConfig:
    val_frac: float = 0.08
    calib_frac: float = 0.08
    test_frac: float = 0.10
    seed: int = 42


def age_band(months) -> pd.Series:
    """Age band of months (Series or array) as the ordered categorical :data:`AGE_BAND`; NaN stays NaN."""
    return pd.cut(pd.Series(months, dtype=float), bins=list(AGE_BAND_EDGES), labels=list(AGE_BAND_LABELS),
                  right=False).astype(AGE_BAND)


def make_splits(cases: pd.DataFrame, cfg: SplitConfig = SplitConfig()) -> pd.DataFrame:
    """Return ``cases`` with a ``split`` column (train/val/calib/test), stratified by sex x age band."""
    df = cases.reset_index(drop=True).copy()
    strata = age_band(df["boneage"]).astype(str) + "_" + df["male"].astype(str)
    counts = strata.value_counts()
    strata = strata.where(strata.map(counts) >= 10, "rare")
    idx = np.arange(len(df))
    holdout = cfg.val_frac + cfg.calib_frac + cfg.test_frac
    train_idx, rest_idx = train_test_split(idx, test_size=holdout, stratify=strata, random_state=cfg.seed)
    rest_strata = strata.iloc[rest_idx]
    test_share = cfg.test_frac / holdout
    rest_a, test_idx = train_test_split(rest_idx, test_size=test_share, stratify=rest_strata, random_state=cfg.seed)
    calib_share = cfg.calib_frac / (cfg.val_frac + cfg.calib_frac)
    val_idx, calib_idx = train_test_split(rest_a, test_size=calib_share, stratify=strata.iloc[rest_a],
                                          random_state=cfg.seed)
    split = np.empty(len(df), dtype=object)
    split[train_idx], split[val_idx], split[calib_idx], split[test_idx] = "train", "val", "calib", "test"
    df["split"] = split
    return df
