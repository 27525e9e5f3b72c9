"""Batched forward passes of a trained network over preprocessed images (no file I/O here)."""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn

from boneage.config import TTA_VIEW_SETS
from boneage.nn.model import BoneAgeNet, BoneAgeOutput
from boneage.geometry.preprocess import to_model_input

# Test-time augmentation (ModelConfig.tta_views), the plain image first in every set. The plain pass comes
# first so its penultimate features (and any layer hooks) can be kept: features describe the image as it is,
# so an upload's nearest neighbours and outlier score match the precomputed ones whether or not TTA is on.
# "zooms": two small zooms. "shifts": the image moved on a 3x3 grid by a third of the network's output stride
# (OUTPUT_STRIDE network-input pixels) each way. A strided network answers unevenly to where a bone
# falls on its stride grid: a one-pixel shift of a 100 px file moved the shipped network's reading by a mean
# 2.2 months (docs/decisions.md); nine passes spread over the deepest stride make the mean nearly blind to it.
TTA_ZOOMS = (1.0, 0.95, 1.05)
OUTPUT_STRIDE = 32  # the EfficientNet-Lite backbones reduce their input 32-fold

# Every eager (untraced) forward pass on a network that several threads share holds this lock: explanations
# (boneage.evidence.explain) register hooks (Grad-CAM, layer activations) that fire on *any* forward pass through the
# hooked layer, so a saliency or sex-flip pass in another thread would overwrite Grad-CAM's saved activation
# ("differentiated Tensor ... not used in the graph"); tracing a FastNetwork is such a pass too. Predictions
# run on the traced copy, which has no hooks, and do not take it.
EAGER_LOCK = threading.RLock()

# Small batches with channels-last tensors: on the 2-core CPU a batch of 16 ran at 13 ms per 160 px image
# against 29-31 ms in batches of 64-128 (depthwise convolutions thrash the cache on large batches).
INFERENCE_BATCH = 16


@dataclass
class RawPredictions:
    age: np.ndarray  # months
    scale: np.ndarray  # Laplace scale, months
    stage_prob: np.ndarray  # (N, n_stages)
    features: np.ndarray | None = None  # (N, hidden_dim) penultimate features of the plain (unzoomed) pass
    # (N,) share of each reading that is the other side's (the laterality blend of BoneAgePredictor.read);
    # None when the model reads films as they come
    other_weight: np.ndarray | None = None


def average_views(first: RawPredictions, extra: RawPredictions, owner: np.ndarray) -> RawPredictions:
    """The readings of N films from their first views (``first``) and their other views (``extra``, row
    ``j`` a view of film ``owner[j]``): age, scale and stage probabilities are the means over every view of
    a film, each view weighing the same; the features stay the first view's, as with TTA.

    Used for the phase views of :func:`boneage.geometry.framing.phase_views`; ``extra`` empty returns ``first``."""
    owner = np.asarray(owner, np.int64)
    if len(owner) == 0:
        return first
    counts = 1 + np.bincount(owner, minlength=len(first.age)).astype(np.float64)

    def mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        total = a.astype(np.float64)
        np.add.at(total, owner, b.astype(np.float64))
        return (total / counts.reshape((-1,) + (1,) * (a.ndim - 1))).astype(a.dtype)

    return RawPredictions(mean(first.age, extra.age), mean(first.scale, extra.scale),
                          mean(first.stage_prob, extra.stage_prob), first.features)


def view_ranks(owner: np.ndarray) -> np.ndarray:
    """For the other views of films (row ``j`` a view of film ``owner[j]``, as :func:`average_views` takes
    them), each view's place among its film's views, the first view being 0: 1, 2, ... per film."""
    owner = np.asarray(owner, np.int64)
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], owner[order], side="left")
    rank = np.empty(len(owner), np.int64)
    rank[order] = np.arange(len(owner)) - starts + 1
    return rank


def take_rows(raw: RawPredictions, rows: np.ndarray) -> RawPredictions:
    """The readings of rows ``rows`` only."""
    return RawPredictions(raw.age[rows], raw.scale[rows], raw.stage_prob[rows],
                          None if raw.features is None else raw.features[rows])


def empty_like_rows(like: RawPredictions, n: int) -> RawPredictions:
    """Zeroed readings of ``n`` images shaped as ``like``'s (features only where ``like`` has them)."""
    def zeros(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.zeros((n,) + a.shape[1:], a.dtype)

    return RawPredictions(zeros(like.age), zeros(like.scale), zeros(like.stage_prob), zeros(like.features))


def fill_rows(into: RawPredictions, rows: np.ndarray, part: RawPredictions) -> None:
    """Copy ``part``'s readings into rows ``rows`` of ``into`` (in place)."""
    for name in ("age", "scale", "stage_prob", "features"):
        target = getattr(into, name)
        if target is not None:
            target[rows] = getattr(part, name)


def blend_readings(first: RawPredictions, other: RawPredictions, rows: np.ndarray, weights: np.ndarray) -> RawPredictions:
    """``first`` with its rows ``rows`` replaced by ``(1 - w) * first + w * other`` (age, scale, stage
    probabilities; ``other`` holds one reading per row of ``rows``). The features stay ``first``'s.

    Used for the two sides of a film the laterality check is unsure of (:mod:`boneage.geometry.laterality`)."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == 0:
        return first
    w = np.asarray(weights, np.float64)

    def mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = a.astype(np.float64).copy()
        ww = w.reshape((-1,) + (1,) * (a.ndim - 1))
        out[rows] = (1 - ww) * out[rows] + ww * b.astype(np.float64)
        return out.astype(a.dtype)

    return RawPredictions(mix(first.age, other.age), mix(first.scale, other.scale),
                          mix(first.stage_prob, other.stage_prob), first.features)


@dataclass
class BatchOutput:
    age: torch.Tensor
    scale: torch.Tensor
    stage_prob: torch.Tensor
    features: torch.Tensor  # plain pass only
    layers: dict[str, torch.Tensor] = field(default_factory=dict)  # pooled layer features (plain pass)


class View(NamedTuple):
    """One pass of a prediction: zoomed by ``zoom`` about the centre, mirrored left-right, and moved by
    ``shift`` (x, y) as a fraction of the network's output stride."""

    zoom: float = 1.0
    mirror: bool = False
    shift: tuple[float, float] = (0.0, 0.0)


def view_theta(n: int, view: View, input_size: int) -> torch.Tensor | None:
    """``F.affine_grid`` matrices for ``view`` of a batch of ``n`` images read at ``input_size`` (None for the
    plain image). A shift of 1 moves the image by :data:`OUTPUT_STRIDE` input pixels."""
    if view == View():
        return None
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / view.zoom
    if view.mirror:
        theta[:, 0, 0] = -theta[:, 0, 0]
    # affine_grid coordinates span 2 across the output; moving the content by s output pixels samples at -s
    theta[:, 0, 2] = -2.0 * view.shift[0] * OUTPUT_STRIDE / input_size
    theta[:, 1, 2] = -2.0 * view.shift[1] * OUTPUT_STRIDE / input_size
    return theta


def tta_views(name: str) -> list[View]:
    """The passes of test-time augmentation set ``name`` (:data:`TTA_VIEW_SETS`), the plain image first."""
    if name == "zooms":
        return [View(z) for z in TTA_ZOOMS]
    if name == "shifts":
        thirds = (0.0, -1 / 3, 1 / 3)
        return [View(shift=(dx, dy)) for dy in thirds for dx in thirds]
    raise ValueError(f"unknown test-time augmentation {name!r}; one of {', '.join(TTA_VIEW_SETS)}")


TTA_DESCRIPTIONS = {
    "zooms": "the image and two slightly zoomed copies (1.0 / 0.95 / 1.05)",
    "shifts": "the image and eight copies moved on a 3x3 grid by a third of the network's stride "
              f"({OUTPUT_STRIDE} input pixels) each way",
}


def describe_tta(name: str) -> str:
    """What test-time augmentation set ``name`` averages, in words (model card, pages, help texts)."""
    tta_views(name)  # refuses an unknown name
    return TTA_DESCRIPTIONS[name]


def shares_passes(name: str) -> bool:
    """Whether set ``name`` shares its passes out over a film's phase views (one pass each) rather than running
    every pass on every view: the shifts do; the zooms predate sharing and keep their readings."""
    tta_views(name)  # refuses an unknown name
    return name == "shifts"


def views(model: BoneAgeNet, tta: bool) -> list[View]:
    """The passes a prediction of ``model`` averages, the plain image first: the plain image alone, or with
    ``tta`` the set its config names (``ModelConfig.tta_views``).

    A model whose config says ``mirror_invariant`` (trained with mirrored copies) always averages each
    view with its mirror image, so a right hand (a mirrored film) gets exactly the reading of the left.
    """
    base = tta_views(getattr(model.cfg, "tta_views", "zooms")) if tta else [View()]
    return [v._replace(mirror=m) for m in _mirrors(model) for v in base]


def _mirrors(model: BoneAgeNet) -> tuple[bool, ...]:
    return (False, True) if getattr(model.cfg, "mirror_invariant", False) else (False,)


def pass_inputs(net: BoneAgeNet, images: torch.Tensor, tta: bool, tta_pass: np.ndarray | None = None) -> list[torch.Tensor]:
    """The network inputs of each pass a prediction averages (:func:`views`).

    ``tta_pass`` (one index per image, with ``tta``) gives each image one pass of the set, ``tta_pass[i]``
    modulo its length, instead of all of them: the phase views of one film share the set's passes out
    (:meth:`boneage.inference.predictor.BoneAgePredictor.read`), in one batch. The plain pass is never resampled, so an
    image whose pass is 0 gets exactly its plain input (and its mirror image, for a mirror-invariant net).
    """
    size = net.cfg.input_size
    if tta_pass is None or not tta:
        return [to_model_input(images, size, view_theta(len(images), v, size)) for v in views(net, tta)]
    base = tta_views(getattr(net.cfg, "tta_views", "zooms"))
    chosen = [base[int(k) % len(base)] for k in np.asarray(tta_pass).reshape(-1)]
    out = []
    for m in _mirrors(net):
        each = [v._replace(mirror=m) for v in chosen]
        x = to_model_input(images, size, view_theta(len(images), View(mirror=m), size))
        moved = np.flatnonzero([v != View(mirror=m) for v in each])
        if len(moved):
            theta = torch.cat([view_theta(1, each[i], size) for i in moved])
            x[torch.as_tensor(moved)] = to_model_input(images[torch.as_tensor(moved)], size, theta)
        out.append(x)
    return out


class _TupleOutputs(nn.Module):
    """The network with a tuple output, which tracing needs, followed by the globally pooled outputs of
    ``layer_paths`` (filled by forward hooks while tracing, so the traced graph computes them too)."""

    def __init__(self, model: BoneAgeNet, layer_paths: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.layer_paths = tuple(layer_paths)
        self.pooled: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, male: torch.Tensor):
        out = self.model(x, male)
        return (out.age, out.scale, out.stage_logits, out.features, *(self.pooled[p] for p in self.layer_paths))


class FastNetwork:
    """A traced, frozen copy of an eval-mode network for CPU inference (``torch.jit.optimize_for_inference``).

    Why: on the 2-core CPU it runs a 160 px image in about 6-7 ms against 11-15 ms for the eager network
    (oneDNN convolutions with pre-packed weights). Predictions match the eager network to float rounding
    (tests/inference/test_inference.py). It cannot run hooks or gradients, so explanations use the eager network and
    the weights must not change after tracing. ``layer_paths`` (module names) are traced in as extra
    outputs, each globally average-pooled: the layer-wise features of the precompute without a slow eager
    pass.
    """

    def __init__(self, model: BoneAgeNet, layer_paths: Sequence[str] = ()):
        size = model.cfg.input_size
        example = (torch.zeros(2, 1, size, size).contiguous(memory_format=torch.channels_last),
                   torch.zeros(2, dtype=torch.int64))
        wrapper = _TupleOutputs(model, layer_paths).eval()
        modules = dict(model.named_modules())
        hooks = [modules[p].register_forward_hook(
            lambda _m, _i, out, p=p: wrapper.pooled.__setitem__(p, out.float().mean(dim=(2, 3))))
            for p in wrapper.layer_paths]
        try:
            with EAGER_LOCK, torch.no_grad():
                traced = torch.jit.trace(wrapper, example, check_trace=False)
                self.module = torch.jit.optimize_for_inference(traced)
        finally:  # the eager network (explanations) must not keep the hooks
            for h in hooks:
                h.remove()
            wrapper.pooled.clear()
        self.layer_paths = wrapper.layer_paths

    def with_layers(self, x: torch.Tensor, male: torch.Tensor) -> tuple[BoneAgeOutput, dict[str, torch.Tensor]]:
        """The outputs plus the pooled features of each of ``layer_paths`` (N, channels)."""
        age, scale, logits, features, *layers = self.module(x, male)
        return (BoneAgeOutput(age=age, scale=scale, stage_logits=logits, features=features),
                dict(zip(self.layer_paths, layers)))

    def __call__(self, x: torch.Tensor, male: torch.Tensor) -> BoneAgeOutput:
        return self.with_layers(x, male)[0]


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
                  device: str | torch.device = "cpu", fast: FastNetwork | None = None,
                  members: Sequence[Member] = (), tta_pass: np.ndarray | None = None) -> BatchOutput:
    """One batch through the network, averaged over its test-time augmentation when ``tta`` (each image's
    own pass ``tta_pass[i]`` of it when given, :func:`pass_inputs`) and over the mirror image when the
    network is mirror-invariant (:func:`views`).

    Every pass runs on ``fast`` when given (else on the eager ``model``); the pooled layer features of a
    ``fast`` traced with ``layer_paths`` come from the plain pass, like the penultimate features.
    ``members`` (an ensemble) run their own sets of passes, each at its own input size; each network's
    passes are averaged first, so every network weighs the same in the mean; the features are ``model``'s.
    """
    male = male.to(device)
    age = scale = prob = 0
    features, layers = None, {}
    nets = [(model, fast)] + [(m.model, m.fast) for m in members]
    for net, net_fast in nets:
        inputs = pass_inputs(net, images, tta, tta_pass)
        for x in inputs:  # each network's mean over its own passes, then the networks' mean
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            if net_fast is None:
                out = net(x, male)
            elif features is None:
                out, layers = net_fast.with_layers(x, male)
            else:
                out = net_fast(x, male)
            age = age + out.age / len(inputs)
            scale = scale + out.scale / len(inputs)
            prob = prob + torch.softmax(out.stage_logits, 1) / len(inputs)
            if features is None:
                features = out.features.float()
    n = len(nets)
    return BatchOutput(age / n, scale / n, prob / n, features, layers)


@torch.no_grad()
def run_network(model: BoneAgeNet, images: np.ndarray | torch.Tensor, male: np.ndarray | torch.Tensor,
                batch_size: int = INFERENCE_BATCH, return_features: bool = False, tta: bool = False,
                device: str | torch.device = "cpu", fast: FastNetwork | None = None,
                members: Sequence[Member] = (), tta_pass: int | np.ndarray | None = None) -> RawPredictions:
    """Predict on (N, H, W) uint8 or float images in [0, 1] (already preprocessed to base geometry).

    ``tta`` averages age, scale and stage probabilities over the model's test-time augmentation (:func:`views`),
    or gives each image the one pass ``tta_pass`` (an index, or one per image; :func:`pass_inputs`);
    ``members`` average further networks in (see :class:`Member`).
    """
    model.eval()
    if tta_pass is not None:
        tta_pass = np.broadcast_to(np.asarray(tta_pass, np.int64), (len(images),))
    male = torch.as_tensor(np.asarray(male, dtype=np.int64))
    ages, scales, probs, feats = [], [], [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]  # a memory-mapped array is read one batch at a time
        chunk = chunk if torch.is_tensor(chunk) else torch.from_numpy(np.array(chunk))
        out = forward_batch(model, chunk, male[start:start + batch_size], tta,
                            device=device, fast=fast, members=members,
                            tta_pass=None if tta_pass is None else tta_pass[start:start + batch_size])
        ages.append(out.age.cpu())
        scales.append(out.scale.cpu())
        probs.append(out.stage_prob.cpu())
        if return_features:
            feats.append(out.features.cpu())
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0,))  # noqa: E731
    return RawPredictions(cat(ages), cat(scales), cat(probs), cat(feats) if return_features else None)
