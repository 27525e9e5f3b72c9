"""Batched inference and test-time augmentation on real training images with the shipped model.

TTA must change the prediction (it averages over moved or zoomed passes) but not the features: the precomputed neighbours
and outlier scores of the dashboard are compared with an upload's features, so both must come from the
plain pass. The model's stored default decides whether TTA is on, because its intervals were calibrated
that way.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import boneage.inference.predictor as predictor_module
from boneage.config import MODEL_DIR
from boneage.training.image_cache import load_images
from boneage.evaluation.embeddings import extract_features
from boneage.nn.forward import TTA_ZOOMS, run_network
from boneage.inference.predictor import default_tta, load_predictor
from boneage.io.tables import read_cases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shipped():
    predictor_module._DEFAULT = None
    return load_predictor()


@pytest.fixture(scope="module")
def images(data_dir):
    cases = read_cases(data_dir / "train.csv").cases.head(20)
    loaded = load_images(cases, data_dir / "train", 100, progress=False)
    assert len(loaded.images) == 20, loaded.failed
    return loaded.images, loaded.cases["male"].to_numpy().astype(bool), loaded.cases["boneage"].to_numpy()


def test_default_tta_is_read_from_the_model_config(shipped):
    stored = json.loads((MODEL_DIR / "config.json").read_text())
    assert shipped.tta is default_tta(stored)
    assert default_tta({}) is False  # models trained before the setting existed: off
    assert default_tta({"inference": {"tta": True}}) is True


def test_tta_override_shares_the_loaded_model(shipped):
    other = load_predictor(tta=not shipped.tta)
    assert other.tta is (not shipped.tta) and other.model is shipped.model
    assert load_predictor() is shipped  # the override did not replace the cached default


def test_tta_changes_predictions_but_not_features(shipped, images):
    imgs, male, _ = images
    plain = run_network(shipped.model, imgs, male, return_features=True, tta=False)
    tta = run_network(shipped.model, imgs, male, return_features=True, tta=True)
    assert len(TTA_ZOOMS) == 3 and TTA_ZOOMS[0] == 1.0
    np.testing.assert_allclose(tta.features, plain.features, rtol=1e-4, atol=1e-4)
    diff = np.abs(tta.age - plain.age)
    assert diff.max() > 0.05  # the zooms do enter the prediction
    assert diff.max() < 10  # ... as a small perturbation, not a different model
    np.testing.assert_allclose(tta.stage_prob.sum(1), 1, atol=1e-5)


def test_batch_size_does_not_change_predictions(shipped, images):
    imgs, male, _ = images
    a = run_network(shipped.model, imgs, male, batch_size=3, tta=True)
    b = run_network(shipped.model, imgs, male, batch_size=20, tta=True)
    np.testing.assert_allclose(a.age, b.age, atol=1e-3)
    np.testing.assert_allclose(a.scale, b.scale, atol=1e-3)


def test_precompute_features_match_the_predictor(shipped, images):
    """extract_features (precompute) gives the predictor's TTA ages and plain features, and layer
    features that do not depend on TTA."""
    imgs, male, _ = images
    raw_tta, layers_tta = extract_features(shipped.model, imgs, male, ("stage3", "head"), batch_size=8, tta=True)
    raw_plain, layers_plain = extract_features(shipped.model, imgs, male, ("stage3", "head"), batch_size=8)
    ref = run_network(shipped.model, imgs, male, return_features=True, tta=True)
    np.testing.assert_allclose(raw_tta.age, ref.age, atol=1e-3)
    np.testing.assert_allclose(raw_tta.features, ref.features, rtol=1e-4, atol=1e-4)
    for name in ("stage3", "head"):
        assert layers_tta[name].shape == (20, layers_plain[name].shape[1])
        np.testing.assert_allclose(layers_tta[name], layers_plain[name], rtol=1e-4, atol=1e-4)
    assert not np.allclose(raw_tta.age, raw_plain.age)


def test_tta_predictions_are_accurate_on_real_images(shipped, images):
    imgs, male, age = images
    pred = run_network(shipped.model, imgs, male, tta=True).age
    assert np.mean(np.abs(pred - age)) < 20  # the shipped model's val MAE is about 8 months


def test_fast_network_matches_the_eager_network(shipped, images):
    """The traced network (used for every prediction) agrees with the eager one that the explanations
    use, for any batch size, with and without TTA."""
    from boneage.nn.forward import fast_network_for

    imgs, male, _ = images
    fast = fast_network_for(shipped.model)
    assert fast is shipped.fast_network()  # traced once, shared
    for tta in (False, True):
        for bs in (1, 7, 16):
            eager = run_network(shipped.model, imgs, male, batch_size=bs, return_features=True, tta=tta)
            traced = run_network(shipped.model, imgs, male, batch_size=bs, return_features=True, tta=tta, fast=fast)
            np.testing.assert_allclose(traced.age, eager.age, atol=0.01)
            np.testing.assert_allclose(traced.scale, eager.scale, atol=0.01)
            np.testing.assert_allclose(traced.stage_prob, eager.stage_prob, atol=1e-4)
            np.testing.assert_allclose(traced.features, eager.features, atol=1e-3)


def test_traced_layer_features_match_eager_hooks_and_leave_no_hooks(shipped, images):
    """The precompute's layer features come from a traced network with the pooled layers as extra
    outputs; they must equal what forward hooks on the eager network see, and the eager network (used by
    the explanations) must not keep any hook."""
    import torch

    from boneage.evaluation.embeddings import layer_path
    from boneage.nn.forward import FastNetwork
    from boneage.geometry.preprocess import to_model_input

    imgs, male, _ = images
    paths = [layer_path(shipped.model, n) for n in ("stage3", "stage5", "head")]
    modules = dict(shipped.model.named_modules())
    fast = FastNetwork(shipped.model, paths)
    assert all(not modules[p]._forward_hooks for p in paths)
    seen = {}
    hooks = [modules[p].register_forward_hook(lambda _m, _i, out, p=p: seen.__setitem__(p, out.mean(dim=(2, 3))))
             for p in paths]
    try:
        x = to_model_input(torch.as_tensor(imgs), shipped.cfg.input_size).contiguous(memory_format=torch.channels_last)
        m = torch.as_tensor(male.astype(np.int64))
        with torch.no_grad():
            eager = shipped.model(x, m)
            out, layers = fast.with_layers(x, m)
    finally:
        for h in hooks:
            h.remove()
    np.testing.assert_allclose(out.age.numpy(), eager.age.numpy(), atol=0.01)
    for p in paths:
        assert layers[p].shape == seen[p].shape
        np.testing.assert_allclose(layers[p].numpy(), seen[p].numpy(), rtol=1e-3, atol=1e-3)
    _, feats = extract_features(shipped.model, imgs, male, ("stage3", "stage5", "head"), batch_size=7)
    for name, p in zip(("stage3", "stage5", "head"), paths):
        np.testing.assert_allclose(feats[name], seen[p].numpy(), rtol=1e-3, atol=1e-3)
