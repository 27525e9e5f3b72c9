"""One assessment of a radiograph, the same for every door (library, CLI, dashboard, HTTP service, reports).

    from boneage.inference.assess import assess
    a = assess("hand.png", "F", chronological_age=130)       # or bytes, an upload object, a 2-D array
    a.boneage_months, a.intervals["90"], a.stage, a.maturity.status, a.unlike_training_data
    a.as_row()                                                  # the output row every door writes

:func:`assess` runs the whole job in one place: the input gate (:mod:`boneage.io.input_gate`, a refused image
raises :class:`boneage.io.imaging.ImageLoadError` with the reason), the negative-image check, the prediction with
its conformal (or site) intervals and stage, the "unlike the training data" check
(:mod:`boneage.inference.unlike_training`), the framing and mirroring notes, the maturity status against the
chronological age (:mod:`boneage.growth.maturity`) and the site profile (:mod:`boneage.evaluation.site_calibration`). For DICOM
files a missing sex or chronological age is read from the header (:mod:`boneage.io.dicom_patient`) and the
assessment says so. :func:`assess_cases` is the batch form (a case table and an image folder; one row per
case, failures with their reason) that ``pipelines.predict``, ``pipelines.evaluate`` and ``pipelines.calibrate_site`` use.

:meth:`Assessment.as_row` is the one output schema (:func:`row_columns`): the prediction CLI's CSV, the
dashboard's CSV and the HTTP service's JSON all carry exactly these keys.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from boneage.io.dicom_patient import PatientInfo, patient_info
from boneage.io.imaging import ImageLoadError, safe_image_path
from boneage.io.input_gate import GatedImage, GateResult, gate_array, load_radiograph, load_radiograph_bytes
from boneage.growth.adult_height import AdultHeightPrediction, TargetHeight, midparental_height, predict_adult_height
from boneage.growth.clinical import CLINICAL_COLUMNS, ClinicalInput, parse_clinical
from boneage.growth.maturity import MaturityAssessment, maturity_status
from boneage.growth.sds import INTERVAL_LEVEL, BoneAgeSDS, bone_age_sds
from boneage.inference.predictor import BoneAgePredictor, Prediction, hand_notes, load_predictor
from boneage.geometry.preprocess import Prepared
from boneage.evaluation.site_calibration import LEVELS, SiteProfile, site_path
from boneage.inference.unlike_training import fit_training_outlier_check, outlier_scores
from boneage.io.tables import parse_male
from boneage.store.artifacts import ArtifactMissingError, default_artifacts_dir
from boneage.store.manifest import model_fingerprint, sha256_file

MAX_CHRONOLOGICAL_AGE = 300.0  # months; the dashboard's input allows the same range
DECISION_SUPPORT = ("Decision support only: this estimate does not replace a radiologist's reading of the "
                    "radiograph, and it is not a diagnosis.")


class AssessmentInputError(ValueError):
    """The request around the image is unusable (sex or chronological age missing or not understood); the
    message says what to give instead. Image problems raise :class:`boneage.io.imaging.ImageLoadError`."""


@dataclass
class Assessment:
    """Everything one radiograph's assessment says. Ages in months.

    ``id``: what the door calls the case (case id, file name, upload name). ``intervals``: level ("80", "90",
    "95") -> (lower, upper), empty when the model has no calibration (``interval_problem`` says why).
    ``outlier_score``/``unlike_training_data``: the LOF check, None when it was not run (``notes`` say why
    when it was unavailable). ``maturity``: None without a chronological age. ``sex_source`` /
    ``chronological_age_source``: ``"given"`` or the DICOM tags they were read from. ``site``: the site
    profile's name (None: the model as shipped), ``site_note`` what the profile is. ``image``: the base-size
    uint8 model input (for heatmaps and reports), ``extra_views`` the film's other phase views that the reading
    averaged in (None for one view); ``feature``: the penultimate features (similar cases).
    """
    id: str
    male: bool
    boneage_months: float
    scale_months: float
    stage: str
    stage_probs: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    interval_problem: str = ""
    inverted_negative: bool = False
    framing: str = ""
    mirrored: str = ""
    read_mirrored: bool = False  # taken for a right hand and mirrored before reading (laterality "left")
    outlier_score: float | None = None
    unlike_training_data: bool | None = None
    outlier_threshold: float | None = None
    chronological_age_months: float | None = None
    chronological_age_source: str = ""
    sex_source: str = "given"
    maturity: MaturityAssessment | None = None
    site: str | None = None
    site_note: str = ""
    model_sha256: str = ""
    notes: tuple[str, ...] = ()
    patient: PatientInfo = field(default_factory=PatientInfo)
    clinical: ClinicalInput = field(default_factory=ClinicalInput)
    sds: BoneAgeSDS | None = None
    adult_height: AdultHeightPrediction | None = None
    target_height: TargetHeight | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    extra_views: np.ndarray | None = field(default=None, repr=False, compare=False)
    feature: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def sex(self) -> str:
        return "M" if self.male else "F"

    @property
    def prediction(self) -> Prediction:
        """The network's part alone, as :class:`boneage.inference.predictor.Prediction`."""
        return Prediction(self.boneage_months, self.scale_months, self.stage, dict(self.stage_probs),
                          dict(self.intervals), self.notes, self.outlier_score, self.unlike_training_data,
                          self.framing, self.mirrored)

    def with_chronological_age(self, months: float | None, source: str = "given") -> "Assessment":
        """A copy compared with a chronological age (None: without one). Raises :class:`AssessmentInputError`
        for an age that cannot be a child's."""
        if months is None:
            return dataclasses.replace(self, chronological_age_months=None, chronological_age_source="", maturity=None)
        months = check_chronological_age(months)
        ma = maturity_status(self.boneage_months, months, interval=self.intervals.get("95"), scale=self.scale_months)
        return dataclasses.replace(self, chronological_age_months=months, chronological_age_source=source,
                                   maturity=ma)._with_growth()

    @property
    def patient_id(self) -> str:
        """The patient id given with the film, else the DICOM PatientID ('' when neither)."""
        return self.clinical.patient_id or self.patient.patient_id

    @property
    def study_date(self):
        """The study date given with the film, else the DICOM header's (None when neither)."""
        return self.clinical.study_date or self.patient.study_date

    def with_clinical(self, clinical: ClinicalInput | dict | None) -> "Assessment":
        """A copy with the clinical facts (:mod:`boneage.growth.clinical`: patient id, dates or age, heights):
        a chronological age given there replaces the DICOM header's, and the SDS, adult height and target
        height follow. Problems with the facts become notes; the reading is never refused for them."""
        if clinical is None:
            return self
        if not isinstance(clinical, ClinicalInput):
            clinical = parse_clinical(clinical)
        out = dataclasses.replace(self, clinical=clinical,
                                  notes=self.notes + tuple(f"not used: {p}" for p in clinical.problems))
        if clinical.chronological_age_months is not None:
            out = out.with_chronological_age(clinical.chronological_age_months, f"{clinical.age_source} given")
        return out._with_growth()

    def _with_growth(self) -> "Assessment":
        """SDS against the reference, Bayley-Pinneau adult height and the target height, from the current
        chronological age and clinical facts (None where they do not apply)."""
        ca, c = self.chronological_age_months, self.clinical
        iv = self.intervals.get(INTERVAL_LEVEL)
        sds = None if ca is None else bone_age_sds(self.boneage_months, ca, self.male, interval=iv)
        ah = None
        if c.height_cm is not None:
            ah = (predict_adult_height(c.height_cm, self.boneage_months, ca, self.male, interval=iv)
                  if ca is not None else AdultHeightPrediction("Bayley-Pinneau (1952)",
                                                               reason="the chronological age is needed"))
        th = (midparental_height(c.father_height_cm, c.mother_height_cm, self.male)
              if c.father_height_cm is not None or c.mother_height_cm is not None else None)
        return dataclasses.replace(self, sds=sds, adult_height=ah, target_height=th)

    def growth_text(self) -> list[str]:
        """Sentences for people: the SDS against its reference, the adult height, the target height."""
        out = [] if self.sds is None else [self.sds.text()]
        if self.adult_height is not None:
            out.append(self.adult_height.text())
        th = self.target_height
        if th is not None and th.target_cm is not None:
            out.append(f"Mid-parental target height {th.target_cm:.1f} cm (range {th.lower_cm:.1f}-{th.upper_cm:.1f} cm).")
        return out

    def growth_notes(self) -> list[str]:
        """Why an SDS, adult height or target height asked for is missing ([] when none is)."""
        out = []
        if self.sds is not None and self.sds.sds is None:
            out.append(self.sds.reason)
        if self.adult_height is not None and self.adult_height.adult_height_cm is None:
            out.append(f"no adult height: {self.adult_height.reason}")
        elif self.adult_height is not None and self.adult_height.note:
            out.append(f"adult height: {self.adult_height.note}")
        if self.target_height is not None and self.target_height.target_cm is None:
            out.append(f"no target height: {self.target_height.reason}")
        return out

    def cautions(self) -> list[str]:
        """Plain-text sentences every door shows with the estimate: what was done to the input and what to
        read with extra care (inverted negative, unlike the training data, decoder and header notes)."""
        out = list(self.notes)
        if self.inverted_negative:
            out.append("This image looks like a negative (bone dark on a bright background), so it was inverted "
                       "before prediction. Check the model input: bone should be bright.")
        if self.read_mirrored:
            out.append("This film was taken for a right hand (or a left hand exported mirrored), so it was mirrored "
                       "and read as a left hand. Check the model input: the thumb should be on the right.")
        if self.unlike_training_data:
            out.append(f"This image looks unlike the training radiographs (outlier score {self.outlier_score:.2f} > "
                       f"{self.outlier_threshold:.2f}): read the estimate with extra caution.")
        return out

    def maturity_text(self) -> str:
        """'Delayed: bone age is 14.2 months behind the chronological age (130 months).' ('' without one)."""
        ma = self.maturity
        if ma is None:
            return ""
        rel = "behind" if ma.difference_months < 0 else "ahead of"
        return (f"{ma.label}: bone age is {abs(ma.difference_months):.1f} months {rel} the chronological age "
                f"({self.chronological_age_months:.0f} months).")

    def as_row(self) -> dict:
        """The output row shared by every door, keys in :func:`row_columns` order (None where a value does
        not apply, ``error`` empty)."""
        row: dict[str, Any] = {"id": self.id, "male": bool(self.male), "boneage_pred": round(self.boneage_months, 2),
                               "uncertainty": round(self.scale_months, 2), "stage_pred": self.stage}
        row.update({f"p_{k.lower()}": round(v, 4) for k, v in self.stage_probs.items()})
        for level in LEVELS:
            lo, hi = self.intervals.get(level, (None, None))
            row[f"lower_{level}"] = None if lo is None else round(lo, 2)
            row[f"upper_{level}"] = None if hi is None else round(hi, 2)
        row["outlier_score"] = None if self.outlier_score is None else round(self.outlier_score, 3)
        row["unlike_training_data"] = self.unlike_training_data
        row["framing"] = self.framing or None
        row["mirrored"] = self.mirrored or None
        row["inverted_negative"] = bool(self.inverted_negative)
        row["chronological_age_months"] = (None if self.chronological_age_months is None
                                           else round(self.chronological_age_months, 1))
        row["difference_months"] = None if self.maturity is None else round(self.maturity.difference_months, 1)
        row["maturity"] = None if self.maturity is None else self.maturity.status
        row["site"] = self.site
        row["patient_id"] = self.patient_id or None
        row["study_date"] = None if self.study_date is None else self.study_date.isoformat()
        sds, ah, th = self.sds, self.adult_height, self.target_height
        row["reference_mean_months"] = None if sds is None or sds.sds is None else round(sds.reference_mean_months, 2)
        row["reference_sd_months"] = None if sds is None or sds.sds is None else round(sds.reference_sd_months, 2)
        row["bone_age_sds"] = None if sds is None or sds.sds is None else round(sds.sds, 2)
        row["sds_status"] = None if sds is None else sds.status
        row["sds_reference"] = None if sds is None else sds.reference
        ok = ah is not None and ah.adult_height_cm is not None
        row["predicted_adult_height_cm"] = round(ah.adult_height_cm, 1) if ok else None
        row["adult_height_lower_90"] = round(ah.lower_90_cm, 1) if ok else None
        row["adult_height_upper_90"] = round(ah.upper_90_cm, 1) if ok else None
        row["adult_height_table"] = ah.table if ok else None
        row["target_height_cm"] = (None if th is None or th.target_cm is None else round(th.target_cm, 1))
        row["notes"] = " | ".join([*self.notes, *self.growth_notes()]) or None
        row["error"] = ""
        return row


GROWTH_COLUMNS = ("patient_id", "study_date", "reference_mean_months", "reference_sd_months", "bone_age_sds",
                  "sds_status", "sds_reference", "predicted_adult_height_cm", "adult_height_lower_90",
                  "adult_height_upper_90", "adult_height_table", "target_height_cm")


def row_columns(stage_names: Sequence[str]) -> list[str]:
    """The keys of :meth:`Assessment.as_row` (and of :func:`error_row`), in order, for a model's stages."""
    return (["id", "male", "boneage_pred", "uncertainty", "stage_pred", *(f"p_{n.lower()}" for n in stage_names)]
            + [f"{b}_{lvl}" for lvl in LEVELS for b in ("lower", "upper")]
            + ["outlier_score", "unlike_training_data", "framing", "mirrored", "inverted_negative",
               "chronological_age_months", "difference_months", "maturity", "site", *GROWTH_COLUMNS, "notes", "error"])


def error_row(case_id: str, male: bool | None, error: str, stage_names: Sequence[str]) -> dict:
    """A row of the same schema for a case that could not be assessed: everything empty but the reason."""
    row = dict.fromkeys(row_columns(stage_names))
    row.update(id=case_id, male=male, error=error)
    return row


def check_chronological_age(months: Any) -> float:
    """A chronological age in months as a float; :class:`AssessmentInputError` when it is not a number in
    [0, :data:`MAX_CHRONOLOGICAL_AGE`]."""
    try:
        value = float(months)
    except (TypeError, ValueError):
        raise AssessmentInputError(f"chronological age {months!r} is not a number; give it in months "
                                   "(e.g. 130 for 10 years 10 months).") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_CHRONOLOGICAL_AGE:
        raise AssessmentInputError(f"chronological age {months!r} months is outside 0-{MAX_CHRONOLOGICAL_AGE:.0f} "
                                   "months; give it in months (e.g. 130 for 10 years 10 months).")
    return value


SEX_WORDS = {"m": True, "male": True, "f": False, "female": False}


def parse_sex(sex: Any) -> bool | None:
    """True (male) / False (female) from the text M/F or male/female (any case), or a Python/NumPy bool or
    1/0 from a library caller; None when not given (None or blank); :class:`AssessmentInputError` otherwise.
    Text is read strictly: ``yes`` or ``n`` is not a sex (issue #31: they were read as male and female)."""
    if sex is None or (isinstance(sex, str) and not sex.strip()):
        return None
    male = SEX_WORDS.get(sex.strip().lower()) if isinstance(sex, str) else parse_male(sex)
    if male is None:
        raise AssessmentInputError(f"sex {sex!r} is not understood; give M or F (male or female).")
    return male


# -- the shared model, its outlier check, site variants and fingerprint (thread-safe, built once) ----------
_LOCK = threading.Lock()
_SHIPPED_CHECK: dict[str, Any] = {}
_SITES: "weakref.WeakKeyDictionary[BoneAgePredictor, dict[str, BoneAgePredictor]]" = weakref.WeakKeyDictionary()
_FINGERPRINTS: "weakref.WeakKeyDictionary[BoneAgePredictor, str]" = weakref.WeakKeyDictionary()


def shipped_predictor() -> BoneAgePredictor:
    """The shipped model with its "unlike the training data" check attached (fitted once per process on the
    artifact set's training features). When those features are missing the check is left off and
    :func:`outlier_check_problem` says why (every assessment then carries that note)."""
    base = load_predictor()
    with _LOCK:
        if "predictor" not in _SHIPPED_CHECK:
            p = base.with_options()
            expected = default_artifacts_dir() / "model"
            try:
                if (base.model_dir is not None and (expected / "model.pt").exists()
                        and Path(base.model_dir).resolve() != expected.resolve()
                        and sha256_file(Path(base.model_dir) / "model.pt") != sha256_file(expected / "model.pt")):
                    # $BONEAGE_MODEL names another network than the artifact set's: its training features
                    # (what the check is fitted on) belong to the artifact set's network, not to this one
                    raise ValueError(f"the model {base.model_dir} is not the artifact set's model ({expected}), "
                                     "whose training features the check is fitted on")
                p.outlier_check = fit_training_outlier_check()
                _SHIPPED_CHECK["problem"] = ""
            except (ArtifactMissingError, ValueError) as exc:
                _SHIPPED_CHECK["problem"] = f"the 'unlike the training data' check is unavailable: {exc}"
            _SHIPPED_CHECK["predictor"] = p
        return _SHIPPED_CHECK["predictor"]


def outlier_check_problem() -> str:
    """Why the shipped predictor has no outlier check ('' when it has one or was not loaded yet)."""
    return _SHIPPED_CHECK.get("problem", "")


def with_site(predictor: BoneAgePredictor, site) -> BoneAgePredictor:
    """``predictor`` with a site profile (name, path or SiteProfile; None: as it is), built once per
    (predictor, site name) and shared; raises :class:`boneage.evaluation.site_calibration.SiteProfileError`."""
    if site is None or (predictor.site is not None and predictor.site is site):
        return predictor
    if isinstance(site, SiteProfile):
        return predictor.with_site(site)
    key = str(site_path(site))
    with _LOCK:
        cached = _SITES.setdefault(predictor, {}).get(key)
    if cached is not None:
        return cached
    out = predictor.with_site(site)  # outside the lock: reads the profile and hashes the weights
    with _LOCK:
        return _SITES[predictor].setdefault(key, out)


def model_sha256(predictor: BoneAgePredictor) -> str:
    """The networks' fingerprint (:func:`boneage.store.manifest.model_fingerprint`: sha256 of model.pt, joined
    with each ensemble member's by '+'); '' for a predictor not loaded from a folder."""
    if predictor.model_dir is None:
        return ""
    with _LOCK:
        if predictor in _FINGERPRINTS:
            return _FINGERPRINTS[predictor]
    fp = model_fingerprint(predictor.model_dir, members=bool(predictor.members))
    with _LOCK:
        _FINGERPRINTS[predictor] = fp
    return fp


# -- the assessment ------------------------------------------------------------------------------------------
def _gate(image: Any, name: str | None, upload: bool | None) -> tuple[GatedImage, str]:
    """The image through the input gate, and the id the assessment gets."""
    if isinstance(image, np.ndarray):
        src = name or "image"
        return GatedImage(gate_array(image, src), src, GateResult(True)), src
    if isinstance(image, (bytes, bytearray, memoryview)):
        src = name or "upload"
        return load_radiograph_bytes(bytes(image), src, upload=bool(upload)), src
    if isinstance(image, (str, os.PathLike)):
        return load_radiograph(image), name or str(image)
    if hasattr(image, "getvalue") or hasattr(image, "read"):  # an upload object (Streamlit, a file handle)
        data = image.getvalue() if hasattr(image, "getvalue") else image.read()
        src = name or str(getattr(image, "name", "") or "upload")
        return load_radiograph_bytes(bytes(data), src, upload=True if upload is None else upload), src
    raise TypeError(f"assess() takes a path, bytes, an upload object or a 2-D array, not {type(image).__name__}")


def _site_note(predictor: BoneAgePredictor) -> str:
    s = predictor.site
    if s is None:
        return ""
    return (f"site profile '{s.name}': age corrected and intervals calibrated on {s.n_cases} of the site's "
            f"labelled cases ({s.created[:10]})")


def _build(case_id: str, male: bool, sex_source: str, pred: Prediction, feature: np.ndarray | None,
           prepared: Prepared, notes: Sequence[str], header: Any, predictor: BoneAgePredictor, detector,
           extra_notes: Sequence[str] = ()) -> Assessment:
    """The one place an :class:`Assessment` is put together (single images and batches alike)."""
    patient = patient_info(header)
    if sex_source == "given" and patient.male is not None and patient.male != bool(male):
        extra_notes = (*extra_notes, f"sex given as {'M' if male else 'F'}, but the DICOM PatientSex is "
                                     f"{patient.sex}: the given sex was used; check which is right")
    score = flag = threshold = None
    if detector is not None and feature is not None:
        scores, flags = outlier_scores(detector, feature[None])
        score, flag, threshold = float(scores[0]), bool(flags[0]), float(detector.threshold)
    problem = "" if pred.intervals else (predictor.conformal_problem or "no conformal calibration in the model "
                                                                        "folder: prediction intervals unavailable")
    a = Assessment(id=case_id, male=bool(male), boneage_months=pred.boneage_months, scale_months=pred.scale_months,
                   stage=pred.stage, stage_probs=dict(pred.stage_probs), intervals=dict(pred.intervals),
                   interval_problem=problem, inverted_negative=bool(prepared.negative), framing=pred.framing,
                   mirrored=pred.mirrored, read_mirrored=bool(prepared.mirrored), outlier_score=score, unlike_training_data=flag, outlier_threshold=threshold,
                   sex_source=sex_source, site=predictor.site.name if predictor.site is not None else None,
                   site_note=_site_note(predictor), model_sha256=model_sha256(predictor),
                   notes=tuple(notes) + hand_notes(prepared) + tuple(patient.notes) + tuple(extra_notes),
                   patient=patient,
                   image=np.asarray(prepared.image), extra_views=prepared.extra_views, feature=feature)
    return a


# A header age this far from the film's bone age contradicts the film (it belongs to another patient or is a
# placeholder): the largest delays and advances in the clinical literature are about 4 years.
IMPLAUSIBLE_HEADER_GAP_MONTHS = 60.0


def _header_age(a: Assessment) -> Assessment:
    """The assessment compared with the DICOM header's age, when it has one (the notes say so). A header age
    more than :data:`IMPLAUSIBLE_HEADER_GAP_MONTHS` from the bone age contradicts the film: no age, no
    delayed/advanced call, and a note (an age the user gives is always used)."""
    if a.patient.age_months is None:
        return a
    gap = a.boneage_months - a.patient.age_months
    if abs(gap) > IMPLAUSIBLE_HEADER_GAP_MONTHS:
        return dataclasses.replace(a, notes=a.notes + (
            f"the DICOM {a.patient.age_source} gives an age of {a.patient.age_months:.1f} months, which contradicts "
            f"the film (bone age {a.boneage_months:.1f} months, {abs(gap) / 12:.1f} years apart): age not used, no "
            "delayed/advanced call; give the chronological age if it is right",))
    out = a.with_chronological_age(a.patient.age_months, f"DICOM {a.patient.age_source}")
    out.notes += (f"chronological age {out.chronological_age_months:.1f} months from the {out.chronological_age_source}",)
    return out


def assess(image: Any, sex: Any = None, chronological_age: float | None = None, site: Any = None, *,
           name: str | None = None, predictor: BoneAgePredictor | None = None, outlier_check: Any = None,
           upload: bool | None = None, clinical: Any = None) -> Assessment:
    """Assess one radiograph.

    ``image``: a path, the file's bytes, an upload object (``getvalue()``/``read()`` and ``name``) or a 2-D
    array of raw pixels. ``sex``: M/F (male/female, True/False, 1/0); None reads DICOM ``PatientSex``.
    ``chronological_age``: months; None reads the DICOM header (birth and study dates, else ``PatientAge``)
    and leaves the maturity status out when there is none. ``site``: a site profile (name in
    artifacts/sites, path or SiteProfile). ``name``: the id the row gets (default: the path / upload name).
    ``predictor``: default the shipped model with its outlier check (:func:`shipped_predictor`);
    ``outlier_check``: a fitted :class:`boneage.evaluation.embeddings.OutlierDetector` to use instead of the
    predictor's own. ``upload``: apply the upload pixel budget to bytes (default: on for upload objects).
    ``clinical``: a :class:`boneage.growth.clinical.ClinicalInput` or a mapping of its fields (patient_id,
    birth_date, study_date or chronological_age_months, height_cm, father_height_cm, mother_height_cm): the SDS,
    adult height and target height follow (:meth:`Assessment.with_clinical`); bad values become notes.

    Raises :class:`boneage.io.imaging.ImageLoadError` (unreadable, too large, refused by the input gate),
    :class:`AssessmentInputError` (sex or age missing or not understood) and
    :class:`boneage.evaluation.site_calibration.SiteProfileError` (unknown profile, or one made for another model);
    each message says what is wrong. Thread-safe: predictions run on the traced network.
    """
    male = parse_sex(sex)  # a bad sex is refused before any decoding
    chrono = None if chronological_age is None else check_chronological_age(chronological_age)
    extra: list[str] = []
    if predictor is None:
        predictor = shipped_predictor()
        if outlier_check_problem():
            extra.append(outlier_check_problem())
    predictor = with_site(predictor, site)
    gated, case_id = _gate(image, name, upload)
    patient = patient_info(gated.dicom)
    sex_source = "given"
    if male is None:
        male = patient.male
        if male is None:
            why = (f"its DICOM PatientSex is {str(gated.dicom.get('PatientSex', '') or 'empty')!r}"
                   if gated.dicom is not None else "it is not a DICOM file with PatientSex")
            raise AssessmentInputError(f"{case_id}: sex is needed to read bone age and {why}; give M or F.")
        sex_source = "DICOM PatientSex"
        extra.append(f"sex {'M' if male else 'F'} from the DICOM PatientSex")
    prepared = predictor.prepare(gated.pixels)
    preds, features = predictor.predict_prepared([prepared], np.array([male]))
    a = _build(case_id, male, sex_source, preds[0], features[0], prepared, gated.notes, gated.dicom, predictor,
               outlier_check if outlier_check is not None else predictor.outlier_check, extra)
    a = a.with_chronological_age(chrono) if chrono is not None else _header_age(a)
    return a.with_clinical(clinical) if clinical is not None else a


def assess_cases(cases: pd.DataFrame, image_dir: str | os.PathLike, predictor: BoneAgePredictor | None = None,
                 batch_size: int = 64, on_assessment: Callable[[Assessment], None] | None = None) -> pd.DataFrame:
    """The batch form of :func:`assess`: one :meth:`Assessment.as_row` per input row, in input order.

    ``cases`` needs ``id`` and ``male`` (True/False, 1/0 or M/F); the image is ``image_dir/<id>.png`` (or
    .jpg/.jpeg/.dcm). An ``error`` column already in ``cases`` (a row the table reader could not parse) is
    kept; every other failure (missing or refused image, sex not understood) is that row's ``error`` and the
    rest still succeed. DICOM files with an age in their header get the maturity status. Images go through
    the network in batches of ``batch_size`` (same numbers as one at a time). ``on_assessment`` is called
    with each successful :class:`Assessment` as it is made (e.g. to write its report), none kept in memory.
    """
    predictor = predictor or shipped_predictor()
    names = list(predictor.cfg.stages.names)
    given_err = cases["error"].fillna("").astype(str).tolist() if "error" in cases else [""] * len(cases)
    males: list[bool | None] = [parse_male(v) for v in cases["male"]]
    ids = [str(c) for c in cases["id"]]
    rows: list[dict] = [error_row(cid, m, err, names) for cid, m, err in zip(ids, males, given_err)]
    clinical_cols = [c for c in CLINICAL_COLUMNS if c in cases.columns]
    raw_clinical = [dict(zip(clinical_cols, vals)) for vals in cases[clinical_cols].itertuples(index=False)]
    for row, raw in zip(rows, raw_clinical):
        pid = raw.get("patient_id")
        row["patient_id"] = str(pid).strip() if isinstance(pid, str) and pid.strip() else None
    ok: list[tuple[int, Prepared, GatedImage]] = []
    for i, cid in enumerate(ids):
        if rows[i]["error"]:
            continue
        if males[i] is None:
            rows[i]["error"] = (f"sex missing or not understood ({cases['male'].iloc[i]!r}); give True/False, "
                                "1/0 or M/F")
            continue
        try:
            gated = load_radiograph(safe_image_path(image_dir, cid))
            ok.append((i, predictor.prepare(gated.pixels), dataclasses.replace(gated, pixels=np.empty(0))))
        except ImageLoadError as exc:
            rows[i]["error"] = str(exc)
        except Exception as exc:  # an odd file must not take the whole batch down
            rows[i]["error"] = f"{cid}: {type(exc).__name__}: {exc}"
    for start in range(0, len(ok), batch_size):
        chunk = ok[start:start + batch_size]
        male_arr = np.array([bool(males[i]) for i, _, _ in chunk])
        preds, features = predictor.predict_prepared([p for _, p, _ in chunk], male_arr)
        for (i, prep, gated), pred, feat in zip(chunk, preds, features):
            a = _build(ids[i], bool(males[i]), "given", pred, feat, prep, gated.notes, gated.dicom, predictor,
                       predictor.outlier_check)
            a = _header_age(a)
            if clinical_cols:
                a = a.with_clinical(raw_clinical[i])
            if on_assessment is not None:
                on_assessment(a)
            rows[i] = a.as_row()
    df = pd.DataFrame(rows, columns=row_columns(names))
    df["male"] = pd.array(males, dtype="boolean")
    return df


__all__ = ["Assessment", "AssessmentInputError", "DECISION_SUPPORT", "assess", "assess_cases", "error_row",
           "model_sha256", "row_columns", "shipped_predictor", "with_site"]
