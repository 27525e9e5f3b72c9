"""The DICOM results of a reading (Secondary Capture and SR, boneage.clinic.dicom_results) and the node's checks of
what it receives (pipelines.dicom_node), without a network or a model."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from boneage.clinic import dicom_results as dr
from boneage.inference.assess import Assessment
from boneage.clinic.dicom_node import BoneAgeNode, Destination, NodeConfig, Refused

pytestmark = pytest.mark.integration

CASE = "4361"


@pytest.fixture(scope="module")
def source(hand_dx, data_dir) -> tuple[Dataset, np.ndarray]:
    data = hand_dx(data_dir / "test" / f"{CASE}.png")
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds, ds.pixel_array.astype(np.float32)


def reading(age: float | None = 167.85, **kw) -> Assessment:
    """An assessment as boneage.inference.assess makes it (numbers chosen here, so that the test knows them)."""
    base = dict(id="x", male=True, boneage_months=150.25, scale_months=7.5, stage="Adolescent",
                stage_probs={"Child": 0.05, "Adolescent": 0.9, "Adult": 0.05},
                intervals={"80": (141.0, 160.5), "90": (138.2, 163.9), "95": (135.0, 166.0)},
                outlier_score=1.1, unlike_training_data=False, outlier_threshold=1.5, sex_source="DICOM PatientSex",
                model_sha256="ab" * 32, image=np.full((100, 100), 128, np.uint8))
    a = Assessment(**{**base, **kw})
    return a.with_chronological_age(age, "DICOM PatientBirthDate and StudyDate") if age is not None else a


def roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def picture(source, a: Assessment) -> np.ndarray:
    ds, pixels = source
    heat = np.linspace(0, 1, 100 * 100, dtype=np.float32).reshape(100, 100)
    return roundtrip(dr.secondary_capture(ds, a, pixels, heat)).pixel_array


def test_sr_holds_the_reading_as_coded_measurements_in_the_same_study(source):
    ds, _ = source
    a = reading()
    sr = roundtrip(dr.structured_report(ds, a))
    assert sr.StudyInstanceUID == ds.StudyInstanceUID and sr.PatientID == ds.PatientID
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID and sr.SOPInstanceUID != ds.SOPInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert dr.read_bone_age(sr) == pytest.approx(150.25)
    m = dr.read_measurements(sr)
    assert m["Lower bound of 90% prediction interval of bone age"] == pytest.approx(138.2)
    assert m["Upper bound of 95% prediction interval of bone age"] == pytest.approx(166.0)
    assert m["Chronological age"] == pytest.approx(167.85)
    assert m["Bone age minus chronological age"] == pytest.approx(150.25 - 167.85)
    assert m["Model uncertainty scale (Laplace)"] == pytest.approx(7.5)
    e = dr.read_evaluations(sr)
    assert a.maturity.status == "delayed"  # 167.85 is above the 95% interval's upper end (166)
    assert e == {"Skeletal maturity stage": "Adolescent", "Image taken for a negative and inverted": "No",
                 "Maturity compared with chronological age": "delayed", "Image unlike the training radiographs": "No",
                 "Bone age status by SDS": "indeterminate", "Bone age reference": "Brush Foundation (Greulich & Pyle)"}
    # the bone age is LOINC-coded, in months (UCUM)
    group = dr._group(sr)
    bone_age = group.get_measurements(name=dr.BONE_AGE)[0]
    assert (bone_age.name.value, bone_age.name.scheme_designator) == ("37362-1", "LN")
    assert (bone_age.unit.value, bone_age.unit.scheme_designator) == ("mo", "UCUM")
    # the radiograph it was read from is referenced as evidence
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == ds.SOPInstanceUID


def test_sr_carries_sds_status_reference_and_adult_height(source):
    ds, _ = source
    # boy, bone age 150.25 at 167.85 months: Brush mean 170.02, SD 10.72 at 168 -> SDS (150.25 - 170.00) / 10.72;
    # the 90% interval 138.2-163.9 spans -2.99 to -0.59 SDS, across -2: indeterminate
    a = reading().with_clinical({"height_cm": "160", "father_height_cm": "180", "mother_height_cm": "166"})
    sr = roundtrip(dr.structured_report(ds, a))
    m = dr.read_measurements(sr)
    assert m["Bone age SDS for chronological age"] == pytest.approx(a.sds.sds, abs=1e-4)
    assert a.sds.sds == pytest.approx(-1.84, abs=0.01)
    assert m["Reference mean bone age at chronological age"] == pytest.approx(a.sds.reference_mean_months, abs=1e-3)
    assert m["Predicted adult height (Bayley-Pinneau)"] == pytest.approx(a.adult_height.adult_height_cm, abs=0.01)
    assert m["Mid-parental target height"] == pytest.approx(179.5)
    e = dr.read_evaluations(sr)
    assert e["Bone age status by SDS"] == "indeterminate"
    assert e["Bone age reference"] == "Brush Foundation (Greulich & Pyle)"
    sds = dr._group(sr).get_measurements(name=dr.BONE_AGE_SDS)[0]
    assert (sds.unit.value, sds.unit.scheme_designator) == ("{SDS}", "UCUM")


def test_sr_without_chronological_age_or_check_says_nothing_about_them(source):
    ds, _ = source
    sr = roundtrip(dr.structured_report(ds, reading(age=None, unlike_training_data=None, outlier_score=None,
                                                    intervals={})))
    assert set(dr.read_measurements(sr)) == {"Bone age", "Model uncertainty scale (Laplace)"}
    assert set(dr.read_evaluations(sr)) == {"Skeletal maturity stage", "Image taken for a negative and inverted"}


def test_secondary_capture_same_study_new_series_with_the_banner_burnt_in(source):
    ds, _ = source
    sc = roundtrip(dr.secondary_capture(ds, reading(), source[1], np.zeros((100, 100), np.float32)))
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
    a = reading(unlike_training_data=True, outlier_score=2.0, inverted_negative=True, site="north",
                site_note="site profile 'north': age corrected")
    text = "\n".join(dr.reading_lines(a))
    assert "Bone age 150.2 months (12 y 6 mo), stage Adolescent" in text
    assert "90% prediction interval 138.2 - 163.9 months" in text
    assert "Sex male (DICOM PatientSex)" in text
    assert "Delayed: bone age is 17.6 months behind the chronological age (168 months)." in text
    assert "[age: DICOM PatientBirthDate and StudyDate]" in text
    assert "Note: This image looks unlike the training radiographs" in text
    assert "Note: This image looks like a negative" in text
    assert "Site profile 'north'" in text and "sha256 abababababab, site profile north" in text
    assert "Chronological age unknown" in "\n".join(dr.reading_lines(reading(age=None)))


# -- the node's checks on what it receives (no network, no model) ---------------------------------------------
@pytest.fixture(scope="module")
def node() -> BoneAgeNode:
    return BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104)), predictor=None)


def test_node_accepts_a_hand_dx_and_keeps_a_small_display_copy(node, hand_dx, data_dir):
    data = hand_dx(data_dir / "test" / f"{CASE}.png", sex="F")
    job = node.check(data, "image")
    assert job.sex is None  # the header's sex is used (read by assess, like at every door)
    assert job.data == data and job.header.PatientSex == "F"
    assert job.display.dtype == np.uint8 and job.display.shape == (dr.PANEL, round(568 * dr.PANEL / 759))


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
    sc = dr.secondary_capture(ds, reading(), pixels, np.zeros((100, 100), np.float32))
    buf = io.BytesIO()
    sc.save_as(buf, enforce_file_format=True)
    with pytest.raises(Refused, match="node's own results"):
        node.check(buf.getvalue(), "image")


def test_configured_sex_is_used_only_when_the_header_has_none(hand_dx, data_dir):
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104), default_sex=True), predictor=None)
    png = data_dir / "test" / f"{CASE}.png"
    assert node.check(hand_dx(png, sex=None), "x").sex == "M"
    assert node.check(hand_dx(png, sex="F"), "x").sex is None


def test_sending_to_a_destination_that_is_down_names_it(source):
    import socket

    from boneage.clinic.dicom_node import send

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sr = dr.structured_report(source[0], reading())
    with pytest.raises(RuntimeError, match=f"could not associate with PACS@127.0.0.1:{port}"):
        send(Destination("PACS", "127.0.0.1", port), [sr], timeout=5)


def test_cli_refuses_a_busy_port_before_loading_the_model(subprocess_env, repo_root):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "pipelines.dicom_node", "--port", str(port), "--dest-ae", "PACS",
                               "--dest-host", "127.0.0.1", "--dest-port", "104"], cwd=repo_root, env=subprocess_env,
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_full_queue_answers_busy_and_a_refusal_answers_cannot_understand(hand_dx, data_dir):
    from types import SimpleNamespace

    # not started: nothing takes jobs off the queue, which holds one image
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104), queue_size=1), predictor=None)
    png = data_dir / "test" / f"{CASE}.png"

    def event(data: bytes):
        return SimpleNamespace(assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="PACS")),
                               request=SimpleNamespace(AffectedSOPInstanceUID="1.2.3"),
                               encoded_dataset=lambda: data)

    assert node._on_store(event(hand_dx(png))) == 0x0000
    busy = node._on_store(event(hand_dx(png)))
    assert busy.Status == 0xA700 and "busy" in busy.ErrorComment
    refused = node._on_store(event(hand_dx(png, body_part="KNEE")))
    assert refused.Status == 0xC000 and refused.ErrorComment.startswith("the DICOM header says the body part")
    assert len(refused.ErrorComment) <= 64
    assert (node.stats.received, node.stats.refused) == (3, 1)


def test_results_for_a_sparse_header_leave_unknowns_empty(make_dicom, data_dir):
    """A sender may leave out Type 2 attributes (accession number, referring physician, birth date ...): the
    results are still made, with those empty, never invented."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(io.BytesIO(make_dicom(data_dir / "test" / f"{CASE}.png", PatientSex="F",
                                               SeriesInstanceUID=generate_uid())))
    assert "AccessionNumber" not in ds and "PatientName" not in ds
    sr = roundtrip(dr.structured_report(ds, reading(age=None)))
    sc = roundtrip(dr.secondary_capture(ds, reading(age=None), ds.pixel_array, np.zeros((100, 100), np.float32)))
    for out in (sr, sc):
        assert out.StudyInstanceUID == ds.StudyInstanceUID
        assert out.AccessionNumber == "" and out.PatientBirthDate == ""
    assert dr.read_bone_age(sr) == pytest.approx(150.25)
    del ds.SeriesInstanceUID
    with pytest.raises(ValueError, match="no SeriesInstanceUID"):
        dr.structured_report(ds, reading())


def test_whole_image_models_get_their_map_on_the_radiograph_itself(source):
    """The shipped model reads the whole film squeezed to 100x100: its map stretched back lies on the radiograph."""
    from boneage.evidence.render import overlay
    from boneage.inference.predictor import load_predictor

    assert dr.covers_whole_image(load_predictor().cfg.geometry)
    _, pixels = source
    heat = np.zeros((100, 100), np.float32)
    heat[60:80, 30:50] = 1.0  # a hot block in the lower left of the film
    lines = dr.reading_lines(reading(), whole_image=True)
    px = dr.result_picture(pixels, np.zeros((100, 100), np.uint8), heat, lines, whole_image=True)
    shown = dr.display_radiograph(pixels)
    h, w = shown.shape
    left, right = px[-h:, :w], px[-h:, w + 10:w + 10 + w]
    assert np.array_equal(left, np.repeat(shown[..., None], 3, axis=2))  # the radiograph, untouched
    assert np.array_equal(right, overlay(shown, heat, 0.45))  # the same radiograph under the map
    assert "Right: the same radiograph under the model's Grad-CAM map" in " ".join(lines)


def test_only_the_allowed_calling_ae_titles_may_associate():
    from pynetdicom import AE

    from pipelines.cli import free_loopback_port

    port = free_loopback_port()
    node = BoneAgeNode(NodeConfig(Destination("PACS", "127.0.0.1", 104), port=port, allowed_callers=("PACS",)),
                       predictor=None)
    node.start()
    try:
        def echo_as(title: str):
            ae = AE(ae_title=title)
            ae.add_requested_context("1.2.840.10008.1.1")
            assoc = ae.associate("127.0.0.1", port, ae_title="BONEAGE")
            if not assoc.is_established:
                return assoc, None
            status = assoc.send_c_echo()
            assoc.release()
            return assoc, status

        stranger, _ = echo_as("STRANGER")
        assert stranger.is_rejected and not stranger.is_established
        pacs, status = echo_as("PACS")
        assert pacs.is_established is False and status.Status == 0x0000  # released after a successful echo
    finally:
        node.stop()


def test_cli_refuses_an_allowed_ae_title_that_is_too_long(subprocess_env, repo_root):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pipelines.dicom_node", "--dest-ae", "PACS", "--dest-host",
                           "127.0.0.1", "--dest-port", "104", "--allow-aet", "A" * 17], cwd=repo_root,
                          env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "AE titles have 1 to 16 characters" in proc.stderr and "A" * 17 in proc.stderr
