"""Do the heatmaps tell the truth? Attention on the anatomy, faithfulness and sanity checks of attribution maps.

Three questions, each answered per case and method with the maps exactly as the Explain page shows them
(:func:`boneage.evidence.explain.attribute`, normalised, non-negative, on the 100x100 base image):

1. **Attention on the anatomy** (:func:`attribution_shares`): the share of the map's mass inside the hand
   (:func:`boneage.geometry.hand.hand_mask`) and, when the hand stands fingers up, inside three horizontal bands of
   the mask's vertical extent (rule in :func:`hand_regions`): phalanges (top 40 %), metacarpals (middle 30 %),
   wrist (bottom 30 %: carpals and distal radius/ulna). A map with less than half of its mass on the hand is
   flagged as *mostly off the hand* (:data:`OFF_HAND_SHARE`).
2. **Faithfulness** (:func:`perturbation_images`, :func:`curve_area`): deletion and insertion curves. Pixels
   are removed (deletion: replaced by the baseline) or revealed (insertion: copied from the image into the
   baseline) in the map's order, most attributed first, at the fractions :data:`FRACTIONS`; the curve is the
   absolute change of the predicted age from the unperturbed prediction, |f(x_k) - f(x)| in months, and its
   area is the trapezoid mean over the fraction axis. A faithful map makes the deletion area *larger* (the
   age moves as soon as the pixels it points at are gone) and the insertion area *smaller* (revealing them
   first brings the age back quickly) than a random pixel order (several seeded orders, averaged). The
   baseline is the background level 0 of the normalised image (``"zero"``: a removed pixel looks like
   background) or a Gaussian blur of the image (``"blur"``, sigma 4 px: removes detail, keeps the outline).
   Ties in a map (Grad-CAM's zeros) are broken at random (seeded). Captum's ``infidelity`` (with its optimal
   scaling, Gaussian noise of sd 0.1) is reported beside them on the sanity-check subset.
3. **Sanity check** (Adebayo et al., NeurIPS 2018, cascading model-parameter randomisation,
   :func:`randomization_steps`, :func:`cascading_randomization`): on a deep copy of the network (the shared
   model is never touched), the layers are re-drawn from the top down: the heads (and sex embedding), the
   head convolution, then the stages 7 .. 1, then the stem. Each parameter tensor is replaced by Gaussian
   noise with that tensor's own mean and standard deviation (BatchNorm is folded into the convolutions in the
   shipped network, so keeping the scale keeps activations in range instead of saturating ReLU6). After each
   step the maps are recomputed and compared with the trained network's by Spearman rank correlation over the
   pixels. A method whose maps barely change is not explaining this model: it fails when the median
   correlation is still >= :data:`SANITY_THRESHOLD` once the top half of the backbone's blocks is randomised
   (for EfficientNet-Lite0: the step that randomises stage 5, i.e. blocks 8-15 of 16).

The default method (:func:`choose_default_method`): among the audited methods, the one that passes the
sanity check, beats random on deletion on every set, beats random on insertion on every set, and then puts
the highest median share of its mass on the hand, in that order of priority.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from boneage.evidence import explain
from boneage.geometry.hand import hand_mask
from boneage.evaluation.metrics import bootstrap_ci
from boneage.nn.model import BoneAgeNet, EfficientNetLite
from boneage.nn.forward import fast_network_for, run_network
from boneage.training.splits import age_band
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

AUDIT_FILE = "explanation_audit.json"
CASES_FILE = "explanation_audit_cases.parquet"
AUDIT_COMMAND = "python -m pipelines.precompute --only explanations"

DEFAULT_METHODS = ("gradcam", "saliency", "smoothgrad", "integrated_gradients")
FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
HAND_AREA_RANGE = (0.02, 0.6)  # a hand mask outside this share of the image failed (e.g. it took a whole plate)
OFF_HAND_SHARE = 0.5  # a map with less than this share of its mass on the hand is "mostly off the hand"
TARGET_HAND_SHARE = 0.6  # the default method's median share on the hand that counts as "reads the hand"
SANITY_THRESHOLD = 0.3  # median rank correlation at the top-half step below which a method passes
REGION_BANDS = {"fingers": (0.0, 0.4), "metacarpals": (0.4, 0.7), "wrist": (0.7, 1.0)}
REGION_LABELS = {"fingers": "phalanges (top 40 %)", "metacarpals": "metacarpals (middle 30 %)",
                 "wrist": "wrist: carpals, distal radius/ulna (bottom 30 %)"}


# --------------------------------------------------------------------------------------------------
# Attention on the anatomy
# --------------------------------------------------------------------------------------------------
@dataclass
class Shares:
    """Share of a map's mass in each region and each region's share of the image area (chance level).
    Region values are NaN when the hand's orientation could not be established (see :func:`hand_regions`)."""
    hand: float
    hand_area: float
    fingers: float = float("nan")
    metacarpals: float = float("nan")
    wrist: float = float("nan")
    fingers_area: float = float("nan")
    metacarpals_area: float = float("nan")
    wrist_area: float = float("nan")

    @property
    def mask_ok(self) -> bool:
        """Whether the hand mask is plausible (:data:`HAND_AREA_RANGE`); shares are meaningless otherwise."""
        return bool(HAND_AREA_RANGE[0] <= self.hand_area <= HAND_AREA_RANGE[1])

    @property
    def off_hand(self) -> bool:
        return bool(self.mask_ok and self.hand < OFF_HAND_SHARE)


def _runs(row: np.ndarray) -> int:
    """Number of separate foreground runs in one mask row."""
    return int(np.sum(np.diff(np.r_[0, row.astype(np.int8), 0]) == 1))


def hand_regions(mask: np.ndarray) -> dict[str, np.ndarray] | None:
    """Phalanges / metacarpals / wrist masks from horizontal bands of the hand mask's vertical extent.

    Rule (at 100x100 px individual bones cannot be segmented reliably): the mask's rows from its top to its
    bottom row are cut at 40 % and 70 % (:data:`REGION_BANDS`). It is used only when the hand stands fingers
    up, as in the RSNA radiographs: the top band's rows must show separate fingers (median >= 2 foreground
    runs per row) and the bottom band's rows a single piece (median 1 run). Otherwise None (a rotated,
    cropped or fist-like hand): region shares are then not computed for that case.
    """
    mask = np.asarray(mask, bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 10:
        return None
    top, height = rows[0], rows[-1] - rows[0] + 1
    bands = {}
    for name, (a, b) in REGION_BANDS.items():
        r0, r1 = top + int(round(a * height)), top + int(round(b * height))
        band = np.zeros_like(mask)
        band[r0:r1] = mask[r0:r1]
        bands[name] = band
    fr0, fr1 = top, top + int(round(REGION_BANDS["fingers"][1] * height))
    wr0 = top + int(round(REGION_BANDS["wrist"][0] * height))
    finger_runs = [_runs(mask[r]) for r in range(fr0, fr1) if mask[r].any()]
    wrist_runs = [_runs(mask[r]) for r in range(wr0, rows[-1] + 1) if mask[r].any()]
    if not finger_runs or not wrist_runs or np.median(finger_runs) < 2 or np.median(wrist_runs) > 1:
        return None
    return bands


def _share(h: np.ndarray, region: np.ndarray, total: float) -> float:
    return float(h[region].sum() / total) if total > 0 else 0.0


def attribution_shares(heatmap: np.ndarray, image: np.ndarray | None = None, mask: np.ndarray | None = None) -> Shares:
    """Share of a non-negative map's mass on the hand (and on its regions), for one preprocessed image.

    Give ``image`` (the hand mask is then :func:`boneage.geometry.hand.hand_mask` of it) or a precomputed ``mask``.
    An empty map has share 0 everywhere (it points nowhere)."""
    if mask is None:
        if image is None:
            raise ValueError("attribution_shares needs the image (to find the hand) or its hand mask")
        mask = hand_mask(image)
    mask = np.asarray(mask, bool)
    h = np.maximum(np.nan_to_num(np.asarray(heatmap, np.float64)), 0)
    if h.shape != mask.shape:
        raise ValueError(f"heatmap {h.shape} and hand mask {mask.shape} differ in shape")
    total = float(h.sum())
    out = Shares(hand=_share(h, mask, total), hand_area=float(mask.mean()))
    regions = hand_regions(mask)
    if regions is not None:
        for name, region in regions.items():
            setattr(out, name, _share(h, region, total))
            setattr(out, f"{name}_area", float(region.mean()))
    return out


def describe_shares(shares: Shares, method_label: str = "map") -> str:
    """One sentence for a page caption: how much of the map is on the hand, flagged when mostly off it."""
    if not shares.mask_ok:
        return (f"{method_label}: the hand could not be located reliably in this image (the mask covers "
                f"{shares.hand_area:.0%} of it), so the share of the map on the hand is not known.")
    text = (f"{method_label}: {shares.hand:.0%} of the map's mass lies on the hand, which covers "
            f"{shares.hand_area:.0%} of the image")
    if not math.isnan(shares.wrist):
        text += f" (wrist {shares.wrist:.0%}, phalanges {shares.fingers:.0%})"
    if shares.off_hand:
        text += (". **Attention mostly off the hand**: the model's evidence for this case sits largely in the "
                 "background or the film's borders, not on the bones")
    return text + "."


# --------------------------------------------------------------------------------------------------
# Faithfulness: deletion and insertion
# --------------------------------------------------------------------------------------------------
def pixel_order(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most attributed first; ties broken at random (``rng``)."""
    h = np.nan_to_num(np.asarray(heatmap, np.float64)).ravel()
    return np.lexsort((rng.random(h.size), -h))


def random_order(n_pixels: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(n_pixels)


def make_baseline(image: np.ndarray, kind: str = "zero") -> np.ndarray:
    """What a removed pixel becomes: ``"zero"`` (the background level of the normalised image) or
    ``"blur"`` (Gaussian blur, sigma 4 px)."""
    x = _as_float(image)
    if kind == "zero":
        return np.zeros_like(x)
    if kind == "blur":
        return gaussian_filter(x, sigma=4.0).astype(np.float32)
    raise ValueError(f"baseline must be 'zero' or 'blur', not {kind!r}")


def _as_float(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def perturbation_images(image: np.ndarray, order: np.ndarray, fractions: Sequence[float],
                        baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion images, each (len(fractions), H, W) float32: at fraction f the first
    round(f * pixels) pixels of ``order`` are replaced by the baseline (deletion) or revealed on it
    (insertion)."""
    x = _as_float(image).ravel()
    b = np.asarray(baseline, np.float32).ravel()
    n = x.size
    dele = np.empty((len(fractions), n), np.float32)
    ins = np.empty((len(fractions), n), np.float32)
    for i, f in enumerate(fractions):
        idx = order[: int(round(float(f) * n))]
        dele[i], ins[i] = x, b
        dele[i, idx] = b[idx]
        ins[i, idx] = x[idx]
    shape = (len(fractions), *np.asarray(image).shape)
    return dele.reshape(shape), ins.reshape(shape)


def curve_area(ages: np.ndarray, age_unperturbed: float, fractions: Sequence[float]) -> float:
    """Area under |age(f) - age(unperturbed)| over the fraction axis (trapezoid; months, since the axis spans
    0..1): the mean absolute change of the prediction along the curve."""
    y = np.abs(np.asarray(ages, np.float64) - float(age_unperturbed))
    f = np.asarray(fractions, np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(f)))


def explained_forward(model: BoneAgeNet) -> Callable[[np.ndarray, bool], np.ndarray]:
    """(N, H, W) float images in [0, 1] + one sex -> predicted ages (N,), from the very function the maps
    explain: the first network on the image alone (no test-time augmentation, no ensemble members), run
    through its traced copy (:func:`boneage.nn.forward.run_network`; equal to the eager network to float
    rounding, about twice as fast on the CPU)."""
    fast = fast_network_for(model)

    def forward(images: np.ndarray, male: bool) -> np.ndarray:
        imgs = np.ascontiguousarray(images, np.float32)
        return run_network(model, imgs, np.full(len(imgs), bool(male)), tta=False, fast=fast).age.astype(np.float64)

    return forward


def perturbation_curves(forward: Callable[[np.ndarray, bool], np.ndarray], image: np.ndarray, male: bool,
                        orders: dict[str, Sequence[np.ndarray]], fractions: Sequence[float] = FRACTIONS,
                        baseline: str = "zero") -> tuple[float, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Predicted age along the deletion and insertion curves of several pixel orderings of one image, with
    one batched forward pass. ``orders[name]`` is a list of orders (one for a map, several random ones);
    returns f(image) and, per name, (deletion ages, insertion ages), each (n_orders, len(fractions)).
    The unperturbed image and the full baseline (the curves' shared end points) are evaluated once."""
    fr = np.asarray(fractions, np.float64)
    if fr[0] != 0 or fr[-1] != 1 or np.any(np.diff(fr) <= 0):
        raise ValueError("fractions must rise strictly from 0 to 1")
    base = make_baseline(image, baseline)
    inner = fr[1:-1]
    stacks, index = [_as_float(image)[None], base[None]], []
    for name, ords in orders.items():
        for k, order in enumerate(ords):
            d, i = perturbation_images(image, order, inner, base)
            stacks += [d, i]
            index.append((name, k))
    ages = forward(np.concatenate(stacks), male)
    f_x, f_b = float(ages[0]), float(ages[1])
    m = len(inner)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pos = 2
    for name, ords in orders.items():
        dele = np.empty((len(ords), len(fr)))
        ins = np.empty((len(ords), len(fr)))
        for k in range(len(ords)):
            dele[k] = np.r_[f_x, ages[pos:pos + m], f_b]
            ins[k] = np.r_[f_b, ages[pos + m:pos + 2 * m], f_x]
            pos += 2 * m
        out[name] = (dele, ins)
    return f_x, out


# --------------------------------------------------------------------------------------------------
# Sanity check: cascading model-parameter randomisation
# --------------------------------------------------------------------------------------------------
def _block_stages(backbone: EfficientNetLite) -> list[list[int]]:
    """Block indices of every stage, stage 1 first (stage ends from the backbone's own ``feature_info``)."""
    ends = [int(f["module"].split(".")[1]) for f in backbone.feature_info if f["stage"].startswith("stage")]
    stages, start = [], 0
    for e in ends:
        stages.append(list(range(start, e + 1)))
        start = e + 1
    return stages


def randomization_steps(model: BoneAgeNet) -> tuple[list[tuple[str, list[str]]], int]:
    """The cascade, top first: (label, module prefixes randomised at that step), and the index of the step
    after which at least half of the backbone's blocks are randomised (the "top half" step)."""
    steps: list[tuple[str, list[str]]] = [("heads", ["fuse", "age_head", "stage_head", "sex_embed"])]
    bb = model.backbone
    if isinstance(bb, EfficientNetLite):
        steps.append(("head conv", ["backbone._conv_head", "backbone._bn1"]))
        stages = _block_stages(bb)
        n_blocks, done, half_step = len(bb._blocks), 0, None
        for k in range(len(stages) - 1, -1, -1):
            steps.append((f"stage {k + 1}", [f"backbone._blocks.{i}" for i in stages[k]]))
            done += len(stages[k])
            if half_step is None and done >= n_blocks / 2:
                half_step = len(steps) - 1
        steps.append(("stem", ["backbone._conv_stem", "backbone._bn0"]))
        return steps, int(half_step)
    # SmallCNN: its conv blocks (7 modules each: conv, bn, relu, conv, bn, relu, pool), deepest first
    feats = bb.features
    n = len(feats) // 7
    for k in range(n - 1, -1, -1):
        steps.append((f"block {k + 1}", [f"backbone.features.{7 * k + j}" for j in range(7)]))
    return steps, max(1, math.ceil(n / 2))  # step k (k >= 1) has randomised the deepest k blocks


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@torch.no_grad()
def randomize_(model: nn.Module, prefixes: Sequence[str], generator: torch.Generator) -> list[str]:
    """Re-draw, in place, every parameter under ``prefixes`` as Gaussian noise with that tensor's own mean
    and standard deviation; returns the names changed. Only ever call it on a copy."""
    changed = []
    for name, p in model.named_parameters():
        if _matches(name, prefixes):
            mean = float(p.float().mean())
            std = float(p.float().std()) if p.numel() > 1 else abs(mean)
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32)
            p.copy_((noise * (std if std > 0 else 1e-2) + mean).to(p.dtype))
            changed.append(name)
    return changed


def cascading_randomization(model: BoneAgeNet, seed: int = 0):
    """Yield (step label, randomised copy) for each step of :func:`randomization_steps`, cumulatively, on
    one deep copy of ``model``: the model passed in is never modified."""
    steps, _ = randomization_steps(model)
    net = copy.deepcopy(model)
    net.eval()
    gen = torch.Generator().manual_seed(int(seed))
    for label, prefixes in steps:
        if not randomize_(net, prefixes, gen):
            raise RuntimeError(f"randomisation step {label!r} matched no parameters ({prefixes})")
        yield label, net


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over their pixels; 0 when either is constant (no ranking to
    share, e.g. a Grad-CAM that is all zero after its ReLU)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------------
@dataclass
class AuditConfig:
    methods: tuple[str, ...] = DEFAULT_METHODS
    fractions: tuple[float, ...] = FRACTIONS
    n_random: int = 3  # random orders per case for the reference curves
    baseline: str = "zero"
    seed: int = 0
    n_boot: int = 1000
    sanity_cases: int = 3  # per set
    infidelity_samples: int = 16
    # the maps as the Explain page computes them; the sanity check (10 networks x cases) uses cheaper settings on
    # both sides of each comparison: plain 8-step IG, 8-sample SmoothGrad
    # cheaper than the Explain page's defaults, for time (the same function, fewer samples): integrated
    # gradients as 16 plain steps (the page refines up to 128 until completeness is within 5 %), SmoothGrad with
    # 8 noise samples (the page 16)
    method_options: dict = field(default_factory=lambda: {"integrated_gradients": {"n_steps": 16, "max_steps": 16},
                                                          "smoothgrad": {"nt_samples": 8}})
    sanity_options: dict = field(default_factory=lambda: {"integrated_gradients": {"n_steps": 8, "max_steps": 8},
                                                          "smoothgrad": {"nt_samples": 8}})


@dataclass
class AuditCase:
    """One image to audit: its preprocessed 100x100 pixels and what the summaries group by."""
    id: str
    set: str  # "test" (internal) or "official_test"
    image: np.ndarray
    male: bool
    boneage: float = float("nan")  # reference, when known


@dataclass
class AuditResult:
    cases: pd.DataFrame  # one row per (case, method): shares, curve areas
    summary: dict  # everything the JSON holds


def _age_band(months: np.ndarray) -> list:
    return age_band(months).tolist()


def run_audit(model: BoneAgeNet, cases: Sequence[AuditCase], cfg: AuditConfig = AuditConfig(),
              log: Callable[[str], None] = lambda msg: None) -> AuditResult:
    """Attention shares and deletion / insertion curves for every case and method, the sanity check on the
    first ``cfg.sanity_cases`` cases of each set, and the summary with the default method. ``model`` is
    only read (the sanity check works on a deep copy)."""
    unknown = [m for m in cfg.methods if m not in explain.METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(explain.METHODS)}")
    if not cases:
        raise ValueError("no cases to audit")
    fr = np.asarray(cfg.fractions, float)
    forward = explained_forward(model)
    rows, curves = [], {}  # curves[(set, name)] -> (list of deletion |dAge| curves, list of insertion)
    seconds = {m: 0.0 for m in cfg.methods}
    t_curves = 0.0
    maps_by_case: dict[int, dict[str, np.ndarray]] = {}
    for ci, case in enumerate(cases):
        rng = np.random.default_rng([cfg.seed, ci])
        mask = hand_mask(case.image)
        orders, maps = {}, {}
        for m in cfg.methods:
            t0 = time.perf_counter()
            maps[m] = explain.attribute(model, case.image, case.male, m, **cfg.method_options.get(m, {}))
            seconds[m] += time.perf_counter() - t0
            orders[m] = [pixel_order(maps[m], rng)]
        orders["random"] = [random_order(case.image.size, rng) for _ in range(cfg.n_random)]
        maps_by_case[ci] = maps
        t0 = time.perf_counter()
        f_x, res = perturbation_curves(forward, case.image, case.male, orders, fr, cfg.baseline)
        t_curves += time.perf_counter() - t0
        rnd_del = np.mean([curve_area(c, f_x, fr) for c in res["random"][0]])
        rnd_ins = np.mean([curve_area(c, f_x, fr) for c in res["random"][1]])
        for name, (dele, ins) in res.items():
            cd, cn = curves.setdefault((case.set, name), ([], []))
            cd.append(np.abs(dele - f_x).mean(0))
            cn.append(np.abs(ins - f_x).mean(0))
        for m in cfg.methods:
            s = attribution_shares(maps[m], mask=mask)
            rows.append({"id": case.id, "set": case.set, "male": bool(case.male), "boneage": case.boneage,
                         "age_pred": f_x, "method": m, **asdict(s), "mask_ok": s.mask_ok, "off_hand": s.off_hand,
                         "deletion_auc": curve_area(res[m][0][0], f_x, fr),
                         "insertion_auc": curve_area(res[m][1][0], f_x, fr),
                         "deletion_auc_random": rnd_del, "insertion_auc_random": rnd_ins})
        if (ci + 1) % 10 == 0 or ci + 1 == len(cases):
            log(f"explanation audit: {ci + 1}/{len(cases)} cases")
    df = pd.DataFrame(rows)
    df["sex"] = np.where(df["male"], "M", "F")
    df["age_band"] = _age_band(df["age_pred"].to_numpy())
    df["deletion_gain"] = df["deletion_auc"] - df["deletion_auc_random"]
    df["insertion_gain"] = df["insertion_auc_random"] - df["insertion_auc"]

    t0 = time.perf_counter()
    sets = list(dict.fromkeys(c.set for c in cases))
    sanity_idx = [i for s in sets for i in [j for j, c in enumerate(cases) if c.set == s][: cfg.sanity_cases]]
    sanity = sanity_check(model, [cases[i] for i in sanity_idx], cfg)
    t_sanity = time.perf_counter() - t0
    log(f"sanity check: {len(sanity_idx)} cases, {time.perf_counter() - t0:.0f}s")
    t0 = time.perf_counter()
    infid = infidelity_scores(model, [cases[i] for i in sanity_idx], [maps_by_case[i] for i in sanity_idx], cfg)
    t_infid = time.perf_counter() - t0
    summary = summarize(df, curves, sanity, infid, cfg)
    summary["timing_seconds"] = {"attribution": {m: round(v, 1) for m, v in seconds.items()},
                                 "curves": round(t_curves, 1), "sanity": round(t_sanity, 1),
                                 "infidelity": round(t_infid, 1)}
    return AuditResult(cases=df, summary=summary)


def sanity_check(model: BoneAgeNet, cases: Sequence[AuditCase], cfg: AuditConfig = AuditConfig()) -> dict:
    """Spearman correlation between each case's trained-network map and its map after every cumulative
    randomisation step, per method: {"steps": labels, "top_half_step": index, "rho": {method: (cases, steps)}}."""
    steps, half = randomization_steps(model)

    def opts(m):
        return {**cfg.method_options.get(m, {}), **cfg.sanity_options.get(m, {})}

    trained = [{m: explain.attribute(model, c.image, c.male, m, **opts(m)) for m in cfg.methods} for c in cases]
    rho = {m: np.zeros((len(cases), len(steps))) for m in cfg.methods}
    for k, (_, net) in enumerate(cascading_randomization(model, cfg.seed)):
        for i, c in enumerate(cases):
            for m in cfg.methods:
                rho[m][i, k] = rank_correlation(trained[i][m], explain.attribute(net, c.image, c.male, m, **opts(m)))
    return {"steps": [s for s, _ in steps], "top_half_step": half, "rho": rho}


def infidelity_scores(model: BoneAgeNet, cases: Sequence[AuditCase], maps: Sequence[dict[str, np.ndarray]],
                      cfg: AuditConfig = AuditConfig()) -> dict[str, list[float]]:
    """Captum's infidelity (Yeh et al. 2019) of each map, with its optimal scaling (``normalize=True``, so
    the [0, 1] maps' arbitrary scale does not matter): Gaussian perturbations of sd 0.1; lower is better."""
    # deferred: captum.metrics is only needed for the infidelity score of the audit
    from captum.metrics import infidelity

    fn = explain._Explained(model, "age")
    out: dict[str, list[float]] = {m: [] for m in cfg.methods}
    gen = torch.Generator().manual_seed(cfg.seed)

    def perturb(x):
        noise = torch.randn(x.shape, generator=gen) * 0.1
        return noise, x - noise

    with explain._eval_mode(model):
        for case, mp in zip(cases, maps):
            x = explain._as_input(case.image)
            male = torch.tensor([int(bool(case.male))])
            for m in cfg.methods:
                attr = torch.from_numpy(mp[m])[None, None]
                v = infidelity(fn, perturb, x, attr, additional_forward_args=(male,), target=0,
                               n_perturb_samples=cfg.infidelity_samples, normalize=True)
                out[m].append(float(v[0]))
    return out


def _ci(values, n_boot: int, seed: int) -> dict:
    est, lo, hi = bootstrap_ci(values, np.mean, n_boot=n_boot, seed=seed)
    return {"mean": est, "ci": [lo, hi], "beats_random": bool(lo > 0)}


def _quantiles(x) -> dict:
    x = np.asarray(x, float)
    x = x[~np.isnan(x)]
    if not len(x):
        return {"n": 0, "median": None, "q25": None, "q75": None}
    q25, med, q75 = np.percentile(x, [25, 50, 75])
    return {"n": int(len(x)), "median": float(med), "q25": float(q25), "q75": float(q75)}


def summarize(df: pd.DataFrame, curves: dict, sanity: dict, infid: dict, cfg: AuditConfig) -> dict:
    """The JSON summary (see the module docstring for every rule)."""
    sets = list(dict.fromkeys(df["set"]))
    methods: dict[str, dict] = {}
    for m in cfg.methods:
        d = df[df["method"] == m]
        entry = {"label": explain.METHODS[m], "sets": {}}
        for s in sets + ["all"]:
            g_all = d if s == "all" else d[d["set"] == s]
            g = g_all[g_all["mask_ok"]]  # shares only where the hand was found
            entry["sets"][s] = {
                "n": int(len(g)),
                "mask_failed_cases": int((~g_all["mask_ok"]).sum()),
                "share_on_hand": _quantiles(g["hand"]),
                "hand_area": _quantiles(g["hand_area"]),
                "off_hand_cases": int(g["off_hand"].sum()),
                "regions": {r: {"share": _quantiles(g[r]), "area": _quantiles(g[f"{r}_area"])} for r in REGION_BANDS},
                "region_cases": int(g["wrist"].notna().sum()),
                "n_curves": int(len(g_all)),
                "deletion": {"auc": float(g_all["deletion_auc"].mean()),
                             "auc_random": float(g_all["deletion_auc_random"].mean()),
                             "difference": _ci(g_all["deletion_gain"], cfg.n_boot, cfg.seed)},
                "insertion": {"auc": float(g_all["insertion_auc"].mean()),
                              "auc_random": float(g_all["insertion_auc_random"].mean()),
                              "difference": _ci(g_all["insertion_gain"], cfg.n_boot, cfg.seed)},
            }
        rho = sanity["rho"][m]
        med = np.median(rho, axis=0) if len(rho) else np.full(len(sanity["steps"]), np.nan)
        half = sanity["top_half_step"]
        entry["sanity"] = {"median_rho": med.tolist(), "q25_rho": np.percentile(rho, 25, axis=0).tolist() if len(rho) else [],
                           "q75_rho": np.percentile(rho, 75, axis=0).tolist() if len(rho) else [],
                           "rho_top_half": float(med[half]), "passes": bool(med[half] < SANITY_THRESHOLD),
                           "n": int(len(rho))}
        entry["infidelity"] = _quantiles(infid.get(m, []))
        entry["beats_random_deletion_all_sets"] = all(entry["sets"][s]["deletion"]["difference"]["beats_random"] for s in sets)
        entry["beats_random_insertion_all_sets"] = all(entry["sets"][s]["insertion"]["difference"]["beats_random"] for s in sets)
        methods[m] = entry
    groups = []
    for (m, s, sex, band), g in df[df["mask_ok"]].groupby(["method", "set", "sex", "age_band"], dropna=False):
        groups.append({"method": m, "set": s, "sex": sex, "age_band": band, "n": int(len(g)),
                       "median_share_on_hand": float(g["hand"].median()), "median_hand_area": float(g["hand_area"].median()),
                       "off_hand_cases": int(g["off_hand"].sum())})
    curve_out = {s: {name: {"deletion": np.mean(v[0], 0).tolist(), "insertion": np.mean(v[1], 0).tolist()}
                     for (s2, name), v in curves.items() if s2 == s} for s in sets}
    default, why = choose_default_method(methods)
    summary = {
        "version": 1,
        "command": AUDIT_COMMAND,
        "config": {**asdict(cfg), "methods": list(cfg.methods), "fractions": list(cfg.fractions)},
        "sets": {s: {"n_cases": int(df[df["set"] == s]["id"].nunique())} for s in sets},
        "rules": {
            "share_on_hand": "share of the [0, 1] map's mass inside boneage.geometry.hand.hand_mask; a case is flagged "
                             f"'mostly off the hand' below {OFF_HAND_SHARE}; cases whose mask covers less than "
                             f"{HAND_AREA_RANGE[0]} or more than {HAND_AREA_RANGE[1]} of the image (the mask failed) "
                             "are left out of the share summaries",
            "regions": "horizontal bands of the hand mask's vertical extent, used only when the hand stands fingers "
                       "up (separate fingers in the top band, one piece in the bottom band): " + "; ".join(
                           f"{REGION_LABELS[r]}" for r in REGION_BANDS),
            "curves": f"pixels removed (deletion) or revealed (insertion) most attributed first at fractions "
                      f"{list(cfg.fractions)}; baseline '{cfg.baseline}' ("
                      + ("the background level 0 of the normalised image" if cfg.baseline == "zero" else
                         "Gaussian blur, sigma 4 px") + "); curve = |predicted age - unperturbed prediction| in months, "
                      "area = its mean over the fraction axis; random = mean of "
                      f"{cfg.n_random} random pixel orders per case",
            "beats_random": "95% bootstrap CI (over cases) of the per-case difference (deletion: map - random; "
                            "insertion: random - map) lies above 0",
            "sanity": f"cascading randomisation (Adebayo et al. 2018) on a deep copy, top down; parameters re-drawn "
                      f"as Gaussian noise with each tensor's mean and sd; Spearman correlation of the maps with the "
                      f"trained network's; a method passes when the median correlation is below {SANITY_THRESHOLD} "
                      f"once the top half of the backbone's blocks is randomised (step "
                      f"'{sanity['steps'][sanity['top_half_step']]}')",
            "default_method": "passes the sanity check, then beats random on deletion on every set, then on "
                              "insertion on every set, then the highest median share on the hand (all cases)",
            "infidelity": "captum.metrics.infidelity with normalize=True, Gaussian perturbations sd 0.1, on the "
                          "sanity-check cases; lower is better",
        },
        "sanity_steps": sanity["steps"],
        "sanity_top_half_step": sanity["top_half_step"],
        "methods": methods,
        "curves": {"fractions": list(cfg.fractions), **curve_out},
        "groups": groups,
        "default_method": {"method": default, "why": why},
        "verdict": verdict(methods, default, sets),
    }
    return summary


def choose_default_method(methods: dict[str, dict]) -> tuple[str, str]:
    """The method to show first (see the module docstring): lexicographic on (passes the sanity check,
    beats random on deletion on every set, on insertion on every set, median share on the hand)."""
    def key(m):
        e = methods[m]
        share = e["sets"]["all"]["share_on_hand"]["median"] or 0.0
        return (e["sanity"]["passes"], e["beats_random_deletion_all_sets"], e["beats_random_insertion_all_sets"], share)

    best = max(methods, key=key)
    e = methods[best]
    crit = [("passes the sanity check" if e["sanity"]["passes"] else "fails the sanity check")
            + f" (median rank correlation {e['sanity']['rho_top_half']:.2f} with half the network randomised)",
            ("beats" if e["beats_random_deletion_all_sets"] else "does not beat") + " random on deletion on every set",
            ("beats" if e["beats_random_insertion_all_sets"] else "does not beat") + " random on insertion on every set",
            f"median share on the hand {e['sets']['all']['share_on_hand']['median']:.2f}"]
    others = [m for m in methods if m != best and key(m)[:3] == key(best)[:3]]
    why = f"{e['label']}: " + "; ".join(crit)
    if others:
        why += ("; of the methods meeting the same checks (" + ", ".join(methods[m]["label"] for m in others)
                + ") it puts the most mass on the hand")
    if not all(key(best)[:3]):
        why += ". No method meets every check; this is the best of them"
    return best, why + "."


def verdict(methods: dict[str, dict], default: str, sets: Sequence[str]) -> dict:
    """Does the model read the hand? Stated plainly from the default method's median share on the hand per set
    (below :data:`TARGET_HAND_SHARE` on any set: it relies on context outside the hand), with the numbers."""
    e = methods[default]
    parts, below = [], []
    for s in sets:
        v = e["sets"][s]
        med, area = v["share_on_hand"]["median"], v["hand_area"]["median"]
        if med is None:
            continue
        if med < TARGET_HAND_SHARE:
            below.append(s)
        parts.append(f"{s}: median share {med:.2f} of the map on a hand covering a median {area:.2f} of the "
                     f"image, {v['off_hand_cases']} of {v['n']} maps mostly off the hand")
    detail = "; ".join(parts)
    if below:
        text = (f"The model relies on context outside the hand: its default explanation ({e['label']}) puts a median "
                f"share below {TARGET_HAND_SHARE} of its mass on the hand on {', '.join(below)} ({detail}).")
    else:
        text = (f"The model's evidence lies mostly on the hand: its default explanation ({e['label']}) puts a median "
                f"share of at least {TARGET_HAND_SHARE} of its mass on it on every set ({detail}).")
    return {"relies_on_context": bool(below), "text": text, "target_share": TARGET_HAND_SHARE}
