"""The bone-age reading as DICOM objects a PACS shows beside the radiograph: a Secondary Capture and an SR.

Both are built with highdicom from the received radiograph's dataset, so they land in the *same study*
(StudyInstanceUID, patient and study attributes copied) as a *new series* each:

* :func:`secondary_capture`: an RGB picture with the radiograph as received, the model's input with its
  Grad-CAM map, and the reading written into the pixels (burnt in), headed by a "DECISION SUPPORT" banner.
  Burnt-in text is what every viewer shows, including those that ignore overlays and SR.
* :func:`structured_report`: a Comprehensive SR holding a TID 1500 Measurement Report whose one
  measurement group carries the bone age, the bounds of its prediction intervals, the chronological age
  and difference when known as coded numeric measurements (UCUM months), and the stage, the maturity
  status, the "unlike the training data" flag and the negative-image check as coded evaluations. The bone
  age is LOINC 37362-1 ("XR Bone age"); what has no standard code uses the private coding scheme
  :data:`SCHEME` ("99BONEAGE", private schemes start with 99 by DICOM PS3.16 rules).

:func:`read_bone_age` reads the bone age back from an SR made here (tests, and any receiver in Python).

What goes into both is a :class:`Reading`: the assessment's numbers as shown to a clinician.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCHEME = "99BONEAGE"  # private coding scheme for concepts without a standard code
MANUFACTURER = "boneage (research software)"
DECISION_SUPPORT = "DECISION SUPPORT ONLY - automated bone-age estimate, not a diagnosis"

MONTHS = Code("mo", "UCUM", "month")
BONE_AGE = Code("37362-1", "LN", "Bone age")  # LOINC "XR Bones Bone age", the bone-age observation
PROCEDURE = Code("37362-1", "LN", "XR Bone age")
CHRONOLOGICAL_AGE = Code("CHRONAGE", SCHEME, "Chronological age")
AGE_DIFFERENCE = Code("BAMINUSCA", SCHEME, "Bone age minus chronological age")
MODEL_SCALE = Code("SCALE", SCHEME, "Model uncertainty scale (Laplace)")
STAGE = Code("STAGE", SCHEME, "Skeletal maturity stage")
MATURITY = Code("MATURITY", SCHEME, "Maturity compared with chronological age")
UNLIKE_TRAINING = Code("OOD", SCHEME, "Image unlike the training radiographs")
NEGATIVE = Code("NEGATIVE", SCHEME, "Image taken for a negative and inverted")
YES, NO = Code("373066001", "SCT", "Yes"), Code("373067005", "SCT", "No")
TRACKING_ID = "bone age assessment"


def interval_codes(level: str) -> tuple[Code, Code]:
    """(lower, upper) concept names of the ``level``% prediction interval bounds (level "80", "90", "95")."""
    return (Code(f"PI{level}LO", SCHEME, f"Lower bound of {level}% prediction interval of bone age"),
            Code(f"PI{level}HI", SCHEME, f"Upper bound of {level}% prediction interval of bone age"))


def value_code(text: str) -> Code:
    """A private coded value for a word such as a stage name ("Adolescent") or a maturity status."""
    return Code(text.upper().replace(" ", "")[:16], SCHEME, text)


@dataclass(frozen=True)
class Reading:
    """What the DICOM results say about one radiograph (months throughout).

    ``intervals``: level ("80", "90", "95") -> (lower, upper), empty when uncalibrated. ``maturity``:
    "delayed" / "normal" / "advanced" with ``difference_months`` (bone age - chronological age), only when
    the chronological age is known. ``unlike_training_data``: None when the check was not run. ``sex_source``
    says where the sex came from ("header" or "configured default"); ``model`` names the model (and site).
    """
    boneage_months: float
    stage: str
    male: bool
    scale_months: float | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    chronological_age_months: float | None = None
    maturity: str | None = None
    maturity_label: str | None = None
    difference_months: float | None = None
    unlike_training_data: bool | None = None
    negative: bool = False
    site: str | None = None
    sex_source: str = "header"
    model: str = "boneage shipped model"
    model_version: str = "1"

    def lines(self) -> list[str]:
        """The reading as short lines of text (the Secondary Capture's burnt-in text, also the SR's summary)."""
        ba = self.boneage_months
        out = [f"Bone age {ba:.1f} months ({int(ba // 12)} y {ba % 12:.0f} mo), stage {self.stage}"]
        if self.intervals:
            level = "90" if "90" in self.intervals else next(iter(self.intervals))
            lo, hi = self.intervals[level]
            out.append(f"{level}% prediction interval {lo:.1f} - {hi:.1f} months")
        else:
            out.append("No prediction interval (model not calibrated)")
        sex = "male" if self.male else "female"
        out.append(f"Sex {sex} ({self.sex_source})")
        if self.chronological_age_months is not None and self.maturity is not None:
            diff = self.difference_months or 0.0
            rel = "behind" if diff < 0 else "ahead"
            out.append(f"Chronological age {self.chronological_age_months:.1f} months: "
                       f"{self.maturity_label or self.maturity} (bone age {abs(diff):.1f} months {rel})")
        else:
            out.append("Chronological age unknown: no delayed/advanced call")
        if self.unlike_training_data:
            out.append("CAUTION: image unlike the training radiographs - read the estimate with extra care")
        if self.negative:
            out.append("Image looked like a negative and was inverted before reading")
        if self.site:
            out.append(f"Site calibration: {self.site}")
        out.append(f"Model: {self.model}. Left: the radiograph as received. Right: what the model read, with its "
                   "Grad-CAM map (where the network looked, not a finding).")
        return out


# -- Secondary Capture ---------------------------------------------------------------------------------
PANEL = 768  # px: height of the two image panels
LINE = 30  # px per text line
FONT_SIZE = 22
BANNER_BG = (180, 20, 20)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """A 2-D image windowed to its 0.5-99.5th percentiles as uint8 (display only)."""
    a = np.asarray(image, dtype=np.float32)
    if a.dtype == np.uint8:
        return a
    lo, hi = np.percentile(a, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round(np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def banner(text: str = DECISION_SUPPORT, width: int = 1000) -> np.ndarray:
    """The decision-support banner as it is burnt into every Secondary Capture: (LINE+8, width, 3) uint8."""
    im = Image.new("RGB", (width, LINE + 8), BANNER_BG)
    ImageDraw.Draw(im).text((10, 6), text, fill=(255, 255, 255), font=_font(FONT_SIZE))
    return np.asarray(im)


def result_picture(radiograph: np.ndarray, model_input: np.ndarray, heatmap: np.ndarray,
                   lines: list[str]) -> np.ndarray:
    """The Secondary Capture's pixels, (H, W, 3) uint8.

    Top: the :func:`banner`; under it the reading (``lines``); then the radiograph as received (windowed,
    aspect kept, :data:`PANEL` px high) beside the model's input with its Grad-CAM map (``heatmap`` in [0, 1]
    on ``model_input``'s grid, see :mod:`boneage.explain`).
    """
    from .explain import overlay

    rad = Image.fromarray(_to_uint8(radiograph))
    rad = rad.resize((max(1, round(rad.width * PANEL / rad.height)), PANEL), Image.BILINEAR)
    heat = overlay(model_input, heatmap, 0.45)
    heat = Image.fromarray(heat).resize((PANEL, PANEL), Image.BILINEAR)
    width = max(rad.width + PANEL + 10, 1000)
    font = _font(FONT_SIZE)
    lines = [part for line in lines for part in _wrap(line, font, width - 20)]
    text_h = LINE * len(lines) + 12
    top = LINE + 8
    canvas = Image.new("RGB", (width, top + text_h + PANEL), (0, 0, 0))
    canvas.paste(Image.fromarray(banner(DECISION_SUPPORT, canvas.width)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((10, top + 6 + i * LINE), line, fill=(255, 255, 160), font=font)
    y = top + text_h
    canvas.paste(rad.convert("RGB"), (0, y))
    canvas.paste(heat, (rad.width + 10, y))
    return np.asarray(canvas)


def _wrap(line: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """``line`` broken at spaces into pieces no wider than ``width`` px in ``font``."""
    out, current = [], ""
    for word in line.split(" "):
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            out.append(current)
            current = word
        else:
            current = candidate
    return out + [current] if current else out


def _series_uid_and_number(series_number: int) -> tuple[str, int]:
    return hd.UID(), int(series_number)


def secondary_capture(source: Dataset, reading: Reading, radiograph: np.ndarray, model_input: np.ndarray,
                      heatmap: np.ndarray, series_number: int = 9901) -> Dataset:
    """The Secondary Capture of ``reading`` for the radiograph ``source`` (its dataset; pixels not needed):
    same patient and study, a new series, RGB with the reading and a decision-support banner burnt in."""
    pixels = result_picture(radiograph, model_input, heatmap, reading.lines())
    series_uid, number = _series_uid_and_number(series_number)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
    )
    sc.SeriesDescription = "Bone age - decision support (not a diagnosis)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = (f"Decision support only, not a diagnosis. Bone age {reading.boneage_months:.1f} months, "
                        f"stage {reading.stage}.")[:10240]
    sc.DerivationDescription = "Automated bone-age estimate with Grad-CAM, from the referenced radiograph"
    _reference_source(sc, source)
    _stamp(sc)
    return sc


def _orientation(source: Dataset) -> tuple[str, str]:
    """The received radiograph's PatientOrientation (highdicom requires one for a patient image); when the
    header has none, the usual display of a PA hand film (rows toward the patient's left, columns toward
    the feet). The picture is a composite for reading, not a geometric image."""
    value = [str(v) for v in (source.get("PatientOrientation") or [])]
    allowed = {v.value for v in hd.PatientOrientationValuesBiped}
    if len(value) == 2 and all(v in allowed for v in value):
        return value[0], value[1]
    return "L", "F"


def _reference_source(ds: Dataset, source: Dataset) -> None:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = [ref]


def _stamp(ds: Dataset) -> None:
    now = datetime.datetime.now()
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")


# -- Structured Report ---------------------------------------------------------------------------------
def _measurement(name: Code, value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=round(float(value), 4), unit=MONTHS)


def structured_report(source: Dataset, reading: Reading, series_number: int = 9902) -> Dataset:
    """A Comprehensive SR (TID 1500 Measurement Report) with ``reading`` as coded measurements and
    evaluations, referencing ``source`` (its dataset; pixels not needed); same study, a new series."""
    algorithm = hd.sr.AlgorithmIdentification(name=reading.model[:64], version=reading.model_version[:64])
    measurements = [_measurement(BONE_AGE, reading.boneage_months)]
    for level, (lo, hi) in reading.intervals.items():
        lo_code, hi_code = interval_codes(level)
        measurements += [_measurement(lo_code, lo), _measurement(hi_code, hi)]
    if reading.scale_months is not None:
        measurements.append(_measurement(MODEL_SCALE, reading.scale_months))
    evaluations = [hd.sr.QualitativeEvaluation(STAGE, value_code(reading.stage)),
                   hd.sr.QualitativeEvaluation(NEGATIVE, YES if reading.negative else NO)]
    if reading.chronological_age_months is not None:
        measurements.append(_measurement(CHRONOLOGICAL_AGE, reading.chronological_age_months))
        if reading.difference_months is not None:
            measurements.append(_measurement(AGE_DIFFERENCE, reading.difference_months))
        if reading.maturity:
            evaluations.append(hd.sr.QualitativeEvaluation(MATURITY, value_code(reading.maturity)))
    if reading.unlike_training_data is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(UNLIKE_TRAINING, YES if reading.unlike_training_data else NO))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=TRACKING_ID),
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="boneage DICOM node", manufacturer_name=MANUFACTURER, model_name=reading.model[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE, imaging_measurements=[group])
    series_uid, number = _series_uid_and_number(series_number)
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=report[0], series_instance_uid=series_uid, series_number=number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        is_final=False, is_verified=False)
    sr.SeriesDescription = "Bone age SR - decision support (not a diagnosis)"
    return sr


def _group(sr: Dataset) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    report = hd.sr.ComprehensiveSR.from_dataset(sr, copy=False).content
    groups = report.get_image_measurement_groups()
    if not groups:
        raise ValueError("the SR holds no measurement group (not a bone-age report made by boneage)")
    return groups[0]


def read_bone_age(sr: Dataset) -> float:
    """The bone age (months) of an SR made by :func:`structured_report`."""
    found = _group(sr).get_measurements(name=BONE_AGE)
    if not found:
        raise ValueError("the SR holds no bone-age measurement (LOINC 37362-1)")
    return float(found[0].value)


def read_measurements(sr: Dataset) -> dict[str, float]:
    """Every numeric measurement of an SR made by :func:`structured_report`: code meaning -> value."""
    return {m.name.meaning: float(m.value) for m in _group(sr).get_measurements()}


def read_evaluations(sr: Dataset) -> dict[str, str]:
    """Every coded evaluation of an SR made by :func:`structured_report`: concept meaning -> value meaning."""
    return {e.name.meaning: e.value.meaning for e in _group(sr).get_qualitative_evaluations()}
