"""Configuration dataclasses and locations shared by the library, pipelines and dashboard.

Configs are saved beside the trained weights (``config.json``) so that every later step (evaluation,
precompute, the dashboard) rebuilds exactly the network and preprocessing the weights were trained with.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

# Where things are is named once, in boneage.settings (environment variables and flags); re-exported here.
from boneage.settings import DATA_ENV, REPO_ROOT, SETTINGS, DataDirError, resolve_data_dir  # noqa: F401

ARTIFACTS_DIR = SETTINGS.artifacts_dir
MODEL_DIR = SETTINGS.model_dir


# The input geometry (how a film becomes the network's base image; boneage.geometry.framing does it) is a
# config like the others: ModelConfig.geometry builds it, and every cache key names it.
FITS = ("squeeze", "area", "letterbox")
FRAMINGS = ("none", "hand", "hand-upright")
LATERALITIES = ("as-is", "left")
MASKS = ("none", "hand")  # Geometry.mask: the whole film, or the hand alone (boneage.geometry.masking)
# Geometry.intensity: where the hand's intensity scale comes from (boneage.geometry.preprocess, step 4)
INTENSITIES = ("film", "hand")

MAX_PHASES = 5  # 3 x 3 views already took most of the benefit (docs/decisions.md)


class GeometryError(ValueError):
    """An unknown fit or framing, or an impossible base size."""


@dataclass(frozen=True)
class Geometry:
    """The model's input geometry; :mod:`boneage.geometry.framing` explains each field."""

    base_size: int = 100
    fit: str = "squeeze"
    framing: str = "none"
    margin: float = 0.06  # of the crop side, on each side of the hand's bounding box
    trim_bars: bool = False  # remove uniform bars around the film first (always with ``area`` or framing)
    phases: int = 1  # sub-pixel offsets per axis of the squeeze grid whose readings are averaged
    laterality: str = "as-is"  # "left": films taken for right hands are mirrored first
    # "hand": everything outside the hand mask, dilated by ``mask_dilation`` base pixels, is set to the
    # background and the hand's intensities are stretched (boneage.geometry.masking); "none": the whole film.
    mask: str = "none"
    mask_dilation: int = 2
    # Where a masked hand's intensity scale comes from. "film": the whole film is normalised first
    # (background mode 0, 99.5th percentile 1, clipped) and the hand stretched within that; the clip and the
    # background level depend on the film around the hand. "hand": the hand's own pixels of the fitted film,
    # before any normalisation, so nothing outside the outline moves them; no bar trimming is implied either
    # (only ``trim_bars`` trims), because which bars are uniform is a property of the surround too.
    intensity: str = "film"

    def __post_init__(self):
        if self.fit not in FITS:
            raise GeometryError(f"unknown fit {self.fit!r}; one of {', '.join(FITS)}")
        if self.framing not in FRAMINGS:
            raise GeometryError(f"unknown framing {self.framing!r}; one of {', '.join(FRAMINGS)}")
        if not 16 <= int(self.base_size) <= 4096:
            raise GeometryError(f"base size {self.base_size} px is outside 16-4096")
        if not 0 <= self.margin < 0.5:
            raise GeometryError(f"framing margin {self.margin} must lie in [0, 0.5)")
        if not 1 <= int(self.phases) <= MAX_PHASES:
            raise GeometryError(f"phases {self.phases} must lie in 1-{MAX_PHASES}")
        if self.laterality not in LATERALITIES:
            raise GeometryError(f"unknown laterality {self.laterality!r}; one of {', '.join(LATERALITIES)}")
        if self.mask not in MASKS:
            raise GeometryError(f"unknown mask {self.mask!r}; one of {', '.join(MASKS)}")
        if not 0 <= int(self.mask_dilation) <= 16:
            raise GeometryError(f"mask dilation {self.mask_dilation} px must lie in 0-16")
        if self.intensity not in INTENSITIES:
            raise GeometryError(f"unknown intensity {self.intensity!r}; one of {', '.join(INTENSITIES)}")
        if self.phases > 1 and self.fit != "squeeze":
            raise GeometryError(f"phases > 1 needs the squeeze fit (the {self.fit} fit does not pick pixels)")

    @classmethod
    def of(cls, cfg) -> "Geometry":
        """The geometry of a :class:`boneage.config.ModelConfig` (or anything with the same fields)."""
        return cls(int(cfg.base_size), getattr(cfg, "fit", "squeeze"), getattr(cfg, "framing", "none"),
                   float(getattr(cfg, "framing_margin", 0.06)), bool(getattr(cfg, "trim_bars", False)),
                   int(getattr(cfg, "phases", 1)), str(getattr(cfg, "laterality", "as-is")),
                   str(getattr(cfg, "hand_mask", "none")), int(getattr(cfg, "mask_dilation", 2)),
                   str(getattr(cfg, "hand_intensity", "film")))

    @property
    def trims(self) -> bool:
        """Whether uniform bars are removed before the fit (see :func:`fit_to_base`)."""
        if self.intensity == "hand":  # the hand's own scale: bars are the surround's business (field comment)
            return self.trim_bars
        return self.trim_bars or self.fit == "area" or self.framing != "none"

    def key(self) -> str:
        """A short text that changes whenever the prepared pixels would (for caches). ``phases`` is not in
        it: the first view, the one a cache holds, is the plain squeeze whatever the phases."""
        key = f"{self.base_size}-{self.fit}-{self.framing}-{self.margin:g}"
        key = key + "-trim" if self.trim_bars else key
        key = key + "-left" if self.laterality == "left" else key
        key = key + f"-mask{self.mask_dilation}" if self.mask == "hand" else key
        return key + "-handscale" if self.intensity == "hand" else key


def as_geometry(geometry: Geometry | int) -> Geometry:
    """A :class:`Geometry` as given, or for an ``int`` that base size with the original squeeze and no framing."""
    return geometry if isinstance(geometry, Geometry) else Geometry(int(geometry))


@dataclass
class StageConfig:
    """Developmental stage thresholds in months: Child < 96, Adolescent 96-180, Adult >= 180."""

    child_below_months: float = 96.0
    adult_from_months: float = 180.0
    names: tuple[str, ...] = ("Child", "Adolescent", "Adult")

    def stage_of(self, months: float) -> int:
        if months < self.child_below_months:
            return 0
        if months < self.adult_from_months:
            return 1
        return 2


TTA_VIEW_SETS = ("zooms", "shifts")  # ModelConfig.tta_views; the passes are boneage.nn.forward.tta_views
ANTIALIAS_SIZES = (0, 3, 5)  # ModelConfig.antialias: 0 for plain strides; the filters are boneage.nn.model.BLUR_TAPS


def stages_from_months(months, stages: StageConfig = StageConfig()) -> np.ndarray:
    """The stage index (0 child, 1 adolescent, 2 adult) of each age in months, by ``stages``' thresholds."""
    m = np.asarray(months, dtype=float)
    return (m >= stages.child_below_months).astype(int) + (m >= stages.adult_from_months).astype(int)


@dataclass
class ModelConfig:
    """Network and input geometry.

    ``base_size``, ``fit``, ``framing``, ``framing_margin``, ``trim_bars``, ``phases`` and ``laterality`` are the
    input geometry (see
    :mod:`boneage.geometry.framing`): every image is first brought to the base image by them, then resized to
    ``input_size`` for the network. Older config files without ``fit``/``framing`` mean the original
    squeeze of the whole film.
    """

    backbone: str = "efficientnet-lite0"
    input_size: int = 128
    base_size: int = 100
    fit: str = "squeeze"
    framing: str = "none"
    framing_margin: float = 0.06
    trim_bars: bool = False  # uniform bars around a film removed before the fit (boneage.geometry.framing)
    # Sub-pixel offsets per axis of the nearest-neighbour squeeze of a film larger than the base size; the
    # reading averages the phases**2 base images (boneage.geometry.framing.phase_views). 1: one squeeze.
    phases: int = 1
    # Trained with mirrored copies; every prediction averages the image and its mirror (boneage.nn.forward),
    # so a right hand, or a film exported mirrored, reads as the left hand would.
    mirror_invariant: bool = False
    # "left": every film the learned check takes for a right hand is mirrored first, so the network reads
    # left hands only (boneage.geometry.laterality); "as-is": films are read as they come.
    laterality: str = "as-is"
    # "hand": the network reads the hand alone, the background outside the mask dilated by ``mask_dilation``
    # base pixels set to 0 (boneage.geometry.masking); "none": the whole film. Configs without the field
    # mean "none", as they were trained.
    hand_mask: str = "none"
    mask_dilation: int = 2
    # "hand": the hand's intensities scaled from its own pixels of the fitted film, nothing of the film around it
    # used (Geometry.intensity); "film": within the whole film's normalisation. Configs without it mean "film".
    hand_intensity: str = "film"
    # The passes test-time augmentation averages when it is on (boneage.nn.forward.views): "zooms" (the image
    # at 1, 0.95 and 1.05) or "shifts" (the image moved on a 3x3 grid by a third of the network's output stride
    # each way). Configs without the field mean "zooms", the only set there was.
    tta_views: str = "zooms"
    # Low-pass filter size (3 or 5) at every stride of 2 of an EfficientNet-Lite backbone, 0 for plain strides
    # (boneage.nn.model.AntiAliasedConv2d): a network that low-passes before it subsamples reads a hand moved by a pixel
    # or turned by a degree more nearly the same. Configs without the field mean 0, as they were trained.
    antialias: int = 0
    sex_embed_dim: int = 16
    hidden_dim: int = 256
    dropout: float = 0.2
    age_mean: float = 127.3
    age_std: float = 41.2
    stages: StageConfig = field(default_factory=StageConfig)

    def __post_init__(self):
        if self.tta_views not in TTA_VIEW_SETS:
            raise ValueError(f"unknown tta_views {self.tta_views!r} in the model config; "
                             f"one of {', '.join(TTA_VIEW_SETS)}")
        if self.antialias not in ANTIALIAS_SIZES:
            raise ValueError(f"antialias {self.antialias!r} in the model config is not an anti-aliasing filter size; "
                             f"use 0 (plain strides), {' or '.join(str(n) for n in ANTIALIAS_SIZES[1:])}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout {self.dropout!r} in the model config must lie in [0, 1): the fraction of the "
                             "head's inputs dropped while training")

    @property
    def geometry(self) -> "Geometry":
        """The :class:`Geometry` every input of this model is prepared with."""
        return Geometry.of(self)


@dataclass
class TrainConfig:
    """Optimisation settings; ``max_train_cases`` trims the training split for smoke tests."""

    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    patience: int = 4
    seed: int = 42
    amp: bool = True  # bf16 autocast, used on CUDA only (slower than fp32 on the CPUs measured)
    stage_loss_weight: float = 0.3
    max_train_cases: int | None = None
    max_val_cases: int | None = None
    num_threads: int | None = None
    loader_workers: int | None = None  # DataLoader worker processes; None: 0 on CPU, several per GPU
    aug_rotate_deg: float = 15.0
    aug_scale: float = 0.12
    aug_translate: float = 0.08
    aug_contrast: float = 0.2
    # Acquisition differences the framing does not remove: each image is, with probability 1/2, brought down
    # to a random 1 - aug_resolution .. 1 of its resolution and back (a smaller or re-scaled film), and gets
    # Gaussian noise of a random SD up to aug_noise (JPEG and detector noise). 0 turns either off.
    aug_resolution: float = 0.0
    aug_noise: float = 0.0
    # Probability that an image is saved as a JPEG (quality drawn from aug_jpeg_quality .. 95) and read back
    # before the other augmentations: exported films are often lossy, and block artefacts at the base size
    # move an untrained network's reading by months (pipelines.precision). 0 turns it off.
    aug_jpeg: float = 0.0
    aug_jpeg_quality: int = 50
    # Training for precision: > 0 reads every training image a second time as acquired differently
    # (boneage.geometry.acquisition: JPEG, lower resolution, tighter crop or a border, with its own rotation and
    # exposure), trains both readings against the label, and adds ``consistency`` x |reading 1 - reading 2| /
    # predicted scale, so a disagreement between the two readings of one hand costs what an error of that
    # size does. Each step then runs the network on twice the images. 0 turns it off.
    consistency: float = 0.0
    # With ``consistency`` on: True holds the plain reading fixed in the disagreement term and trains the
    # label on the plain reading only, so the reading of the other acquisition is pulled to the plain one and
    # the plain one, the one validation measures, is not pulled towards a reading of a degraded image (in a
    # warm restart a mutual pull cost validation accuracy). False: both readings are trained on the label and
    # pulled towards each other.
    consistency_anchored: bool = False
    # The acquisition changes the second reading is drawn from (``boneage.geometry.acquisition.RANGES``: jpeg, downscale,
    # crop, border, rotate).
    consistency_families: tuple[str, ...] = ("jpeg", "downscale", "crop", "border")
    # True: both readings of a hand get the same random rotation, zoom and shift, so they differ by the
    # acquisition change alone; False: each reading draws its own.
    consistency_shared_affine: bool = False
    # Mask noise for a model that reads the hand alone (ModelConfig.hand_mask "hand"): each training image's
    # dilation is drawn from mask_dilation - mask_noise .. mask_dilation + mask_noise (at least 0), and with
    # probability mask_tight it uses the segmentation's tight mask (boneage.training.hand_masks).
    mask_noise: int = 2
    mask_tight: float = 0.5
    ema_decay: float = 0.0  # >0 keeps an exponential moving average of the weights; 0 turns it off
    # Sampling weight of a training case ~ (training cases of its sex x age band) ** -balance_power, drawn
    # with replacement: 0 shows every case once per epoch; 0.5 shows the rare extremes (girls of 17 and
    # over: 33 cases against 985 boys of 11-14) more often, whose predictions regress towards the mean.
    balance_power: float = 0.0


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:
        return None  # NaN: strict JSON has no NaN
    if isinstance(obj, Path):
        return str(obj)
    return obj


def model_config_from_dict(d: dict) -> ModelConfig:
    d = dict(d)
    stages = d.pop("stages", None) or {}
    if "names" in stages:
        stages["names"] = tuple(stages["names"])
    return ModelConfig(**d, stages=StageConfig(**stages))


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` by calling ``write(tmp)`` on a temporary sibling (``<name>.tmp``), then renaming it over
    ``path``: a crash never leaves half a file, and a failed write leaves no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temp file and rename, so a crash never leaves half a file."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False)
    write_atomic(path, lambda tmp: tmp.write_text(text))
