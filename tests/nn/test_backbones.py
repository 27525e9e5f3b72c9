"""Every backbone end to end: lite0's layer names keep their modules; lite1 and lite2 train, save, load, predict
a real radiograph, explain it (Grad-CAM, activations) and give layer features, all by their own stage
structure (``feature_info``)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.evidence import explain
from boneage.config import ModelConfig, TrainConfig
from boneage.training.image_cache import load_images
from boneage.evaluation.embeddings import extract_features, layer_description, layer_path
from boneage.io.imaging import read_radiograph
from boneage.nn.model import BoneAgeNet
from boneage.inference.predictor import load_predictor
from boneage.training.loop import train_model

pytestmark = pytest.mark.integration


def test_lite0_layer_names_resolve_to_the_modules_the_shipped_artifacts_used():
    net = BoneAgeNet(ModelConfig(), pretrained=False)
    assert [layer_path(net, n) for n in ("stage3", "stage5", "head")] == [
        "backbone._blocks.4", "backbone._blocks.10", "backbone._bn1"]
    assert layer_description(net, "stage3") == "stage 3 (40 channels, 1/8 resolution)"
    assert layer_description(net, "head") == "backbone head (1280 channels, before pooling)"
    assert explain.gradcam_layers(net)["Stage 5"] == "backbone._blocks.10"
    assert explain.activation_layers(net)["Stage 2"] == "backbone._blocks.2"
    # the reductions are measured, not assumed: a 128 px input gives stage 3 maps of 16 px
    seen = {}
    mod = dict(net.named_modules())["backbone._blocks.4"]
    h = mod.register_forward_hook(lambda _m, _i, o: seen.__setitem__("s3", tuple(o.shape)))
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, 128, 128), torch.zeros(1, dtype=torch.long))
    h.remove()
    assert seen["s3"][1:] == (40, 16, 16)


@pytest.fixture(scope="module")
def small_split(data_dir):
    table = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(16)
    loaded = load_images(table, data_dir / "train", 100, progress=False)
    return loaded.images[:10], loaded.cases.iloc[:10].reset_index(drop=True), loaded.images[10:], \
        loaded.cases.iloc[10:].reset_index(drop=True)


@pytest.mark.parametrize("backbone", ["efficientnet-lite1", "efficientnet-lite2"])
def test_backbone_trains_predicts_explains_and_gives_layer_features(backbone, small_split, data_dir, tmp_path):
    tr_x, tr_c, va_x, va_c = small_split
    cfg = ModelConfig(backbone=backbone, input_size=64)
    res = train_model(tr_x, tr_c, va_x, va_c, tmp_path, cfg, TrainConfig(epochs=1, batch_size=5, num_threads=1),
                      progress=False)
    assert res.epochs_run == 1 and np.isfinite(res.best_val_mae)
    p = load_predictor(tmp_path, tta=False)
    assert p.cfg.backbone == backbone
    bb = p.model.backbone
    arr = read_radiograph(data_dir / "test" / "4361.png")
    pred = p.predict_array(arr, male=True)
    assert np.isfinite(pred.boneage_months) and pred.scale_months > 0
    img = p.preprocess(arr)
    heat = explain.attribute(p.model, img, True, "gradcam")
    assert heat.shape == img.shape and np.isfinite(heat).all() and heat.max() > 0
    layers = explain.gradcam_layers(p.model)
    assert layers["Stage 5"] == layer_path(p.model, "stage5") == "backbone." + bb.feature_module("stage5")
    n_blocks = len(bb._blocks)
    assert layers["Last block (stage 7)"] == f"backbone._blocks.{n_blocks - 1}" and n_blocks > 16
    maps = explain.layer_activations(p.model, img, True, "Stage 3", max_maps=8)
    assert maps.shape[0] == 8 and maps.shape[1] == 64 // 8  # stage 3 at 1/8 of the 64 px input
    raw, feats = extract_features(p.model, np.stack([img, img[:, ::-1].copy()]), np.array([True, False]))
    for name in ("stage3", "stage5", "head"):
        assert feats[name].shape == (2, bb.feature(name)["num_chs"]) and np.isfinite(feats[name]).all()
    assert feats["stage3"].shape[1] == {"efficientnet-lite1": 40, "efficientnet-lite2": 48}[backbone]
    assert np.allclose(raw.age[0], pred.boneage_months, atol=1e-3)
