"""Where the network looks: attribution heatmaps (Captum), layer activations, the sex-flip check.

Every heatmap is returned in the coordinates of the ``base_size`` x ``base_size`` preprocessed image
(the model's base image, what :meth:`BoneAgePredictor.preprocess` returns), so it overlays directly onto it.
This works because the explained function starts *before* the network's own resize: it takes the
base image in [0, 1], applies :func:`boneage.geometry.preprocess.to_model_input` (bilinear resize to
``input_size`` and centring, both differentiable) and then the network. Gradients, integrated
gradients and occlusion therefore all live on the base-image pixels a user sees; Grad-CAM maps (which
live on a layer's coarse grid covering the same field of view) are upsampled bilinearly to it.

Targets: ``"age"`` (default) explains the predicted bone age in months, ``"scale"`` the predicted
uncertainty, ``"stage:<name>"`` (or just the stage name, e.g. ``"Adult"``) that stage's logit.

Sign conventions of the normalised maps (``normalize=True``, the default): Grad-CAM keeps positive
evidence (ReLU, as in the paper: regions whose features push the target *up*); saliency, SmoothGrad,
integrated gradients and occlusion show magnitudes (absolute values: a region matters whether it
pushes the age up or down). ``sign=`` overrides this ("positive", "negative", "abs").
``normalize=False`` returns the raw signed attributions at base resolution (integrated gradients then
satisfy completeness: they sum to f(image) - f(black image)).

Thread safety: Grad-CAM and layer activations use forward hooks on the shared model, and a hook fires on
every forward pass through its layer, whichever thread runs it. So every explanation (each function here
that runs the eager model) holds :data:`boneage.nn.forward.EAGER_LOCK` for its whole duration: explanations
run one at a time. Chosen over per-thread model copies because the CPU is the bottleneck anyway (torch
already spreads one pass over the cores, so two explanations at once are not faster), copies would cost
memory per session and a deep copy per thread, and predictions (the traced copy) never wait for it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import (
    IntegratedGradients,
    LayerActivation,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)

from boneage.nn.forward import EAGER_LOCK
from boneage.nn.model import BoneAgeNet, EfficientNetLite
from boneage.inference.predictor import BoneAgePredictor
from boneage.geometry.preprocess import to_model_input

METHODS = {
    "gradcam": "Grad-CAM",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated gradients",
    "occlusion": "Occlusion",
}

# Default sign handling per method when a [0, 1] heatmap is asked for.
_DEFAULT_SIGN = {"gradcam": "positive", "saliency": "abs", "smoothgrad": "abs",
                 "integrated_gradients": "abs", "occlusion": "abs"}

# Method options accepted through ``attribute(**kw)``.
_OPTIONS = {
    "gradcam": set(),
    "saliency": set(),
    "smoothgrad": {"nt_samples", "stdevs", "nt_samples_batch_size", "seed"},
    "integrated_gradients": {"n_steps", "chunks", "internal_batch_size", "tolerance", "max_steps", "ig_method"},
    "occlusion": {"window", "stride", "perturbations_per_eval"},
}

# Hook-based Captum methods register hooks on the (shared) model, which fire on any pass through it: every
# explanation holds the one lock (see the module docstring).
_HOOK_LOCK = EAGER_LOCK


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------
def _stages(backbone: EfficientNetLite) -> list[str]:
    """The backbone's stage names, shallow to deep (``stage1`` ..), from its own ``feature_info``."""
    return [f["stage"] for f in backbone.feature_info if f["stage"].startswith("stage")]


def _tap(backbone: EfficientNetLite, stage: str) -> str:
    """Module path in the BoneAgeNet of a backbone tap named in ``feature_info`` (``stage5``, ``head``)."""
    return "backbone." + backbone.feature_module(stage)


def _smallcnn_block_ends(model: BoneAgeNet) -> list[str]:
    feats = model.backbone.features
    return [f"backbone.features.{i - 1}" for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]


def gradcam_layers(model: BoneAgeNet) -> dict[str, str]:
    """Human label -> module path of the layers Grad-CAM can use; the first entry is the default.

    EfficientNet-Lite: the end of stage 4 (1/16 resolution) first, the layer whose maps are the most faithful to
    the prediction (deletion against a random order, chosen on the validation split: docs/decisions.md,
    2026-12-01), then stage 5 (also 1/16), the last block, the head conv and the stages down to stage 4. The
    1/32 layers' coarse grid puts no more heat on the hand than chance (docs/decisions.md, 2026-11-24).
    """
    bb = model.backbone
    if isinstance(bb, EfficientNetLite):
        n = len(_stages(bb))
        out = {}
        if n >= 5:
            out["Stage 4"] = _tap(bb, "stage4")
            out["Stage 5"] = _tap(bb, "stage5")
        out[f"Last block (stage {n})"] = _tap(bb, f"stage{n}")
        out["Head conv"] = _tap(bb, "head")
        for stage in range(n - 1, 3, -1):  # stage 6 (n-1) down to stage 4
            label = f"Stage {stage}"
            if label not in out:
                out[label] = _tap(bb, f"stage{stage}")
        return out
    # SmallCNN baseline: the last ReLU of each block (before its pooling), deepest (1/16) first
    paths = _smallcnn_block_ends(model)
    return {f"Block {k + 1} (1/{2 ** k})": p for k, p in reversed(list(enumerate(paths)))}


def activation_layers(model: BoneAgeNet) -> dict[str, str]:
    """Label -> module path for the activation grid: stem, the end of stages 2..7, head."""
    bb = model.backbone
    if isinstance(bb, EfficientNetLite):
        out = {"Stem": _tap(bb, "stem")}
        for k, stage in enumerate(_stages(bb)):
            if k >= 1:
                out[f"Stage {k + 1}"] = _tap(bb, stage)
        out["Head conv"] = _tap(bb, "head")
        return out
    return {f"Block {k + 1}": p for k, p in enumerate(_smallcnn_block_ends(model))}


def _module(model: nn.Module, path: str) -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        raise KeyError(f"no module {path!r} in the model (see gradcam_layers / activation_layers)")
    return modules[path]


def _resolve_layer(model: BoneAgeNet, layer: str | None, choices: dict[str, str]) -> str:
    """Accept a module path or one of the human labels; None -> the first (default) entry."""
    if layer is None:
        return next(iter(choices.values()))
    return choices.get(layer, layer)


# --------------------------------------------------------------------------------------------------
# The explained function
# --------------------------------------------------------------------------------------------------
class _Explained(nn.Module):
    """Base image (N, 1, B, B) in [0, 1] + sex -> one scalar per image, shape (N, 1)."""

    def __init__(self, model: BoneAgeNet, target: str = "age"):
        super().__init__()
        self.model = model
        self.input_size = model.cfg.input_size
        self.kind, self.index = _parse_target(model, target)

    def forward(self, img: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        out = self.model(to_model_input(img, self.input_size), male)
        if self.kind == "age":
            y = out.age
        elif self.kind == "scale":
            y = out.scale
        else:
            y = out.stage_logits[:, self.index]
        return y.reshape(-1, 1)


def _parse_target(model: BoneAgeNet, target: str) -> tuple[str, int]:
    if target in ("age", "scale"):
        return target, 0
    names = [n.lower() for n in model.cfg.stages.names]
    name = target.split(":", 1)[1] if target.startswith("stage:") else target
    if name.lower() in names:
        return "stage", names.index(name.lower())
    raise ValueError(f"unknown target {target!r}: use 'age', 'scale' or 'stage:<{'|'.join(model.cfg.stages.names)}>'")


@contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode and the eager-model lock for the duration (every explanation runs inside this)."""
    with EAGER_LOCK:
        was_training = model.training
        model.eval()
        try:
            yield
        finally:
            if was_training:
                model.train()


def _as_input(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) or (N, H, W) uint8 / float [0, 1] -> (N, 1, H, W) float32 in [0, 1]."""
    t = torch.as_tensor(np.array(image, copy=True)) if not torch.is_tensor(image) else image.detach().cpu()
    x = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if x.dim() == 2:
        x = x[None]
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a (H, W) or (N, H, W) gray image, got shape {tuple(t.shape)}")
    return x.contiguous()


def _male_tensor(male, n: int) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(male).astype(np.int64)).reshape(-1)
    return m.expand(n).clone() if m.numel() == 1 else m


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------
def _apply_sign(a: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(a, 0)
    if sign == "negative":
        return np.maximum(-a, 0)
    if sign == "abs":
        return np.abs(a)
    raise ValueError(f"sign must be 'positive', 'negative' or 'abs', not {sign!r}")


def normalize_heatmap(a: np.ndarray, clip_percentile: float | None = None) -> np.ndarray:
    """Non-negative map -> float32 in [0, 1] (divided by its max, or by a high percentile and clipped,
    which keeps single-pixel gradient spikes from washing the rest of a saliency map out)."""
    a = np.nan_to_num(np.asarray(a, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    a = np.maximum(a, 0)
    top = float(np.percentile(a, clip_percentile)) if clip_percentile is not None else float(a.max())
    if top <= 0:
        top = float(a.max())
    if top <= 0:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip(a / top, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------------
def _gradcam_raw(fn: _Explained, model: BoneAgeNet, x: torch.Tensor, male: torch.Tensor, layer_path: str) -> torch.Tensor:
    """Signed Grad-CAM upsampled to the base grid, (N, H, W)."""
    with _HOOK_LOCK:
        cam = LayerGradCam(fn, _module(model, layer_path))
        a = cam.attribute(x, target=0, additional_forward_args=(male,), relu_attributions=False)
    a = LayerAttribution.interpolate(a.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return a[:, 0]


def _integrated_gradients(fn: _Explained, x: torch.Tensor, male: torch.Tensor, n_steps: int = 32, chunks: int = 4,
                          internal_batch_size: int | None = None, method: str = "riemann_middle",
                          progress: Callable[[float], None] | None = None, tolerance: float = 0.05,
                          max_steps: int | None = None) -> tuple[torch.Tensor, dict]:
    """IG from a black image, computed over segments of the straight path, with adaptive refinement.

    The path integral is additive over segments (IG from x_a to x_b sums to f(x_b) - f(x_a)), so
    segment attributions add up to the full IG, ``progress`` can be called between segments, and each
    segment's quadrature error is known exactly from two forward passes. A first pass spends
    ``n_steps`` over ``chunks`` equal segments; then, while the summed segment errors exceed
    ``tolerance`` x |f(x) - f(black)| and fewer than ``max_steps`` (default 4 x n_steps) were used, the
    worst segment is halved and recomputed (the function is rough near the black baseline, where the
    network sees unnaturally dark hands; completeness errors of fixed and adaptive grids: docs/decisions.md).
    ``tolerance=0`` with ``max_steps=n_steps`` is plain (segmented) IG.
    """
    ig = IntegratedGradients(fn)
    n_steps = max(2, int(n_steps))
    chunks = max(1, min(int(chunks), n_steps // 2))
    per = max(2, n_steps // chunks)
    max_steps = int(max_steps) if max_steps is not None else 4 * n_steps
    f_cache: dict[float, float] = {}

    def f_at(alphas: list[float]) -> None:
        todo = [a for a in alphas if a not in f_cache]
        if todo:
            with torch.no_grad():
                xs = torch.cat([a * x for a in todo])
                ys = fn(xs, male.expand(len(todo)).clone())[:, 0].float().tolist()
            f_cache.update(zip(todo, ys))

    def segment(a0: float, a1: float) -> tuple[torch.Tensor, float]:
        attr = ig.attribute(a1 * x, baselines=a0 * x, target=0, additional_forward_args=(male,), n_steps=per,
                            method=method, internal_batch_size=internal_batch_size).detach()
        return attr, float(attr.sum())

    last = [-1.0]

    def report(value: float) -> None:
        value = float(min(1.0, max(0.0, value)))
        if progress is not None and value > last[0]:
            last[0] = value
            progress(value)

    refine = tolerance > 0 and max_steps > chunks * per
    first_share = 0.8 if refine else 1.0
    report(0.0)
    edges = [k / chunks for k in range(chunks + 1)]
    f_at(edges)
    segs: dict[tuple[float, float], tuple[torch.Tensor, float]] = {}
    for k in range(chunks):
        segs[(edges[k], edges[k + 1])] = segment(edges[k], edges[k + 1])
        report(first_share * (k + 1) / chunks)
    used = chunks * per
    diff = f_cache[1.0] - f_cache[0.0]

    def errors() -> dict[tuple[float, float], float]:
        return {(a0, a1): abs(s - (f_cache[a1] - f_cache[a0])) for (a0, a1), (_, s) in segs.items()}

    while refine and used + 2 * per <= max_steps:
        err = errors()
        if sum(err.values()) <= tolerance * abs(diff):
            break
        a0, a1 = max(err, key=err.get)
        mid = (a0 + a1) / 2
        f_at([mid])
        del segs[(a0, a1)]
        segs[(a0, mid)] = segment(a0, mid)
        segs[(mid, a1)] = segment(mid, a1)
        used += 2 * per
        report(first_share + (1 - first_share) * (used - chunks * per) / max(1, max_steps - chunks * per))
    total = sum(a for a, _ in segs.values())
    report(1.0)
    attr_sum = float(total.sum())
    info = {"steps": used, "segments": len(segs), "f_image": f_cache[1.0], "f_baseline": f_cache[0.0],
            "difference": diff, "attribution_sum": attr_sum,
            "completeness_error": abs(attr_sum - diff) / abs(diff) if diff != 0 else float("inf")}
    return total[:, 0], info


def _occlusion(fn: _Explained, x: torch.Tensor, male: torch.Tensor, window: int, stride: int,
               perturbations_per_eval: int, progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """Black square sliding over the base image; the image is padded at the bottom/right (and the pad
    cropped off again inside the forward) so the windows tile it exactly.

    ``progress(fraction)`` is called after each batched forward pass: occlusion is hundreds of passes,
    the one slow method besides integrated gradients."""
    size = x.shape[-1]
    pad = (-(size - window)) % stride
    xp = F.pad(x, (0, pad, 0, pad))
    n_windows = ((size + pad - window) // stride + 1) ** 2
    total_calls = math.ceil(n_windows / perturbations_per_eval) + 1  # + the unperturbed reference pass
    calls = [0]

    def forward(img: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        out = fn(img[..., :size, :size], m)
        calls[0] += 1
        if progress is not None:
            progress(min(1.0, calls[0] / total_calls))
        return out

    occ = Occlusion(forward)
    with torch.no_grad():
        a = occ.attribute(xp, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
                          baselines=0.0, target=0, additional_forward_args=(male,),
                          perturbations_per_eval=perturbations_per_eval)
    return a[:, 0, :size, :size]


def attribute(model: BoneAgeNet, image: np.ndarray, male: bool, method: str, layer: str | None = None,
              target: str = "age", normalize: bool = True, sign: str | None = None,
              progress: Callable[[float], None] | None = None, info: dict | None = None, **kw) -> np.ndarray:
    """Heatmap (base, base) float32 for one preprocessed image (uint8 or float [0, 1], base x base).

    ``normalize=True``: non-negative, scaled to [0, 1] (see the module docstring for signs).
    ``normalize=False``: the raw signed attribution (units: target units per image unit; for IG and
    occlusion, target units).
    ``progress(fraction)``: called between IG segments and after each occlusion forward batch; other
    methods call it at start (0) and end (1).

    Method options (``**kw``):
      gradcam: ``layer`` (label or module path; default: first of :func:`gradcam_layers`).
      smoothgrad: ``nt_samples=16``, ``stdevs=0.1`` (noise sd in [0, 1] image units),
        ``nt_samples_batch_size=16``, ``seed=0`` (the noise is seeded: the same image gives the same map).
      integrated_gradients: ``n_steps=32`` (first pass), ``chunks=4`` (segments; ``progress(fraction)``
        is called between them), ``tolerance=0.05`` and ``max_steps=4*n_steps`` (adaptive refinement
        until the completeness error is below tolerance), ``internal_batch_size=None``,
        ``ig_method="riemann_middle"`` (Captum's midpoint rule: on this network's rough path it
        converges faster than Gauss-Legendre, see docs/decisions.md);
        pass an ``info`` dict to receive the steps used, f(image), f(black) and the completeness error.
      occlusion: ``window`` (default base/8, i.e. input_size/8 network pixels), ``stride=window//2``,
        ``perturbations_per_eval=32``.
      any: ``clip_percentile`` for the [0, 1] scaling (default 99.5 for pixel-level methods, none
        for Grad-CAM and occlusion).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {list(METHODS)}")
    unused = set(kw) - _OPTIONS[method] - {"clip_percentile"}
    if unused:
        raise TypeError(f"unused options for {method}: {sorted(unused)} (accepted: {sorted(_OPTIONS[method])})")
    if progress is not None and method != "integrated_gradients":
        progress(0.0)
    x = _as_input(image)
    if x.shape[0] != 1:
        raise ValueError("attribute explains one image at a time; use average_gradcam for sets")
    male_t = _male_tensor(male, 1)
    fn = _Explained(model, target)
    base = x.shape[-1]
    clip_default = 99.5 if method in ("saliency", "smoothgrad", "integrated_gradients") else None
    clip_percentile = kw.pop("clip_percentile", clip_default)
    with _eval_mode(model):
        if method == "gradcam":
            path = _resolve_layer(model, layer, gradcam_layers(model))
            raw = _gradcam_raw(fn, model, x, male_t, path)
        elif method == "saliency":
            raw = Saliency(fn).attribute(x.clone().requires_grad_(True), target=0,
                                         additional_forward_args=(male_t,), abs=False)[:, 0]
        elif method == "smoothgrad":
            nt = NoiseTunnel(Saliency(fn))
            n = int(kw.pop("nt_samples", 16))
            with torch.random.fork_rng(devices=[]):  # same image -> same map; global RNG left untouched
                torch.manual_seed(int(kw.pop("seed", 0)))
                raw = nt.attribute(x.clone().requires_grad_(True), nt_type="smoothgrad", nt_samples=n,
                                   nt_samples_batch_size=int(kw.pop("nt_samples_batch_size", min(n, 16))),
                                   stdevs=float(kw.pop("stdevs", 0.1)), target=0,
                                   additional_forward_args=(male_t,), abs=False)[:, 0]
        elif method == "integrated_gradients":
            ig_kw = {k: kw.pop(k) for k in ("n_steps", "chunks", "internal_batch_size", "tolerance", "max_steps")
                     if k in kw}
            if "ig_method" in kw:
                ig_kw["method"] = kw.pop("ig_method")
            raw, ig_info = _integrated_gradients(fn, x, male_t, progress=progress, **ig_kw)
            if info is not None:
                info.update(ig_info)
        else:  # occlusion
            window = int(kw.pop("window", max(2, round(base / 8))))
            stride = int(kw.pop("stride", max(1, window // 2)))
            raw = _occlusion(fn, x, male_t, window, stride, int(kw.pop("perturbations_per_eval", 32)),
                             progress=progress)
    if progress is not None and method != "integrated_gradients":
        progress(1.0)
    a = raw[0].detach().cpu().numpy().astype(np.float32)
    if not normalize:
        return a
    return normalize_heatmap(_apply_sign(a, sign or _DEFAULT_SIGN[method]), clip_percentile)


def average_gradcam(model: BoneAgeNet, images: np.ndarray | Sequence[np.ndarray], males, layer: str | None = None,
                    target: str = "age", batch_size: int = 32) -> np.ndarray:
    """Mean of the per-image [0, 1] Grad-CAM maps over a set of images (maturation atlas), (base, base)
    in [0, 1]. Images are processed in batches (one backward per batch: each image's output depends
    only on its own input in eval mode)."""
    imgs = np.asarray(images)
    if imgs.ndim == 2:
        imgs = imgs[None]
    males = _male_tensor(males, len(imgs))
    fn = _Explained(model, target)
    path = _resolve_layer(model, layer, gradcam_layers(model))
    acc = np.zeros(imgs.shape[1:], np.float64)
    with _eval_mode(model):
        for start in range(0, len(imgs), batch_size):
            x = _as_input(imgs[start:start + batch_size])
            raw = _gradcam_raw(fn, model, x, males[start:start + batch_size], path).cpu().numpy()
            for a in raw:
                acc += normalize_heatmap(np.maximum(a, 0))
    return (acc / max(1, len(imgs))).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Activations and the sex-flip check
# --------------------------------------------------------------------------------------------------
def layer_activations(model: BoneAgeNet, image: np.ndarray, male: bool, layer: str, max_maps: int = 32,
                      normalize: bool = False, return_channels: bool = False):
    """(C', h, w) float32 feature maps of ``layer`` (label or module path) for one image: the
    ``max_maps`` channels with the highest mean activation, most active first. ``normalize`` scales each
    map to [0, 1] on its own (for a grid display); ``return_channels`` also returns their indices."""
    path = _resolve_layer(model, layer, activation_layers(model))
    x = _as_input(image)
    male_t = _male_tensor(male, x.shape[0])
    with _eval_mode(model), _HOOK_LOCK, torch.no_grad():
        act = LayerActivation(lambda img, m: model(to_model_input(img, model.cfg.input_size), m).age,
                              _module(model, path)).attribute(x, additional_forward_args=(male_t,))
    a = act[0].float().cpu().numpy()  # (C, h, w)
    order = np.argsort(-a.mean(axis=(1, 2)), kind="stable")[:max_maps]
    maps = a[order].astype(np.float32)
    if normalize:
        lo = maps.min(axis=(1, 2), keepdims=True)
        span = maps.max(axis=(1, 2), keepdims=True) - lo
        maps = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0).astype(np.float32)
    return (maps, order) if return_channels else maps


def sex_flip(predictor: BoneAgePredictor, image: np.ndarray, male: bool,
             extra_views: np.ndarray | None = None) -> dict:
    """Predicted age with the sex as given and with the other sex (months): how much the sex input,
    rather than the image, drives the prediction.

    ``image`` and ``extra_views`` (the film's other phase views, None for one view) as
    :meth:`BoneAgePredictor.prepare` gave them. Both readings go through :meth:`BoneAgePredictor.read`, the
    reading every door gives (phase views, the laterality blend, test-time augmentation and ensemble members
    included; :meth:`BoneAgePredictor.read_films`), so "as given" is the very prediction shown beside it."""
    img = np.asarray(image)
    ages = predictor.read_films([img, img], [extra_views, extra_views], np.array([bool(male), not bool(male)])).age
    given, flipped = float(ages[0]), float(ages[1])
    return {"age_as_given": given, "age_flipped": flipped, "difference": flipped - given,
            "male_as_given": bool(male)}
