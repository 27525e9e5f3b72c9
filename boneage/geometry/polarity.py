"""Is this radiograph a negative (bone dark, background bright)? A small learned check.

Why learned: DICOM files say their polarity (MONOCHROME1 is inverted on reading), but PNG and JPEG exports
do not, and a negative fed to the network as it is gives a meaningless age. Hand-written rules about the
background failed on real data (grey and bright plates; measurements in docs/decisions.md, 2026-11-24).

What tells the two apart is local structure, not the background: cortical bone forms thin *bright* ridges
on darker soft tissue, so intensity correlates with ridge strength and edge strength one way in a normal
radiograph and the other way in its negative. A logistic regression on 26 such features (intensity
histogram, border and centre levels, ridge / edge statistics) of the 100 px image is fitted by
``python -m pipelines.fit_polarity`` on the training split and its negatives; its coefficients live in
``polarity.json`` beside this file (package data, no pickle). An image is flipped only when the check is
confident (probability >= ``threshold``) at each of three exposures of it (:data:`DECISION_EXPOSURES`),
because flipping a normal image costs far more than leaving a rare undeclared negative alone (how the
default 0.9 was chosen, and why three exposures: docs/decisions.md).

The features (ring widths, ridge and edge filters of fixed sigma) are measured in pixels, so the check reads
every image at the geometry it was fitted at, ``REFERENCE_SIZE`` (the 100 px squeeze of the RSNA training
files), whatever base size the model that asks uses: a 512 px base image is squeezed to 100 px first.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from boneage.config import write_json_atomic
from boneage.geometry.framing import squeeze
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

COEF_PATH = Path(__file__).with_name("polarity.json")
N_FEATURES = 26
REFERENCE_SIZE = 100  # side of the (squeezed) images the check is fitted on and reads


def at_reference_size(img: np.ndarray) -> np.ndarray:
    """``img`` squeezed (nearest neighbour) to REFERENCE_SIZE x REFERENCE_SIZE; unchanged when it already is."""
    a = np.asarray(img, dtype=np.float32)
    if a.shape == (REFERENCE_SIZE, REFERENCE_SIZE):
        return a

    return squeeze(a, REFERENCE_SIZE)


def polarity_features(img: np.ndarray) -> np.ndarray:
    """26 features of a 2-D image (any intensity range; meant for the 100 px base geometry)."""
    a = np.asarray(img, dtype=np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    x = np.clip((a - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    hist = np.histogram(x, bins=16, range=(0.0, 1.0))[0] / x.size
    k = max(1, min(x.shape) // 12)  # border ring width: 8 px at 100 px
    border = np.r_[x[:k].ravel(), x[-k:].ravel(), x[:, :k].ravel(), x[:, -k:].ravel()]
    h, w = x.shape
    centre = x[h // 4:3 * h // 4, w // 4:3 * w // 4]
    ridge = -ndimage.gaussian_laplace(x, 1.0)  # positive on thin bright structures
    grad = ndimage.gaussian_gradient_magnitude(x, 1.0)
    edges = grad > np.percentile(grad, 90)
    skew = float(((ridge - ridge.mean()) ** 3).mean() / (ridge.std() ** 3 + 1e-9))
    flat = x.ravel()

    def corr(u: np.ndarray) -> float:
        return float(np.corrcoef(flat, u.ravel())[0, 1]) if flat.std() > 0 and u.std() > 0 else 0.0

    edge_level = x[edges].mean() if edges.any() else x.mean()  # a blank image has no edges
    extra = [border.mean(), centre.mean(), x.mean(), np.median(x), edge_level - x.mean(),
             np.mean(ridge > 0.02), np.mean(ridge < -0.02), skew, corr(grad), corr(ridge)]
    return np.nan_to_num(np.r_[hist, extra].astype(np.float64))


@dataclass
class PolarityCheck:
    """Standardise, then logistic regression: P(negative)."""

    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = 0.9
    fitted_on: str = ""
    evaluation: dict | None = None  # held-out counts written by pipelines.fit_polarity

    def probability(self, img: np.ndarray) -> float:
        """P(negative) of a 2-D image of any size (read at ``REFERENCE_SIZE``, see the module docstring)."""
        z = (polarity_features(at_reference_size(img)) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept))))

    def is_inverted(self, img: np.ndarray) -> bool:
        """Confident at every one of :data:`DECISION_EXPOSURES` of the image (see there)."""
        img = at_reference_size(img)
        return all(self.probability(exposed(img, g)) >= self.threshold for g in DECISION_EXPOSURES)

    def save(self, path: str | Path = COEF_PATH) -> None:
        write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path = COEF_PATH) -> "PolarityCheck":
        d = json.loads(Path(path).read_text())
        if len(d["coef"]) != N_FEATURES:
            raise ValueError(f"{path} has {len(d['coef'])} coefficients, expected {N_FEATURES}: refit with "
                             "`python -m pipelines.fit_polarity`.")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@lru_cache(maxsize=1)
def default_check() -> PolarityCheck:
    if not COEF_PATH.is_file():
        raise FileNotFoundError(f"{COEF_PATH} is missing (it ships with the package); recreate it with "
                                "`python -m pipelines.fit_polarity`.")
    return PolarityCheck.load(COEF_PATH)


# Exposures the check is fitted across: image i of the training set also enters (with its negative) at gamma
# EXPOSURES[i % 4]. Fitted on plain images alone and read at one exposure, the check took 3 of the 200
# official films for negatives once they were brightened by gamma 0.7, and each flipped film read 34-142
# months off (docs/decisions.md, 2026-12-01).
EXPOSURES = (0.6, 0.75, 1.35, 1.6)
# An image is taken for a negative only when the check is confident at each of these exposures of it: a
# brightened normal film looks like a negative, but not once it is darkened again, while a negative looks
# like one at every exposure.
DECISION_EXPOSURES = (0.6, 1.0, 1.6)


def exposed(img: np.ndarray, g: float) -> np.ndarray:
    """``img`` (any range) with its intensities, scaled to [0, 1], raised to the power ``g`` (an exposure
    change, as :func:`boneage.evidence.precision.gamma`)."""
    a = np.asarray(img, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / max(hi - lo, 1e-6)) ** g * (hi - lo) + lo


def fit_polarity_check(images: list[np.ndarray], threshold: float = 0.9, C: float = 10.0,
                       fitted_on: str = "", exposures: tuple[float, ...] = EXPOSURES) -> PolarityCheck:
    """Fit on normal images and their negatives (max + min - x), the only labels needed; each image also
    enters at one of ``exposures`` (a gamma, in turn), normal and negative, so a brighter or darker export is
    not taken for a negative."""
    feats, labels = [], []
    for i, img in enumerate(images):
        a = np.asarray(img, dtype=np.float32)
        versions = [a] + ([exposed(a, exposures[i % len(exposures)])] if exposures else [])
        for v in versions:
            feats += [polarity_features(v), polarity_features(v.max() + v.min() - v)]
            labels += [0, 1]
    X, y = np.stack(feats), np.asarray(labels)
    scaler = StandardScaler().fit(X)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    lr = LogisticRegression(C=C, max_iter=5000).fit((X - scaler.mean_) / scale, y)
    return PolarityCheck(scaler.mean_.tolist(), scale.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]),
                         threshold, fitted_on)
