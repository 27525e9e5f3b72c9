"""Anti-aliased strides (``ModelConfig.antialias``): the layer is the blur-then-subsample it claims to be,
plain-stride weights load into it and back, BatchNorm folding keeps its outputs, and on real radiographs
its features move less when the hand moves by one pixel."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from boneage.config import ANTIALIAS_SIZES, ModelConfig, model_config_from_dict
from boneage.nn.model import BLUR_TAPS, AntiAliasedConv2d, BoneAgeNet, fold_batchnorm

pytestmark = pytest.mark.integration


def test_layer_is_a_stride_one_convolution_blurred_then_subsampled():
    torch.manual_seed(0)
    for blur, taps in ((3, [1.0, 2.0, 1.0]), (5, [1.0, 4.0, 6.0, 4.0, 1.0])):
        t = torch.tensor(taps)
        k = (t[:, None] * t[None, :] / t.sum() ** 2).expand(6, 1, blur, blur)
        for kernel, size in ((3, (41, 40)), (5, (33, 34)), (3, (20, 21))):
            conv = AntiAliasedConv2d(6, 6, kernel, 2, kernel // 2, groups=6, bias=False, blur=blur)
            x = torch.randn(2, 6, *size)
            full = F.conv2d(x, conv.weight, padding=kernel // 2, groups=6)  # the plain convolution at stride 1
            ref = F.conv2d(F.pad(full, (blur // 2,) * 4), k, stride=2, groups=6)
            y = conv(x)
            plain = F.conv2d(x, conv.weight, stride=2, padding=kernel // 2, groups=6)
            assert y.shape == ref.shape == plain.shape  # the same output size as the plain strided layer
            m = (blur // 2 + kernel // 2 + 1) // 2 + 1  # the borders differ by what the zero padding stands in for
            assert torch.allclose(y[:, :, m:-m, m:-m], ref[:, :, m:-m, m:-m], atol=1e-5)
            assert not torch.allclose(y[:, :, m:-m, m:-m], plain[:, :, m:-m, m:-m], atol=1e-2)
        # a low-pass: a checkerboard (the highest frequency, which a plain stride aliases to a constant) is removed
        board = (torch.arange(40)[:, None] + torch.arange(40)[None, :]) % 2 * 2.0 - 1
        ident = AntiAliasedConv2d(1, 1, 1, 2, 0, bias=False, blur=blur)
        with torch.no_grad():
            ident.weight.fill_(1.0)
        plain = F.conv2d(board[None, None], ident.weight, stride=2)
        assert plain.abs().min() == 1.0  # a plain stride reads the checkerboard as a flat field
        assert ident(board[None, None])[..., 2:-2, 2:-2].abs().max() < 1e-6


def test_same_parameters_both_ways_and_checkpoint_keys_unchanged():
    plain = BoneAgeNet(ModelConfig(input_size=128), pretrained=True)
    aa = BoneAgeNet(ModelConfig(input_size=128, antialias=3), pretrained=False)
    assert plain.state_dict().keys() == aa.state_dict().keys()
    aa.load_state_dict(plain.state_dict(), strict=True)
    back = BoneAgeNet(ModelConfig(input_size=128), pretrained=False)
    back.load_state_dict(aa.state_dict(), strict=True)
    strided = [n for n, m in aa.backbone.named_modules() if isinstance(m, AntiAliasedConv2d)]
    assert strided == ["_conv_stem", "_blocks.1._depthwise_conv", "_blocks.3._depthwise_conv",
                       "_blocks.5._depthwise_conv", "_blocks.11._depthwise_conv"]  # lite0's five strides of 2
    x, male = torch.rand(2, 1, 128, 128), torch.tensor([0, 1])
    with torch.no_grad():
        assert aa.eval().backbone(x).shape == plain.eval().backbone(x).shape == (2, 1280, 4, 4)
        assert not torch.allclose(aa(x, male).age, plain(x, male).age)  # the strides do read differently


def test_fold_batchnorm_keeps_antialiased_outputs(train_image_path):
    from boneage.io.imaging import read_radiograph
    from boneage.geometry.preprocess import preprocess_array, to_model_input

    torch.manual_seed(0)
    ref = BoneAgeNet(ModelConfig(input_size=160, antialias=3), pretrained=True).eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(copy.deepcopy(ref))
    assert isinstance(folded.backbone._conv_stem, AntiAliasedConv2d)  # folding kept the layer's kind
    assert isinstance(folded.backbone._bn0, torch.nn.Identity) and folded.backbone._conv_stem.bias is not None
    assert isinstance(folded.backbone._blocks[1]._depthwise_conv, AntiAliasedConv2d)
    assert isinstance(folded.backbone._blocks[1]._bn1, torch.nn.Identity)
    img = preprocess_array(read_radiograph(train_image_path), 100)
    x = to_model_input(torch.as_tensor(np.stack([img, img[:, ::-1].copy()])), 160)
    with torch.no_grad():
        a, b = ref(x, torch.tensor([1, 0])), folded(x, torch.tensor([1, 0]))
    assert torch.allclose(a.features, b.features, atol=1e-4)
    assert torch.allclose(a.age, b.age, atol=1e-2)


def test_features_move_less_when_the_hand_moves_one_pixel(data_dir):
    """The ImageNet backbone's pooled features of 12 real radiographs, and of the same films moved by one
    input pixel: the anti-aliased strides change them by much less than the plain ones."""
    from boneage.io.imaging import read_radiograph
    from boneage.geometry.preprocess import preprocess_array, to_model_input

    ids = ["1377", "1378", "1379", "1380", "1381", "1382", "1383", "1384", "1385", "1387", "1388", "1389"]
    imgs = np.stack([preprocess_array(read_radiograph(data_dir / "train" / f"{i}.png"), 100) for i in ids])
    x = to_model_input(torch.as_tensor(imgs), 160)
    moved = torch.roll(x, shifts=1, dims=3)
    change = {}
    for aa in (0, 3, 5):
        bb = BoneAgeNet(ModelConfig(input_size=160, antialias=aa), pretrained=True).eval().backbone
        with torch.no_grad():
            f0, f1 = bb(x)[..., 1:-1, 1:-1].mean((2, 3)), bb(moved)[..., 1:-1, 1:-1].mean((2, 3))
        change[aa] = ((f1 - f0).norm(dim=1) / f0.norm(dim=1)).mean().item()
    assert change[3] < 0.7 * change[0], change
    assert change[5] < change[3], change


def test_config_checks_and_old_configs():
    with pytest.raises(ValueError, match="antialias 4 .* use 0 \\(plain strides\\), 3 or 5"):
        ModelConfig(antialias=4)
    with pytest.raises(ValueError, match="zeros only"):
        AntiAliasedConv2d(2, 2, 3, 2, 1, padding_mode="reflect")
    with pytest.raises(ValueError, match="smallcnn"):
        BoneAgeNet(ModelConfig(backbone="smallcnn", antialias=3), pretrained=False)
    assert model_config_from_dict({"backbone": "efficientnet-lite0", "input_size": 160}).antialias == 0
    assert set(ANTIALIAS_SIZES) == {0, *BLUR_TAPS}  # every size a config may name has its filter
