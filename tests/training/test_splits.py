"""Stratified train/val/calib/test split of the real RSNA training table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage.training.splits import SPLIT_NAMES, SplitConfig, age_band, make_splits
from boneage.io.tables import read_cases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def train_cases(data_dir) -> pd.DataFrame:
    return read_cases(data_dir / "train.csv", require_age=True).cases


@pytest.fixture(scope="module")
def splits(train_cases) -> pd.DataFrame:
    return make_splits(train_cases)


def test_four_disjoint_splits_covering_every_case(train_cases, splits):
    assert set(splits["split"]) == set(SPLIT_NAMES)
    assert splits["split"].notna().all()
    assert len(splits) == len(train_cases) == 12611
    assert splits["id"].is_unique  # one split per case, so the splits are disjoint
    ids = {name: set(g["id"]) for name, g in splits.groupby("split")}
    for a in SPLIT_NAMES:
        for b in SPLIT_NAMES:
            if a < b:
                assert not ids[a] & ids[b], (a, b)
    assert set().union(*ids.values()) == set(train_cases["id"])
    # the original columns are untouched
    pd.testing.assert_frame_equal(splits.drop(columns="split"), train_cases.reset_index(drop=True))


def test_split_sizes_follow_the_fractions(splits):
    cfg = SplitConfig()
    want = {"train": 1 - cfg.val_frac - cfg.calib_frac - cfg.test_frac, "val": cfg.val_frac,
            "calib": cfg.calib_frac, "test": cfg.test_frac}
    share = splits["split"].value_counts(normalize=True)
    for name, frac in want.items():
        assert share[name] == pytest.approx(frac, abs=0.005), name


def test_splits_are_balanced_in_sex_and_age(splits):
    overall_male, overall_age = splits["male"].mean(), splits["boneage"].mean()
    overall_bands = age_band(splits["boneage"]).value_counts(normalize=True)
    for name, g in splits.groupby("split"):
        assert g["male"].mean() == pytest.approx(overall_male, abs=0.015), name
        assert g["boneage"].mean() == pytest.approx(overall_age, abs=2.0), name
        assert g["boneage"].std() == pytest.approx(splits["boneage"].std(), abs=2.5), name
        bands = age_band(g["boneage"]).value_counts(normalize=True)
        for band, frac in overall_bands.items():
            assert bands.get(band, 0.0) == pytest.approx(frac, abs=0.015), (name, band)


def test_deterministic_for_a_seed(train_cases, splits):
    again = make_splits(train_cases, SplitConfig(seed=42))
    pd.testing.assert_frame_equal(again, splits)
    other = make_splits(train_cases, SplitConfig(seed=7))
    assert (other["split"] != splits["split"]).mean() > 0.1  # a different seed is a different split
    assert other["split"].value_counts().to_dict() == splits["split"].value_counts().to_dict()


def test_input_order_does_not_leak_into_membership(train_cases, splits):
    """Shuffling the rows changes which rows land where, but the split stays balanced and complete."""
    shuffled = make_splits(train_cases.sample(frac=1.0, random_state=0))
    assert shuffled["split"].value_counts().to_dict() == splits["split"].value_counts().to_dict()


def test_custom_fractions_and_rare_strata():
    rng = np.random.default_rng(0)
    n = 1000
    cases = pd.DataFrame({"id": [str(i) for i in range(n)], "male": rng.random(n) < 0.5,
                          "boneage": rng.uniform(1, 228, n)})
    cases.loc[:3, "boneage"] = 250.0  # 4 cases in the 17y+ band: too rare to stratify, pooled as 'rare'
    out = make_splits(cases, SplitConfig(val_frac=0.1, calib_frac=0.1, test_frac=0.2, seed=1))
    counts = out["split"].value_counts()
    assert counts["train"] == pytest.approx(600, abs=5)
    assert counts["test"] == pytest.approx(200, abs=5)
    assert counts["val"] == pytest.approx(100, abs=5) and counts["calib"] == pytest.approx(100, abs=5)


def test_age_band_edges():
    bands = age_band([0, 23.9, 24, 96, 203.9, 204, 228, np.nan])
    assert bands.tolist()[:7] == ["0-2y", "0-2y", "2-5y", "8-11y", "14-17y", "17y+", "17y+"]
    assert pd.isna(bands.iloc[7])


def test_prepare_pipeline_writes_split_files(data_dir, tmp_path, splits):
    from pipelines.prepare import prepare_splits

    out = prepare_splits(data_dir, tmp_path / "splits.csv")
    saved = pd.read_csv(out, dtype={"id": str})
    assert (saved["split"].to_numpy() == splits["split"].to_numpy()).all()
    assert (tmp_path / "splits.json").is_file()
