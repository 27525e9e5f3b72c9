"""The shipped model as a library object: load once, predict on files, bytes, arrays or case tables.

    from boneage import load_predictor
    p = load_predictor()                      # artifacts/model, no data directory needed
    r = p.predict_file("hand.png", male=False)
    r.boneage_months, r.stage, r.scale_months

Prediction intervals (conformal, ``lower_80`` ... ``upper_95``) are attached when the calibration artifact
exists (see :mod:`boneage.evaluation.conformal`).
"""
from __future__ import annotations

import json
import pickle
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from boneage.config import MODEL_DIR, ModelConfig, model_config_from_dict
from boneage.io.imaging import ImageLoadError
from boneage.io.input_gate import gate_array, load_radiograph, load_radiograph_bytes
from boneage.nn.forward import (FastNetwork, Member, RawPredictions, average_views, blend_readings, empty_like_rows,
                        fast_network_for, fill_rows, run_network, shares_passes, take_rows,
                        view_ranks)
from boneage.nn.model import BoneAgeNet, fold_batchnorm
from boneage.geometry.laterality import MIN_OTHER_WEIGHT, default_check as laterality_check, other_side_weight
from boneage.geometry.preprocess import Prepared, prepare, to_uint8
from boneage.evaluation.conformal import ConformalCalibrator
from boneage.evaluation.site_calibration import SiteProfileError, load_site
from boneage.inference.unlike_training import outlier_scores
from boneage.store.manifest import member_dirs, model_fingerprint


class ModelNotFoundError(FileNotFoundError):
    """The trained model files are missing; the message says which and how to get them."""


class ModelDamagedError(ModelNotFoundError):
    """The model files exist but cannot be used (truncated, not a checkpoint, wrong network). A subclass of
    :class:`ModelNotFoundError` so that every door that reports a missing model reports this one too."""


@dataclass
class Prediction:
    boneage_months: float
    scale_months: float  # Laplace scale: ~ typical absolute error the model expects for this case
    stage: str
    stage_probs: dict[str, float]
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # "80" -> (lo, hi)
    notes: tuple[str, ...] = ()  # what the reader should know about the input (e.g. first frame of several used)
    # the "unlike the training data" check (boneage.inference.unlike_training), when the predictor has one
    outlier_score: float | None = None
    unlike_training_data: bool | None = None
    # How the film was framed and what mirroring means, for models that frame (boneage.geometry.framing); empty for
    # models that read the whole film as it is.
    framing: str = ""
    mirrored: str = ""

    def as_row(self) -> dict:
        row = {"boneage_pred": round(self.boneage_months, 2), "uncertainty": round(self.scale_months, 2),
               "stage_pred": self.stage}
        row.update({f"p_{k.lower()}": round(v, 4) for k, v in self.stage_probs.items()})
        for level, (lo, hi) in self.intervals.items():
            row[f"lower_{level}"], row[f"upper_{level}"] = round(lo, 2), round(hi, 2)
        if self.unlike_training_data is not None:
            row["outlier_score"], row["unlike_training_data"] = round(self.outlier_score, 3), self.unlike_training_data
        if self.framing:
            row["framing"] = self.framing
        if self.mirrored:
            row["mirrored"] = self.mirrored
        return row


def framing_text(framing) -> str:
    """The ``framing`` output cell: ``hand`` (the square around the found hand was read, turned by N degrees
    when upright framing is on) or ``whole image: <why>``."""
    if framing.found:
        turn = f", turned {framing.angle_deg:+.0f} deg" if framing.angle_deg else ""
        return f"hand{turn}"
    return f"whole image: {framing.reason}"


def hand_notes(prepared: Prepared) -> tuple[str, ...]:
    """The note a reading gets when the model reads the hand alone and the hand's outline is doubtful
    (:class:`boneage.geometry.hand.HandSegmentation`): the reader is told, never left with a silent reading."""
    hand = prepared.hand
    if hand is None or hand.ok:
        return ()
    return (f"hand outline doubtful: {hand.reason}; the model reads only what lies inside the outline, so check "
            "it over the heatmap on the Explain page before trusting the reading",)


def mirrored_text(cfg: ModelConfig, mirrored: bool = False, other_weight: float = 0.0) -> str:
    """The ``mirrored`` output cell. A mirror-invariant model averages every reading with its mirror image, so
    whether the film was mirrored does not matter and is not guessed. A model reading left hands only
    (laterality ``left``) says whether the learned check took the film for a right hand and mirrored it, and
    how much of the other side's reading was blended in when the check was unsure."""
    if cfg.mirror_invariant:
        return "invariant (reading identical for the mirror image)"
    if getattr(cfg, "laterality", "as-is") == "left":
        text = ("yes: taken for a right hand (or a mirrored export) and read mirrored, as a left hand" if mirrored
                else "no: taken for a left hand and read as it is")
        if other_weight >= MIN_OTHER_WEIGHT:
            text += f"; side uncertain, so {other_weight:.0%} of the reading is the other side's"
        return text
    return "not checked (left hand assumed)"


def load_model_dir(model_dir: str | os.PathLike = MODEL_DIR) -> tuple[BoneAgeNet, dict]:
    """Load weights + config from a model directory (``model.pt`` + ``config.json``)."""
    model_dir = Path(model_dir)
    weights, cfg_path = model_dir / "model.pt", model_dir / "config.json"
    for f in (weights, cfg_path):
        if not f.is_file():
            raise ModelNotFoundError(
                f"Model file {f} is missing. The shipped model lives in artifacts/model/ of the repository "
                "(git checkout it), or train one with `python -m pipelines.train`."
            )
    fix = "restore it (git checkout artifacts/model) or retrain with `python -m pipelines.train`"
    try:
        config = json.loads(cfg_path.read_text())
        cfg = model_config_from_dict(config["model"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDamagedError(f"{cfg_path} is not a usable model configuration ({type(exc).__name__}: {exc}); "
                                f"{fix}.") from None
    try:
        model = BoneAgeNet(cfg, pretrained=False)
    except ValueError as exc:  # e.g. an unknown backbone name
        raise ModelDamagedError(f"{cfg_path}: {exc}") from None
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
    except pickle.UnpicklingError as exc:
        # torch's text is never passed on: it advises weights_only=False, which would run what the file holds
        if "Unsupported global" not in str(exc):  # damaged bytes, not planted objects
            raise ModelDamagedError(f"{weights} cannot be loaded: it is truncated, damaged or not this network's "
                                    f"weights (not a plain weights file; it was not unpickled); {fix}.") from None
        raise ModelDamagedError(f"{weights} holds Python objects, not only weights, and was refused (never unpickle "
                                "untrusted files: that can run code). Use a model file produced by this project's "
                                f"training (`python -m pipelines.train`), or {fix}.") from None
    except Exception as exc:  # EOFError, RuntimeError, IndexError ...: all mean "not this model"
        raise ModelDamagedError(f"{weights} cannot be loaded: it is truncated, damaged or not this network's "
                                f"weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                f"{fix}.") from None
    model.eval()
    # Inference only from here: BatchNorm folded into the convolutions, channels-last weights (together
    # about 2x faster on the CPU, see inference.INFERENCE_BATCH). Train from model.pt, not from this.
    model = fold_batchnorm(model).to(memory_format=torch.channels_last)
    return model, config


def load_members(model_dir: str | os.PathLike, config: dict) -> tuple[BoneAgeNet, ...]:
    """Load every ensemble member of a model folder; a missing file is an error naming it, never a quiet
    fall-back to fewer networks (the conformal intervals were calibrated on the whole ensemble). Members must
    prepare the same pixels as the model; every network reads the phase views the model's geometry makes."""
    base = model_config_from_dict(config["model"]).geometry
    members = []
    for d in member_dirs(model_dir, config):
        net, _ = load_model_dir(d)
        if net.cfg.geometry.key() != base.key():  # the same pixels; the views (phases) are the model's
            raise ValueError(f"ensemble member {d} reads images prepared as {net.cfg.geometry.key()}, "
                             f"the model as {base.key()} (base size-fit-framing-margin)")
        members.append(net)
    return tuple(members)


class BoneAgePredictor:
    """A loaded model plus its preprocessing; thread-safe for inference (no state changes).

    ``members`` are further networks averaged into every prediction (an ensemble, listed in the model's
    config.json); features and explanations come from ``model`` alone. ``site``: a
    :class:`boneage.evaluation.site_calibration.SiteProfile` whose correction and intervals replace the shipped ones
    (see :meth:`with_site`); None = the shipped model as it is.
    """

    def __init__(self, model: BoneAgeNet, config: dict, conformal=None, tta: bool = False,
                 conformal_problem: str = "", members: tuple[BoneAgeNet, ...] = (), site=None,
                 model_dir: str | os.PathLike | None = None):
        self.model = model
        self.config = config
        self.cfg: ModelConfig = model.cfg
        self.conformal = conformal
        self.conformal_problem = conformal_problem  # why there are no intervals, when a file is unusable
        self.tta = tta
        self.members = tuple(members)
        self.site = site
        self.model_dir = model_dir
        # LOF on the training features (boneage.inference.unlike_training.fit_training_outlier_check): when set, every
        # prediction says whether the image is unlike the training data. Only valid for the model whose
        # features it was fitted on.
        self.outlier_check = None

    def fast_network(self) -> FastNetwork:
        """The traced copy of the network for predictions, built on first use and shared by every
        predictor of the same loaded model."""
        return fast_network_for(self.model)

    def ensemble(self) -> list[Member]:
        """The members with their traced copies, for :func:`boneage.nn.forward.run_network`."""
        return [Member(m, fast_network_for(m)) for m in self.members]

    def with_options(self, tta: bool | None = None, ensemble: bool | None = None) -> "BoneAgePredictor":
        """The same loaded networks with TTA and/or the ensemble members switched (None keeps them)."""
        members = self.members if ensemble is None or ensemble else ()
        out = BoneAgePredictor(self.model, self.config, self.conformal, self.tta if tta is None else tta,
                               self.conformal_problem, members, None, self.model_dir)
        out.outlier_check = self.outlier_check
        return out.with_site(self.site) if self.site is not None else out  # re-checked: networks or TTA may differ

    def with_site(self, site) -> "BoneAgePredictor":
        """The same loaded networks with a site profile applied (a name in artifacts/sites, a path or a
        SiteProfile; None removes it). Raises SiteProfileError when it was fitted for other networks."""
        if site is None:
            out = BoneAgePredictor(self.model, self.config, self.conformal, self.tta, self.conformal_problem,
                                   self.members, None, self.model_dir)
            out.outlier_check = self.outlier_check
            return out
        profile = load_site(site)
        if self.model_dir is None:
            raise SiteProfileError("this predictor was not loaded from a model folder: its fingerprint is unknown")
        profile.check_model(model_fingerprint(self.model_dir, members=bool(self.members)), self.tta,
                            self.cfg.geometry.phases, self.cfg.geometry.laterality)
        out = BoneAgePredictor(self.model, self.config, self.conformal, self.tta, self.conformal_problem,
                               self.members, profile, self.model_dir)
        out.outlier_check = self.outlier_check
        return out

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike = MODEL_DIR, tta: bool | None = None,
                 ensemble: bool = True) -> "BoneAgePredictor":
        """``tta=None`` takes the model's own default (``inference.tta`` in its config.json);
        ``ensemble=False`` leaves the members out (for comparisons: the intervals assume them)."""
        model, config = load_model_dir(model_dir)
        members = load_members(model_dir, config) if ensemble else ()
        conformal, problem = None, ""
        cal_path = Path(model_dir) / "conformal.json"
        if cal_path.is_file():
            try:
                conformal = ConformalCalibrator.load(cal_path)
            except (ValueError, KeyError, TypeError) as exc:  # stale or damaged: predictions still work, intervals do not
                problem = f"Prediction intervals unavailable: {exc}"
        if tta is None:
            tta = default_tta(config)
        return cls(model, config, conformal, tta, problem, members, model_dir=Path(model_dir))

    # -- preprocessing -------------------------------------------------------------------------
    def preprocess(self, arr: np.ndarray) -> np.ndarray:
        """Raw 2-D radiograph -> base-size uint8 image the network sees (before resizing)."""
        return self.preprocess_checked(arr)[0]

    def preprocess_checked(self, arr: np.ndarray) -> tuple[np.ndarray, bool]:
        """As :meth:`preprocess`, plus whether the radiograph was taken for a negative and inverted."""
        p = self.prepare(arr)
        return p.image, p.negative

    def prepare(self, arr: np.ndarray) -> Prepared:
        """As :meth:`preprocess`, with everything done to get there (negative, framing); image as uint8."""
        p = prepare(arr, self.cfg.geometry)
        if p.hand is not None and not p.hand.mask.any():
            raise ImageLoadError(f"{p.hand.reason}; this model reads the hand alone, so there is nothing to read: "
                                 "check that the file is a radiograph of a hand")
        extra = None if p.extra_views is None else to_uint8(p.extra_views)
        return Prepared(to_uint8(p.image), p.negative, p.framing, extra, p.mirrored, p.hand)

    def _describe_input(self, pred: Prediction, prepared: Prepared, other_weight: float = 0.0) -> Prediction:
        """Fill the ``framing`` and ``mirrored`` cells; ``other_weight`` is the share of the reading that is the
        other side's (:attr:`RawPredictions.other_weight`, as :meth:`read` blended it)."""
        geo = self.cfg.geometry
        if geo.framing != "none" or self.cfg.mirror_invariant or geo.laterality != "as-is":
            pred.framing = framing_text(prepared.framing) if geo.framing != "none" else "off"
            pred.mirrored = mirrored_text(self.cfg, prepared.mirrored, other_weight)
        return pred

    @staticmethod
    def _other_weights(raw: RawPredictions) -> np.ndarray:
        return raw.other_weight if raw.other_weight is not None else np.zeros(len(raw.age))

    # -- prediction ----------------------------------------------------------------------------
    def predict_preprocessed(self, images: np.ndarray, male: np.ndarray, return_features: bool = False,
                             tta_pass: int | np.ndarray | None = None) -> RawPredictions:
        """The network's readings of prepared images, each on its own (no phase views, no laterality blend:
        :meth:`read` adds those); ``tta_pass`` see :func:`boneage.nn.forward.run_network`."""
        return run_network(self.model, images, np.asarray(male).astype(bool), return_features=return_features,
                           tta=self.tta, fast=self.fast_network(), members=self.ensemble(), tta_pass=tta_pass)

    def read(self, images: np.ndarray, male: np.ndarray, return_features: bool = False,
             extra_views: np.ndarray | None = None, extra_owner: np.ndarray | None = None) -> RawPredictions:
        """The network's reading of prepared images, each averaged with its other phase views when given
        (``extra_views[j]`` is a view of ``images[extra_owner[j]]``, see :func:`boneage.nn.forward.average_views`).
        A model reading left hands only blends in the mirrored reading of films whose side the laterality
        check is unsure of (:mod:`boneage.geometry.laterality`). Every reading of a film by this predictor passes here."""
        m = np.asarray(male).astype(bool)
        raw = self._read_views(images, m, return_features, extra_views, extra_owner)
        if self.cfg.geometry.laterality != "left":
            return raw
        w = np.array([other_side_weight(laterality_check().score(img)) for img in np.asarray(images)])
        rows = np.flatnonzero(w >= MIN_OTHER_WEIGHT)
        if len(rows) == 0:
            raw.other_weight = w
            return raw
        sub_extra = sub_owner = None
        if extra_views is not None and len(extra_views):
            owner = np.asarray(extra_owner, np.int64)
            keep = np.isin(owner, rows)
            sub_extra = np.ascontiguousarray(np.asarray(extra_views)[keep][:, :, ::-1])
            sub_owner = np.searchsorted(rows, owner[keep])
        other = self._read_views(np.ascontiguousarray(np.asarray(images)[rows][:, :, ::-1]), m[rows], False,
                                 sub_extra, sub_owner)
        raw = blend_readings(raw, other, rows, w[rows])
        raw.other_weight = w
        return raw

    def _read_views(self, images: np.ndarray, male: np.ndarray, return_features: bool,
                    extra_views: np.ndarray | None, extra_owner: np.ndarray | None) -> RawPredictions:
        if extra_views is None or not len(extra_views):
            return self.predict_preprocessed(images, male, return_features)
        owner = np.asarray(extra_owner, np.int64)
        if not self.tta or not shares_passes(self.cfg.tta_views):
            raw = self.predict_preprocessed(images, male, return_features)
            return average_views(raw, self.predict_preprocessed(extra_views, male[owner]), owner)
        # A film's views share the passes out: view k (the first view is 0) takes pass k, so a film read at 3x3
        # phases with the 3x3 shifts costs 9 passes, not 81, in one batch. Films without other views take every pass.
        has = np.zeros(len(images), bool)
        has[owner] = True
        with_views, alone = np.flatnonzero(has), np.flatnonzero(~has)
        stacked = np.concatenate([np.asarray(images)[with_views], np.asarray(extra_views)])
        passes = np.concatenate([np.zeros(len(with_views), np.int64), view_ranks(owner)])
        both = self.predict_preprocessed(stacked, np.concatenate([male[with_views], male[owner]]),
                                         return_features, tta_pass=passes)
        raw = empty_like_rows(both, len(images))
        fill_rows(raw, with_views, take_rows(both, np.arange(len(with_views))))
        if len(alone):
            fill_rows(raw, alone, self.predict_preprocessed(np.ascontiguousarray(np.asarray(images)[alone]),
                                                            male[alone], return_features))
        return average_views(raw, take_rows(both, np.arange(len(with_views), len(stacked))), owner)

    def read_prepared(self, prepared: list[Prepared], male: np.ndarray, return_features: bool = False) -> RawPredictions:
        """:meth:`read` of :class:`Prepared` films, their phase views included."""
        return self.read_films([p.image for p in prepared], [p.extra_views for p in prepared], male, return_features)

    def read_films(self, images: Sequence[np.ndarray], extra_views: Sequence[np.ndarray | None], male: np.ndarray,
                   return_features: bool = False) -> RawPredictions:
        """:meth:`read` of films each given as its base image and its own other phase views (None or empty for
        a film with one view), as :meth:`prepare` gives them."""
        extra = [(i, v) for i, v in enumerate(extra_views) if v is not None and len(v)]
        owner = np.concatenate([np.full(len(v), i) for i, v in extra]) if extra else None
        return self.read(np.stack(images), male, return_features,
                         np.concatenate([v for _, v in extra]) if extra else None, owner)

    def read_loaded(self, loaded, return_features: bool = False) -> RawPredictions:
        """:meth:`read` of a :class:`boneage.training.image_cache.LoadedImages` (its phase views included)."""
        return self.read(loaded.images, loaded.cases["male"].to_numpy(), return_features,
                         loaded.extra_views, loaded.extra_owner)

    def _to_predictions(self, raw: RawPredictions, male: np.ndarray) -> list[Prediction]:
        names = list(self.cfg.stages.names)
        ages = raw.age
        if self.site is not None:  # the site's corrected age and its own intervals
            ages, intervals = self.site.apply(raw.age, raw.scale, male)
        else:
            intervals = self.conformal.intervals(raw.age, raw.scale, male) if self.conformal is not None else None
        scores = flags = None
        if self.outlier_check is not None and raw.features is not None:
            scores, flags = outlier_scores(self.outlier_check, raw.features)
        out = []
        for i in range(len(ages)):
            probs = {n: float(raw.stage_prob[i, j]) for j, n in enumerate(names)}
            iv = {lvl: (float(lo[i]), float(hi[i])) for lvl, (lo, hi) in intervals.items()} if intervals else {}
            out.append(Prediction(float(ages[i]), float(raw.scale[i]), names[int(np.argmax(raw.stage_prob[i]))], probs, iv))
            if scores is not None:
                out[-1].outlier_score, out[-1].unlike_training_data = float(scores[i]), bool(flags[i])
        return out

    def _predict_pixels(self, arr: np.ndarray, male: bool, notes: tuple[str, ...] = ()) -> Prediction:
        p = self.prepare(arr)
        raw = self.read_prepared([p], np.array([male]), return_features=self.outlier_check is not None)
        pred = self._describe_input(self._to_predictions(raw, np.array([male]))[0], p, self._other_weights(raw)[0])
        pred.notes = tuple(notes)
        return pred

    def predict_prepared(self, prepared: list[Prepared], male: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """Predictions (with their framing and mirroring notes) and penultimate features (N, D) of prepared
        images, in one batch; the outlier check is left to the caller (:mod:`boneage.inference.assess`)."""
        m = np.asarray(male).astype(bool)
        raw = self.read_prepared(prepared, m, return_features=True)
        features, raw.features = raw.features, None
        preds = [self._describe_input(pr, p, w)
                 for pr, p, w in zip(self._to_predictions(raw, m), prepared, self._other_weights(raw))]
        return preds, features

    # Every door passes the input gate (boneage.io.input_gate): images that cannot be a hand radiograph (blank,
    # tiny, noise, colour photos, other DICOM modalities) raise NotARadiographError, an ImageLoadError.
    def predict_array(self, arr: np.ndarray, male: bool) -> Prediction:
        return self._predict_pixels(gate_array(arr, "image"), male)

    def predict_file(self, path: str | os.PathLike, male: bool) -> Prediction:
        g = load_radiograph(path)
        return self._predict_pixels(g.pixels, male, g.notes)

    def predict_bytes(self, data: bytes, male: bool, name: str = "upload") -> Prediction:
        g = load_radiograph_bytes(data, name)
        return self._predict_pixels(g.pixels, male, g.notes)


_DEFAULT: BoneAgePredictor | None = None


def default_tta(config: dict) -> bool:
    """Whether the model's predictions are averaged over its test-time augmentation by default
    (``ModelConfig.tta_views`` says which passes).

    The choice is stored with the model (``"inference": {"tta": ...}`` in config.json) because its
    conformal intervals were calibrated on predictions made that way: switching TTA off for a model
    calibrated with it (or on, for one without) loosens the coverage promise slightly.
    """
    return bool(config.get("inference", {}).get("tta", False))


def load_predictor(model_dir: str | os.PathLike | None = None, tta: bool | None = None,
                   ensemble: bool = True, site=None) -> BoneAgePredictor:
    """The shipped model, loaded once per process (a given ``model_dir`` always loads afresh).

    ``tta=None`` uses the model's stored default; True or False overrides it. ``ensemble=False`` predicts
    with the primary network alone. ``site``: a site profile (name in artifacts/sites, path or
    SiteProfile) applied to every prediction, see :meth:`BoneAgePredictor.with_site`.
    """
    if site is not None:
        return load_predictor(model_dir, tta, ensemble).with_site(site)
    global _DEFAULT
    if model_dir is not None:
        return BoneAgePredictor.from_dir(model_dir, tta=tta, ensemble=ensemble)
    if _DEFAULT is None:
        _DEFAULT = BoneAgePredictor.from_dir(MODEL_DIR)
    if (tta is not None and _DEFAULT.tta != tta) or not ensemble:
        return _DEFAULT.with_options(tta=tta, ensemble=ensemble)
    return _DEFAULT
