"""Acquisition changes for training (the precision benchmark's perturbations at random strengths) and the
consistency loss that trains two readings of one hand to agree."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.geometry.acquisition import FAMILIES, KNOWN, RANGES, acquired, acquired_batch
from boneage.io.imaging import read_radiograph
from boneage.evidence.precision import jpeg, rotate
from boneage.geometry.preprocess import preprocess_array
from boneage.training.loop import consistency_loss

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def base(train_image_path) -> np.ndarray:
    return preprocess_array(read_radiograph(train_image_path))


def test_every_family_keeps_the_size_and_changes_the_image(base):
    assert set(FAMILIES) < set(KNOWN) and "rotate" in KNOWN
    for family in KNOWN:
        for u in (0.0, 0.25, 1.0):  # not 0.5: the middle of the rotate range is no turn
            out = acquired(base, family, u)
            assert out.shape == base.shape and out.dtype == np.float32, family
            assert np.abs(out - base).mean() > 0.003, (family, u)


def test_jpeg_is_the_benchmarks_round_trip(base):
    lo, hi = RANGES["jpeg"]
    np.testing.assert_array_equal(acquired(base, "jpeg", 0.5), jpeg(base, int(round((lo + hi) / 2))))


def test_downscale_loses_resolution_and_border_shrinks_the_hand(base):
    small = acquired(base, "downscale", 0.0)  # half the resolution, squeezed back by nearest neighbour
    distinct_rows = len(np.unique(small, axis=0))
    assert distinct_rows <= 52, distinct_rows
    bordered = acquired(base, "border", 1.0)  # 25 % on each side: the outer sixth of the side is empty
    ring = int(base.shape[0] * 0.25 / 1.5) - 1
    assert bordered[:ring].max() <= base.min() + 1e-6 and bordered[:, -ring:].max() <= base.min() + 1e-6
    cropped = acquired(base, "crop", 1.0)  # 12 % cut away: the middle is enlarged
    assert not np.allclose(cropped, base)


def test_rotate_is_the_benchmarks_turn_either_way(base):
    np.testing.assert_array_equal(acquired(base, "rotate", 1.0), rotate(base, 15.0))
    np.testing.assert_array_equal(acquired(base, "rotate", 0.0), rotate(base, -15.0))


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown acquisition change 'mirror'.*jpeg, downscale, crop, border, rotate"):
        acquired(np.zeros((100, 100), np.float32), "mirror", 0.5)
    with pytest.raises(ValueError, match="unknown acquisition changes \\['mirror'\\]"):
        acquired_batch(torch.zeros((2, 100, 100)), torch.Generator().manual_seed(0), ("jpeg", "mirror"))


def test_batch_draws_only_the_families_asked_for(base):
    x = torch.from_numpy(np.stack([base] * 6))
    turned = acquired_batch(x, torch.Generator().manual_seed(1), ("rotate",))
    gen = torch.Generator().manual_seed(1)
    torch.randint(0, 1, (6,), generator=gen)
    u = torch.rand(6, generator=gen).tolist()
    for i in range(6):  # each image turned by its own drawn angle, nothing else
        lo, hi = RANGES["rotate"]
        expected = np.clip(rotate(base, lo + u[i] * (hi - lo)), 0, 1)
        np.testing.assert_allclose(turned[i].numpy(), expected, atol=1e-6)


def test_batch_draws_are_reproducible_and_leave_the_input_alone(base):
    x = torch.from_numpy(np.stack([base, base[::-1].copy(), base[:, ::-1].copy()]))
    before = x.clone()
    a = acquired_batch(x, torch.Generator().manual_seed(3))
    b = acquired_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(x, before)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, x)


def test_consistency_loss_is_the_disagreement_in_units_of_the_scale():
    age = torch.tensor([100.0, 50.0, 104.0, 50.0], requires_grad=True)  # readings 1 of two hands, then readings 2
    scale = torch.tensor([2.0, 5.0, 6.0, 5.0], requires_grad=True)
    loss = consistency_loss(age, scale)
    assert float(loss.detach()) == pytest.approx((4 / 4 + 0 / 5) / 2)
    loss.backward()
    assert scale.grad is None or float(scale.grad.abs().sum()) == 0  # the scale is held fixed
    assert float(age.grad[0]) < 0 < float(age.grad[2])  # pulls the two readings of hand 1 together
    same = torch.tensor([80.0, 80.0])
    assert float(consistency_loss(same, torch.tensor([3.0, 3.0]))) == 0


def test_anchored_consistency_pulls_only_the_other_acquisitions_reading():
    age = torch.tensor([100.0, 50.0, 104.0, 47.0], requires_grad=True)
    scale = torch.tensor([2.0, 5.0, 6.0, 5.0])
    loss = consistency_loss(age, scale, anchored=True)
    assert float(loss.detach()) == pytest.approx((4 / 4 + 3 / 5) / 2)  # the same disagreement
    loss.backward()
    assert float(age.grad[:2].abs().sum()) == 0  # the plain readings are held fixed
    assert float(age.grad[2]) > 0 > float(age.grad[3])  # the others move towards them


@pytest.mark.parametrize("anchored", [False, True])
def test_training_with_consistency_reads_every_image_twice(data_dir, tmp_path, monkeypatch, anchored):
    import pandas as pd

    from boneage.config import ModelConfig, TrainConfig
    from boneage.training.image_cache import load_images
    from boneage.nn.model import BoneAgeNet
    from boneage.training.loop import train_model

    cases = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(24).reset_index(drop=True)
    loaded = load_images(cases, data_dir / "train", progress=False)
    seen: list[int] = []
    forward = BoneAgeNet.forward

    def counting(self, x, male):
        if self.training:
            seen.append(len(x))
        return forward(self, x, male)

    monkeypatch.setattr(BoneAgeNet, "forward", counting)
    res = train_model(loaded.images[:16], loaded.cases.iloc[:16].reset_index(drop=True), loaded.images[16:],
                      loaded.cases.iloc[16:].reset_index(drop=True), tmp_path, ModelConfig(input_size=64),
                      TrainConfig(epochs=1, batch_size=8, consistency=1.0, consistency_anchored=anchored),
                      progress=False)
    assert seen == [16, 16]  # two batches of 8 hands, each read as it is and as acquired differently
    hist = pd.read_csv(tmp_path / "history.csv")
    assert np.isfinite(hist[["train_loss", "train_mae", "val_mae"]].to_numpy()).all()
    # how far apart the two readings of a training hand were (months): what training for precision pulls down
    assert hist["train_disagreement"].iloc[0] > 0 and np.isfinite(hist["train_disagreement"].iloc[0])
    assert res.best_val_mae > 0
    import json

    train = json.loads((tmp_path / "config.json").read_text())["train"]
    assert train["consistency"] == 1.0 and train["consistency_anchored"] is anchored


@pytest.mark.parametrize("shared", [False, True])
def test_shared_affine_gives_both_readings_of_a_hand_the_same_turn(data_dir, tmp_path, monkeypatch, shared):
    import pandas as pd

    import boneage.training.loop as training
    from boneage.config import ModelConfig, TrainConfig
    from boneage.training.image_cache import load_images

    cases = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(12).reset_index(drop=True)
    loaded = load_images(cases, data_dir / "train", progress=False)
    thetas: list[torch.Tensor] = []
    real = training.to_model_input

    def spy(batch, size, theta=None):
        if theta is not None:
            thetas.append(theta.clone())
        return real(batch, size, theta)

    monkeypatch.setattr(training, "to_model_input", spy)
    training.train_model(loaded.images[:8], loaded.cases.iloc[:8].reset_index(drop=True), loaded.images[8:],
                         loaded.cases.iloc[8:].reset_index(drop=True), tmp_path, ModelConfig(input_size=64),
                         TrainConfig(epochs=1, batch_size=8, consistency=1.0, consistency_families=("rotate",),
                                     consistency_shared_affine=shared), progress=False)
    assert len(thetas) == 1 and thetas[0].shape == (16, 2, 3)
    assert torch.equal(thetas[0][:8], thetas[0][8:]) is shared
