"""Is this a right hand (or a left hand exported mirrored)? A small learned check whose answer flips with the image.

Why: the network learned left hands (about 2 % of the RSNA films are right hands, most marked "R"), and a
mirrored film moves its reading by 7 months on average (``pipelines.precision``). A model whose geometry
says ``laterality="left"`` reads every film as a left hand: the check decides, and a film it takes for a
right hand is mirrored before the network sees it (:func:`boneage.geometry.preprocess.prepare`).

The check is antisymmetric by construction. Its features are oriented-gradient histograms over a grid of
cells (:func:`orientation_features`), and its score is a linear function without intercept of ``features(image)
- features(mirrored image)``, so mirroring a film negates its score exactly. A film and its mirror image
therefore always get opposite answers and are read as the same picture: the mirror change of the reading is
zero whatever the check's accuracy, which decides only which of the two pictures is read. The coefficients
are fitted by ``python -m pipelines.fit_laterality`` on the training split, its mirror images and
acquisition changes of both, and live in ``laterality.json`` beside this file (package data, no pickle).
The features are in pixels, so the check reads every image at ``REFERENCE_SIZE``, like
:mod:`boneage.geometry.polarity`.

Near the decision boundary a slight change of a film (a turn, an exposure) could switch it between the two
pictures, and its reading would jump by the mirror change. So the reading is continuous in the score: a film
is read as the picture the check prefers and, when the check's probability of the other side is at least
:data:`MIN_OTHER_WEIGHT`, also mirrored; the two readings are blended with those probabilities
(:meth:`boneage.inference.predictor.BoneAgePredictor.read`). A film and its mirror image still read identically.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from boneage.config import write_json_atomic
from boneage.geometry.polarity import REFERENCE_SIZE, at_reference_size  # both checks read the same 100 px squeeze
from sklearn.linear_model import LogisticRegression

COEF_PATH = Path(__file__).with_name("laterality.json")
CELLS = (4, 6)  # grids of cells per side; the histograms of both are concatenated
BINS = 8  # signed gradient orientations per cell
SIGMA = 1.0  # of the Gaussian derivative, in reference pixels
N_FEATURES = sum(c * c for c in CELLS) * BINS


def orientation_features(img: np.ndarray) -> np.ndarray:
    """Histograms of signed gradient orientation, weighted by magnitude, over square grids of cells (``CELLS``),
    each grid's histogram scaled to unit length; ``N_FEATURES`` values of a 2-D image at the reference size."""
    x = at_reference_size(img)
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / max(hi - lo, 1e-6)
    gx = ndimage.gaussian_filter(x, SIGMA, order=(0, 1))
    gy = ndimage.gaussian_filter(x, SIGMA, order=(1, 0))
    mag = np.hypot(gx, gy)
    b = np.floor((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * BINS).astype(np.int64) % BINS
    yy, xx = np.indices(x.shape)
    out = []
    for cells in CELLS:
        cy = np.minimum(yy * cells // x.shape[0], cells - 1)
        cx = np.minimum(xx * cells // x.shape[1], cells - 1)
        h = np.bincount(((cy * cells + cx) * BINS + b).ravel(), weights=mag.ravel(), minlength=cells * cells * BINS)
        out.append(h / (np.linalg.norm(h) + 1e-6))
    return np.concatenate(out).astype(np.float64)


def mirror_contrast(img: np.ndarray) -> np.ndarray:
    """``features(img) - features(mirrored img)``: negated exactly when ``img`` is mirrored."""
    a = np.asarray(img, np.float32)
    return orientation_features(a) - orientation_features(a[:, ::-1])


@dataclass
class LateralityCheck:
    """score = coef . (mirror_contrast(img) / scale); a right hand when score > 0. No intercept and no centring,
    so the score of a mirrored image is exactly minus the score of the image."""

    scale: list[float]
    coef: list[float]
    fitted_on: str = ""
    evaluation: dict = field(default_factory=dict)  # held-out counts (pipelines.fit_laterality)

    def score(self, img: np.ndarray) -> float:
        z = mirror_contrast(img) / np.asarray(self.scale)
        return float(z @ np.asarray(self.coef))

    def is_right(self, img: np.ndarray) -> bool:
        """Whether ``img`` is taken for a right hand (a mirrored left): the positive side of the score."""
        return self.score(img) > 0

    def save(self, path: str | Path = COEF_PATH) -> None:
        write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path = COEF_PATH) -> "LateralityCheck":
        d = json.loads(Path(path).read_text())
        if len(d["coef"]) != N_FEATURES or len(d["scale"]) != N_FEATURES:
            raise ValueError(f"{path} holds {len(d['coef'])} coefficients, this version computes {N_FEATURES} "
                             "features; refit it with: python -m pipelines.fit_laterality")
        return cls(**d)


# A film read as a left hand is also read mirrored, and the two readings blended, when the check's
# probability of the other side is at least this (|score| below 4.6): near the decision boundary a slight
# change of the film would otherwise switch the reading between the two pictures.
MIN_OTHER_WEIGHT = 0.01


def other_side_weight(score: float) -> float:
    """The check's probability that the film is on the other side than the one it is read as: the logistic of
    ``-|score|``, in (0, 0.5]. A film and its mirror image have the same weight."""
    return float(1.0 / (1.0 + np.exp(min(abs(float(score)), 700.0))))


@lru_cache(maxsize=1)
def default_check() -> LateralityCheck:
    """The shipped check (read once per process; the object is never mutated, so threads may share it)."""
    if not COEF_PATH.is_file():
        raise FileNotFoundError(f"{COEF_PATH} is missing; fit it with: python -m pipelines.fit_laterality")
    return LateralityCheck.load(COEF_PATH)


def fit_laterality_check(contrasts_left: np.ndarray, C: float = 1.0, fitted_on: str = "") -> LateralityCheck:
    """Fit on mirror contrasts of images taken for left hands: each row ``d`` is a left hand (label 0) and
    ``-d``, its mirror image, a right one (label 1); a logistic regression without intercept."""
    d = np.asarray(contrasts_left, np.float64)
    scale = np.sqrt(np.mean(d ** 2, axis=0)) + 1e-9  # the mean over d and -d is 0: no centring needed
    z = d / scale
    clf = LogisticRegression(C=C, fit_intercept=False, max_iter=5000).fit(
        np.concatenate([z, -z]), np.r_[np.zeros(len(z)), np.ones(len(z))])
    return LateralityCheck(scale.tolist(), clf.coef_[0].tolist(), fitted_on)
