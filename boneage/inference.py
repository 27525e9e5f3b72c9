"""Batched forward passes of a trained network over preprocessed images (no file I/O here)."""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .model import BoneAgeNet, BoneAgeOutput
from .preprocess import to_model_input

# Test-time augmentation: the plain image first, then two small zooms. The plain pass comes first so its
# penultimate features (and any layer hooks) can be kept: features describe the image as it is, so an
# upload's nearest neighbours and outlier score match the precomputed ones whether or not TTA is on.
TTA_ZOOMS = (1.0, 0.95, 1.05)

# Small batches with channels-last tensors: on the 2-core CPU a batch of 16 ran at 13 ms per 160 px image
# against 29-31 ms in batches of 64-128 (depthwise convolutions thrash the cache on large batches).
INFERENCE_BATCH = 16


@dataclass
class RawPredictions:
    age: np.ndarray  # months
    scale: np.ndarray  # Laplace scale, months
    stage_prob: np.ndarray  # (N, n_stages)
    features: np.ndarray | None = None  # (N, hidden_dim) penultimate features of the plain (unzoomed) pass


@dataclass
class BatchOutput:
    age: torch.Tensor
    scale: torch.Tensor
    stage_prob: torch.Tensor
    features: torch.Tensor  # plain pass only


def zoom_theta(n: int, zoom: float) -> torch.Tensor | None:
    """Affine matrices that zoom every image of a batch about its centre (None for no zoom)."""
    if zoom == 1.0:
        return None
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    return theta


class _TupleOutputs(nn.Module):
    """The network with a tuple output, which tracing needs."""

    def __init__(self, model: BoneAgeNet):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, male: torch.Tensor):
        out = self.model(x, male)
        return out.age, out.scale, out.stage_logits, out.features


class FastNetwork:
    """A traced, frozen copy of an eval-mode network for CPU inference (``torch.jit.optimize_for_inference``).

    Why: on the 2-core CPU it runs a 160 px image in about 6-7 ms against 11-15 ms for the eager network
    (oneDNN convolutions with pre-packed weights). Predictions match the eager network to float rounding
    (tests/test_inference.py). It cannot run hooks or gradients: explanations and layer features use the
    eager network, and the weights must not change after tracing.
    """

    def __init__(self, model: BoneAgeNet):
        size = model.cfg.input_size
        example = (torch.zeros(2, 1, size, size).contiguous(memory_format=torch.channels_last),
                   torch.zeros(2, dtype=torch.int64))
        with torch.no_grad():
            traced = torch.jit.trace(_TupleOutputs(model).eval(), example, check_trace=False)
            self.module = torch.jit.optimize_for_inference(traced)

    def __call__(self, x: torch.Tensor, male: torch.Tensor) -> BoneAgeOutput:
        age, scale, logits, features = self.module(x, male)
        return BoneAgeOutput(age=age, scale=scale, stage_logits=logits, features=features)


@dataclass(frozen=True)
class Member:
    """A further trained network whose predictions are averaged with the primary network's (an ensemble).

    Why only predictions: independently trained networks make partly independent errors, so their mean
    is more accurate; features, layer hooks and explanations stay those of the primary network, so
    nearest neighbours, outlier scores and heatmaps mean the same with or without members.
    """
    model: BoneAgeNet
    fast: "FastNetwork | None" = None


_FAST: "weakref.WeakKeyDictionary[BoneAgeNet, FastNetwork]" = weakref.WeakKeyDictionary()
_FAST_LOCK = threading.Lock()


def fast_network_for(model: BoneAgeNet) -> FastNetwork:
    """The :class:`FastNetwork` of a loaded eval-mode model, traced once (the benchmark's first prediction,
    tracing included, took 0.6 s) and then shared."""
    if model.training:
        raise ValueError("FastNetwork traces an eval-mode network; call model.eval() first")
    with _FAST_LOCK:
        if model not in _FAST:
            _FAST[model] = FastNetwork(model)
        return _FAST[model]


@torch.no_grad()
def forward_batch(model: BoneAgeNet, images: torch.Tensor, male: torch.Tensor, tta: bool = False,
                  after_plain: Callable[[], None] | None = None, device: str | torch.device = "cpu",
                  fast: FastNetwork | None = None, members: Sequence[Member] = ()) -> BatchOutput:
    """One batch through the network, averaged over :data:`TTA_ZOOMS` when ``tta``.

    ``after_plain`` runs right after the plain pass: forward hooks that collect layer features read
    them there, before the zoomed passes overwrite them; that pass therefore runs on the eager ``model``.
    Every other pass runs on ``fast`` when given. ``members`` (an ensemble) run the same passes, each at
    its own input size; every network weighs the same in the mean, the features are ``model``'s.
    """
    zooms = TTA_ZOOMS if tta else (1.0,)
    male = male.to(device)
    age = scale = prob = 0
    features = None
    nets = [(model, fast)] + [(m.model, m.fast) for m in members]
    for k, (net, net_fast) in enumerate(nets):
        for z in zooms:
            x = to_model_input(images, net.cfg.input_size, zoom_theta(len(images), z))
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            hooked = k == 0 and features is None and after_plain is not None
            out = net(x, male) if net_fast is None or hooked else net_fast(x, male)
            age = age + out.age
            scale = scale + out.scale
            prob = prob + torch.softmax(out.stage_logits, 1)
            if features is None:
                features = out.features.float()
                if after_plain is not None:
                    after_plain()
    n = len(zooms) * len(nets)
    return BatchOutput(age / n, scale / n, prob / n, features)


@torch.no_grad()
def run_network(model: BoneAgeNet, images: np.ndarray | torch.Tensor, male: np.ndarray | torch.Tensor,
                batch_size: int = INFERENCE_BATCH, return_features: bool = False, tta: bool = False,
                device: str | torch.device = "cpu", fast: FastNetwork | None = None,
                members: Sequence[Member] = ()) -> RawPredictions:
    """Predict on (N, H, W) uint8 or float images in [0, 1] (already preprocessed to base geometry).

    ``tta`` averages age, scale and stage probabilities over a few small zooms, which reduces variance;
    ``members`` average further networks in (see :class:`Member`).
    """
    model.eval()
    images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    male = torch.as_tensor(np.asarray(male, dtype=np.int64))
    ages, scales, probs, feats = [], [], [], []
    for start in range(0, len(images), batch_size):
        out = forward_batch(model, images[start:start + batch_size], male[start:start + batch_size], tta,
                            device=device, fast=fast, members=members)
        ages.append(out.age.cpu())
        scales.append(out.scale.cpu())
        probs.append(out.stage_prob.cpu())
        if return_features:
            feats.append(out.features.cpu())
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0,))  # noqa: E731
    return RawPredictions(cat(ages), cat(scales), cat(probs), cat(feats) if return_features else None)
