"""Weight EMA in training, on real images: validated beside the raw weights, saved when better, resumable."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.config import ModelConfig, TrainConfig
from boneage.training.image_cache import load_images
from boneage.training.loop import train_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_data(data_dir):
    cases = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(40).reset_index(drop=True)
    loaded = load_images(cases, data_dir / "train", progress=False)
    assert not loaded.failed
    n = 28
    return (loaded.images[:n], loaded.cases.iloc[:n].reset_index(drop=True),
            loaded.images[n:], loaded.cases.iloc[n:].reset_index(drop=True))


def test_ema_is_validated_saved_and_resumed(small_data, tmp_path):
    tr_x, tr_c, va_x, va_c = small_data
    mcfg = ModelConfig(input_size=64)
    tcfg = TrainConfig(epochs=1, batch_size=14, ema_decay=0.5, patience=10)
    train_model(tr_x, tr_c, va_x, va_c, tmp_path, mcfg, tcfg, progress=False)
    last = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert "ema" in last, "the EMA state must be checkpointed for resume"
    raw = last["model"]
    ema_state = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    float_keys = [k for k, v in raw.items() if v.is_floating_point() and k in ema_state]
    assert float_keys
    assert any(not torch.equal(raw[k], ema_state[k]) for k in float_keys), "EMA weights equal the raw weights"

    # resume into a second epoch: the history grows and keeps both validation columns
    tcfg2 = TrainConfig(epochs=2, batch_size=14, ema_decay=0.5, patience=10)
    res = train_model(tr_x, tr_c, va_x, va_c, tmp_path, mcfg, tcfg2, progress=False)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert hist["epoch"].tolist() == [1, 2]
    assert hist["val_mae_ema"].notna().all()
    best = min(hist["val_mae"].min(), hist["val_mae_ema"].min())
    assert res.best_val_mae == pytest.approx(best)
    saved = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert saved["weights"] in ("raw", "ema")
    assert saved["val_mae"] == pytest.approx(best)
    row = hist.loc[(hist[["val_mae", "val_mae_ema"]] - best).abs().min(axis=1).idxmin()]
    expected_kind = "ema" if abs(row["val_mae_ema"] - best) < abs(row["val_mae"] - best) else "raw"
    assert saved["weights"] == expected_kind
    assert json.loads((tmp_path / "config.json").read_text())["best_weights"] == saved["weights"]


def test_training_without_ema_has_no_ema_column(small_data, tmp_path):
    tr_x, tr_c, va_x, va_c = small_data
    train_model(tr_x, tr_c, va_x, va_c, tmp_path, ModelConfig(input_size=64),
                TrainConfig(epochs=1, batch_size=14), progress=False)
    assert "val_mae_ema" not in pd.read_csv(tmp_path / "history.csv").columns
    assert "ema" not in torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)


def test_group_balanced_sampling_weights_on_the_real_table(data_dir):
    """--balance-power: each sex x age-band group is drawn in proportion to n ** (1 - power)."""
    from boneage.training.splits import age_band
    from boneage.training.loop import group_sampling_weights
    from boneage.io.tables import read_cases

    cases = read_cases(data_dir / "train.csv").cases
    assert group_sampling_weights(cases, 0.0) is None
    w = group_sampling_weights(cases, 0.5).numpy()
    assert w.shape == (len(cases),) and abs(w.sum() - 1) < 1e-9
    group = cases["male"].astype(str) + "/" + age_band(cases["boneage"].to_numpy()).astype(str)
    share = pd.Series(w).groupby(group.to_numpy()).sum()
    n = group.value_counts()
    expected = n ** 0.5 / (n ** 0.5).sum()
    assert (share - expected[share.index]).abs().max() < 1e-9
    rare, common = "False/17y+", "True/11-14y"
    assert n[rare] < 100 < n[common]
    assert share[rare] / share[common] > n[rare] / n[common] * 3  # the rare extreme is drawn far more often
    shuffled = cases.sample(frac=1, random_state=0)  # a non-default index must not misalign the groups
    np.testing.assert_allclose(group_sampling_weights(shuffled, 0.5).numpy(), w[shuffled.index.to_numpy()], rtol=1e-12)


def test_training_with_balanced_sampling_runs_and_is_recorded(small_data, tmp_path):
    tr_x, tr_c, va_x, va_c = small_data
    tcfg = TrainConfig(epochs=1, batch_size=14, patience=10, balance_power=0.5)
    res = train_model(tr_x, tr_c, va_x, va_c, tmp_path, ModelConfig(input_size=64), tcfg, progress=False)
    assert (tmp_path / "model.pt").is_file() and res.best_val_mae < 200
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["balance_power"] == 0.5
