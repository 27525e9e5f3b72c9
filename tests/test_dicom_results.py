"""The DICOM results of a reading (Secondary Capture and SR, boneage.dicom_results) and the node's checks of
what it receives (pipelines.dicom_node), without a network or a model."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from boneage import dicom_results as dr
from pipelines.dicom_node import BoneAgeNode, Destination, NodeConfig, Refused, header_age_months, header_sex

CASE = "4361"


@pytest.fixture(scope="module")
def source(hand_dx, data_dir) -> tuple[Dataset, np.ndarray]:
    data = hand_dx(data_dir / "test" / f"{CASE}.png")
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds, ds.pixel_array.astype(np.float32)


def reading(**kw) -> dr.Reading:
    base = dict(boneage_months=150.25, stage="Adolescent", male=True, scale_months=7.5,
                intervals={"80": (141.0, 160.5), "90": (138.2, 163.9), "95": (135.0, 166.0)},
                chronological_age_months=167.85, maturity="normal", maturity_label="Within normal range",
                difference_months=-17.6, unlike_training_data=False, negative=False)
    return dr.Reading(**{**base, **kw})


def roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def picture(source, r: dr.Reading) -> np.ndarray:
    ds, pixels = source
    heat = np.linspace(0, 1, 100 * 100, dtype=np.float32).reshape(100, 100)
    model_input = np.full((100, 100), 128, np.uint8)
    return roundtrip(dr.secondary_capture(ds, r, pixels, model_input, heat)).pixel_array


def test_sr_holds_the_reading_as_coded_measurements_in_the_same_study(source):
    ds, _ = source
    sr = roundtrip(dr.structured_report(ds, reading()))
    assert sr.StudyInstanceUID == ds.StudyInstanceUID and sr.PatientID == ds.PatientID
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID and sr.SOPInstanceUID != ds.SOPInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert dr.read_bone_age(sr) == pytest.approx(150.25)
    m = dr.read_measurements(sr)
    assert m["Lower bound of 90% prediction interval of bone age"] == pytest.approx(138.2)
    assert m["Upper bound of 95% prediction interval of bone age"] == pytest.approx(166.0)
    assert m["Chronological age"] == pytest.approx(167.85)
    assert m["Bone age minus chronological age"] == pytest.approx(-17.6)
    e = dr.read_evaluations(sr)
    assert e == {"Skeletal maturity stage": "Adolescent", "Image taken for a negative and inverted": "No",
                 "Maturity compared with chronological age": "normal", "Image unlike the training radiographs": "No"}
    # the bone age is LOINC-coded, in months (UCUM)
    group = dr._group(sr)
    bone_age = group.get_measurements(name=dr.BONE_AGE)[0]
    assert (bone_age.name.value, bone_age.name.scheme_designator) == ("37362-1", "LN")
    assert (bone_age.unit.value, bone_age.unit.scheme_designator) == ("mo", "UCUM")
    # the radiograph it was read from is referenced as evidence
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_sr_without_chronological_age_or_check_says_nothing_about_them(source):
    ds, _ = source
    r = reading(chronological_age_months=None, maturity=None, maturity_label=None, difference_months=None,
                unlike_training_data=None, intervals={})
    sr = roundtrip(dr.structured_report(ds, r))
    assert set(dr.read_measurements(sr)) == {"Bone age", "Model uncertainty scale (Laplace)"}
    assert set(dr.read_evaluations(sr)) == {"Skeletal maturity stage", "Image taken for a negative and inverted"}


def test_secondary_capture_same_study_new_series_with_the_banner_burnt_in(source):
    ds, _ = source
    r = reading()
    sc = roundtrip(dr.secondary_capture(ds, r, source[1], np.zeros((100, 100), np.uint8),
                                        np.zeros((100, 100), np.float32)))
    assert sc.StudyInstanceUID == ds.StudyInstanceUID and sc.PatientID == ds.PatientID
    assert sc.SeriesInstanceUID != ds.SeriesInstanceUID
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.BurnedInAnnotation == "YES"
    assert "decision support" in sc.SeriesDescription.lower()
    px = sc.pixel_array
    assert px.ndim == 3 and px.shape[2] == 3
    # the "DECISION SUPPORT" banner is in the pixels exactly as drawn on its own, and the text is visible:
    # the banner is not the plain background colour
    banner = dr.banner(dr.DECISION_SUPPORT, px.shape[1])
    assert np.array_equal(px[:banner.shape[0]], banner)
    plain = np.all(banner == dr.BANNER_BG, axis=2)
    assert (~plain).sum() > 500 and (banner.min(axis=2) > 200).sum() > 300  # white letters on red
    assert dr.DECISION_SUPPORT.startswith("DECISION SUPPORT")
    assert not np.array_equal(banner, dr.banner("DECISION", px.shape[1]))  # it is that text that is drawn


def test_secondary_capture_text_shows_the_reading(source):
    a = picture(source, reading(boneage_months=150.25))
    b = picture(source, reading(boneage_months=96.0))
    c = picture(source, reading(boneage_months=150.25))
    assert np.array_equal(a, c)  # deterministic
    text_band = slice(dr.LINE + 8, dr.LINE + 8 + dr.LINE + 12)  # the first line of the reading: the bone age
    assert not np.array_equal(a[text_band], b[text_band])
    assert np.array_equal(a[-dr.PANEL:], b[-dr.PANEL:])  # the image panels (bottom) are untouched by the text


def test_reading_lines_name_what_matters():
    lines = reading(unlike_training_data=True, negative=True, site="north").lines()
    text = "\n".join(lines)
    assert "Bone age 150.2 months (12 y 6 mo), stage Adolescent" in text
    assert "90% prediction interval 138.2 - 163.9 months" in text
    assert "Within normal range (bone age 17.6 months behind)" in text
    assert "CAUTION: image unlike the training radiographs" in text
    assert "negative" in text and "Site calibration: north" in text
    assert "Chronological age unknown" in "\n".join(reading(chronological_age_months=None, maturity=None).lines())


# -- the node's checks on what it receives (no network, no model) ---------------------------------------------
@pytest.fixture(scope="module")
def node() -> BoneAgeNode:
    return BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104)), predictor=None)


def test_node_accepts_a_hand_dx_with_sex_and_age(node, hand_dx, data_dir):
    job = node.check(hand_dx(data_dir / "test" / f"{CASE}.png", sex="F"), "image")
    assert job.male is False and job.sex_source == "header"
    assert job.chronological_age_months == pytest.approx(5109 / 30.4375)
    assert job.pixels.shape == (759, 568)


@pytest.mark.parametrize("kw, words", [
    (dict(body_part="CHEST"), "body part examined is 'CHEST'"),
    (dict(modality="CT"), "CT scan"),
    (dict(sex=None), "no patient sex in the header"),
    (dict(sex="O"), "PatientSex O"),
], ids=["chest", "ct", "no-sex", "other-sex"])
def test_node_refuses_what_it_cannot_assess_with_the_reason(node, hand_dx, data_dir, kw, words):
    with pytest.raises(Refused, match=words):
        node.check(hand_dx(data_dir / "test" / f"{CASE}.png", **kw), "image")


def test_node_refuses_unreadable_pixel_data(node, hand_dx, data_dir):
    data = hand_dx(data_dir / "test" / f"{CASE}.png")
    with pytest.raises(Refused, match="cannot be decoded|not a readable|pixel"):
        node.check(data[: len(data) // 3], "image")


def test_node_refuses_its_own_results(node, source):
    ds, pixels = source
    sc = dr.secondary_capture(ds, reading(), pixels, np.zeros((100, 100), np.uint8), np.zeros((100, 100), np.float32))
    buf = io.BytesIO()
    sc.save_as(buf, enforce_file_format=True)
    with pytest.raises(Refused, match="node's own results"):
        node.check(buf.getvalue(), "image")


def test_configured_sex_is_used_only_when_the_header_has_none(hand_dx, data_dir):
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104), default_sex=True), predictor=None)
    png = data_dir / "test" / f"{CASE}.png"
    assert (node.check(hand_dx(png, sex=None), "x").male, node.check(hand_dx(png, sex=None), "x").sex_source) == \
        (True, "configured default")
    assert node.check(hand_dx(png, sex="F"), "x").male is False


def test_header_sex_and_age():
    ds = Dataset()
    assert header_sex(ds) is None and header_age_months(ds) is None
    ds.PatientSex, ds.PatientAge = "M", "010Y"
    assert header_sex(ds) is True and header_age_months(ds) == 120
    ds.PatientBirthDate, ds.StudyDate = "20200101", "20210101"  # dates win over PatientAge
    assert header_age_months(ds) == pytest.approx(366 / 30.4375)
    ds.StudyDate = "20190101"  # study before birth: not a usable pair, PatientAge again
    assert header_age_months(ds) == 120
