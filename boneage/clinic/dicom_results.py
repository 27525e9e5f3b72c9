"""The bone-age reading as DICOM objects a PACS shows beside the radiograph: a Secondary Capture and an SR.

Both are built with highdicom from the received radiograph's dataset, so they land in the *same study*
(StudyInstanceUID, patient and study attributes copied) as a *new series* each:

* :func:`secondary_capture`: an RGB picture with the radiograph as received beside its Grad-CAM map (on the
  radiograph itself for models that read the whole film, on the model's input otherwise), and the reading
  written into the pixels (burnt in), headed by a "DECISION SUPPORT" banner.
  Burnt-in text is what every viewer shows, including those that ignore overlays and SR.
* :func:`structured_report`: a Comprehensive SR holding a TID 1500 Measurement Report whose one
  measurement group carries the bone age, the bounds of its prediction intervals, the chronological age
  and difference when known as coded numeric measurements (UCUM months), and the stage, the maturity
  status, the "unlike the training data" flag and the negative-image check as coded evaluations. The bone
  age is LOINC 37362-1 ("XR Bone age"); what has no standard code uses the private coding scheme
  :data:`SCHEME` ("99BONEAGE", private schemes start with 99 by DICOM PS3.16 rules). When the chronological
  age is known the group also carries the reference mean and SD at that age, the bone age SDS (UCUM
  ``{SDS}``), its status (delayed / normal / advanced / indeterminate) and the reference's name as a coded
  value; with the child's height, the Bayley-Pinneau adult height and its 90 % bounds (cm), and with the
  parents' heights the mid-parental target height (:mod:`boneage.growth`).

:func:`read_bone_age` reads the bone age back from an SR made here (tests, and any receiver in Python).

What goes into both is the library's one assessment record, :class:`boneage.inference.assess.Assessment` (the record the
Predict page, ``pipelines.predict`` and the HTTP service give), so the PACS shows the same numbers and cautions.
"""
from __future__ import annotations

import datetime

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from boneage.evidence.render import overlay
from boneage.inference.assess import Assessment


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
CM = Code("cm", "UCUM", "centimeter")
SDS_UNIT = Code("{SDS}", "UCUM", "standard deviation score")
BONE_AGE_SDS = Code("BASDS", SCHEME, "Bone age SDS for chronological age")
REFERENCE_MEAN = Code("REFMEAN", SCHEME, "Reference mean bone age at chronological age")
REFERENCE_SD = Code("REFSD", SCHEME, "Reference SD of bone age at chronological age")
SDS_STATUS = Code("SDSSTATUS", SCHEME, "Bone age status by SDS")
SDS_REFERENCE = Code("SDSREF", SCHEME, "Bone age reference")
ADULT_HEIGHT = Code("PAH", SCHEME, "Predicted adult height (Bayley-Pinneau)")
ADULT_HEIGHT_LO = Code("PAH90LO", SCHEME, "Lower bound of 90% interval of predicted adult height")
ADULT_HEIGHT_HI = Code("PAH90HI", SCHEME, "Upper bound of 90% interval of predicted adult height")
TARGET_HEIGHT = Code("MPH", SCHEME, "Mid-parental target height")
YES, NO = Code("373066001", "SCT", "Yes"), Code("373067005", "SCT", "No")
TRACKING_ID = "bone age assessment"


def interval_codes(level: str) -> tuple[Code, Code]:
    """(lower, upper) concept names of the ``level``% prediction interval bounds (level "80", "90", "95")."""
    return (Code(f"PI{level}LO", SCHEME, f"Lower bound of {level}% prediction interval of bone age"),
            Code(f"PI{level}HI", SCHEME, f"Upper bound of {level}% prediction interval of bone age"))


def value_code(text: str) -> Code:
    """A private coded value for a word such as a stage name ("Adolescent") or a maturity status."""
    return Code(text.upper().replace(" ", "")[:16], SCHEME, text)


def model_name(a: "Assessment") -> str:
    """The model as the results name it: the shipped network's fingerprint (and the site profile)."""
    name = f"boneage model sha256 {a.model_sha256[:12]}" if a.model_sha256 else "boneage model"
    return name + (f", site profile {a.site}" if a.site else "")


def covers_whole_image(geometry) -> bool:
    """Whether a model with this :class:`boneage.geometry.framing.Geometry` reads the whole radiograph squeezed to its
    base square (no framing, no padding): then its Grad-CAM map, stretched back to the radiograph's shape, lies
    exactly on the radiograph."""
    return geometry.fit == "squeeze" and geometry.framing == "none"


def reading_lines(a: "Assessment", whole_image: bool = False) -> list[str]:
    """The assessment as short lines of text: what the Secondary Capture shows under its banner
    (``whole_image``: as :func:`result_picture`)."""
    ba = a.boneage_months
    out = [f"Bone age {ba:.1f} months ({int(ba // 12)} y {ba % 12:.0f} mo), stage {a.stage}"]
    if a.intervals:
        level = "90" if "90" in a.intervals else next(iter(a.intervals))
        lo, hi = a.intervals[level]
        out.append(f"{level}% prediction interval {lo:.1f} - {hi:.1f} months")
    else:
        out.append(f"No prediction interval ({a.interval_problem or 'model not calibrated'})")
    out.append(f"Sex {'male' if a.male else 'female'} ({a.sex_source})")
    if a.maturity is not None:
        out.append(f"{a.maturity_text()} [age: {a.chronological_age_source}]")
    else:
        out.append("Chronological age unknown: no delayed / normal / advanced call")
    out += [f"Note: {c}" for c in a.cautions()]  # what every door shows with the estimate
    if a.site_note:
        out.append(a.site_note[0].upper() + a.site_note[1:])
    right = ("the same radiograph under the model's Grad-CAM map" if whole_image else
             "what the model read (its input), with its Grad-CAM map")
    out.append(f"Model: {model_name(a)}. Left: the radiograph as received. Right: {right} (where the network "
               "looked, not a finding).")
    return out


# -- Secondary Capture ---------------------------------------------------------------------------------
PANEL = 768  # px: height of the two image panels
LINE = 30  # px per text line
FONT_SIZE = 22
BANNER_BG = (180, 20, 20)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def display_radiograph(image: np.ndarray, height: int = PANEL) -> np.ndarray:
    """A 2-D radiograph windowed to its 0.5-99.5th percentiles, as uint8 ``height`` px high (aspect kept):
    the left panel of :func:`result_picture`, small enough to keep while an image waits for assessment."""
    if image.dtype == np.uint8 and image.shape[0] == height:
        return image
    im = Image.fromarray(_to_uint8(image))
    return np.asarray(im.resize((max(1, round(im.width * height / im.height)), height), Image.BILINEAR))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """A 2-D image windowed to its 0.5-99.5th percentiles as uint8 (display only)."""
    if image.dtype == np.uint8:
        return image
    a = np.asarray(image, dtype=np.float32)
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
                   lines: list[str], whole_image: bool = False) -> np.ndarray:
    """The Secondary Capture's pixels, (H, W, 3) uint8.

    Top: the :func:`banner`; under it the reading (``lines``, wrapped to the width); then the radiograph as
    received (:func:`display_radiograph`) beside its Grad-CAM map (``heatmap`` in [0, 1] on ``model_input``'s
    grid, see :mod:`boneage.evidence.explain`): laid over the radiograph itself when the model read the whole image
    (``whole_image``, see :func:`covers_whole_image`), else over the model's input (a framed crop).
    """
    shown = display_radiograph(radiograph)
    rad = Image.fromarray(shown)
    if whole_image:
        heat = Image.fromarray(overlay(shown, heatmap, 0.45))  # the map stretched back to the radiograph's shape
    else:
        heat = Image.fromarray(overlay(model_input, heatmap, 0.45)).resize((PANEL, PANEL), Image.BILINEAR)
    width = max(rad.width + heat.width + 10, 1000)
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


def secondary_capture(source: Dataset, a: "Assessment", radiograph: np.ndarray, heatmap: np.ndarray,
                      series_number: int = 9901, whole_image: bool = False) -> Dataset:
    """The Secondary Capture of assessment ``a`` of the radiograph ``source`` (its dataset; pixels not needed;
    ``radiograph``: its pixels, raw or :func:`display_radiograph`; ``heatmap``: the Grad-CAM of ``a.image``,
    :func:`boneage.clinic.report.gradcam`; ``whole_image``: the model read the whole radiograph, see
    :func:`covers_whole_image`): same patient and study, a new series, RGB with the reading and a
    decision-support banner burnt in."""
    if a.image is None:
        raise ValueError("the assessment carries no model input (a.image); make it with boneage.inference.assess.assess")
    pixels = result_picture(radiograph, a.image, heatmap, reading_lines(a, whole_image), whole_image)
    source = as_reference(source)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=hd.UID(), series_number=int(series_number),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
    )
    sc.SeriesDescription = "Bone age - decision support (not a diagnosis)"
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = (f"Decision support only, not a diagnosis. Bone age {a.boneage_months:.1f} months, "
                        f"stage {a.stage}.")
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


# Type 2 attributes (present, possibly empty) of the patient and study modules that highdicom copies from the
# received image; a sender may leave them out entirely, and highdicom then fails.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def as_reference(source: Dataset) -> Dataset:
    """A copy of the received header that highdicom can build from: the Type 2 patient and study attributes it
    lacks are added empty (never guessed). Raises ValueError naming a missing identifying UID."""
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
               if not str(source.get(k, "") or "")]
    if missing:
        raise ValueError(f"the received image has no {', '.join(missing)}; results cannot be placed in its study")
    ref = Dataset()
    ref.update(source)
    if hasattr(source, "file_meta"):
        ref.file_meta = source.file_meta
    for key in _TYPE2:
        if key not in ref:
            setattr(ref, key, "")
    return ref


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


def structured_report(source: Dataset, a: "Assessment", series_number: int = 9902) -> Dataset:
    """A Comprehensive SR (TID 1500 Measurement Report) with assessment ``a`` as coded measurements and
    evaluations, referencing ``source`` (its dataset; pixels not needed); same study, a new series."""
    source = as_reference(source)
    algorithm = hd.sr.AlgorithmIdentification(name="boneage", version=(a.model_sha256[:16] or "unknown"),
                                              parameters=[f"site profile {a.site}"] if a.site else None)
    measurements = [_measurement(BONE_AGE, a.boneage_months)]
    for level, (lo, hi) in a.intervals.items():
        lo_code, hi_code = interval_codes(level)
        measurements += [_measurement(lo_code, lo), _measurement(hi_code, hi)]
    measurements.append(_measurement(MODEL_SCALE, a.scale_months))
    evaluations = [hd.sr.QualitativeEvaluation(STAGE, value_code(a.stage)),
                   hd.sr.QualitativeEvaluation(NEGATIVE, YES if a.inverted_negative else NO)]
    if a.chronological_age_months is not None:
        measurements.append(_measurement(CHRONOLOGICAL_AGE, a.chronological_age_months))
    if a.maturity is not None:
        measurements.append(_measurement(AGE_DIFFERENCE, a.maturity.difference_months))
        evaluations.append(hd.sr.QualitativeEvaluation(MATURITY, value_code(a.maturity.status)))
    sds = a.sds
    if sds is not None and sds.sds is not None:
        measurements += [_measurement(REFERENCE_MEAN, sds.reference_mean_months),
                         _measurement(REFERENCE_SD, sds.reference_sd_months),
                         hd.sr.Measurement(name=BONE_AGE_SDS, value=round(sds.sds, 4), unit=SDS_UNIT)]
        evaluations += [hd.sr.QualitativeEvaluation(SDS_STATUS, value_code(sds.status)),
                        hd.sr.QualitativeEvaluation(SDS_REFERENCE, value_code(sds.reference))]
    ah = a.adult_height
    if ah is not None and ah.adult_height_cm is not None:
        measurements += [hd.sr.Measurement(name=code, value=round(v, 2), unit=CM) for code, v in
                         ((ADULT_HEIGHT, ah.adult_height_cm), (ADULT_HEIGHT_LO, ah.lower_90_cm),
                          (ADULT_HEIGHT_HI, ah.upper_90_cm))]
    th = a.target_height
    if th is not None and th.target_cm is not None:
        measurements.append(hd.sr.Measurement(name=TARGET_HEIGHT, value=round(th.target_cm, 2), unit=CM))
    if a.unlike_training_data is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(UNLIKE_TRAINING, YES if a.unlike_training_data else NO))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=TRACKING_ID),
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="boneage DICOM node", manufacturer_name=MANUFACTURER,
            model_name=model_name(a)[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE, imaging_measurements=[group])
    sr = hd.sr.ComprehensiveSR(
        evidence=[source], content=report[0], series_instance_uid=hd.UID(), series_number=int(series_number),
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
