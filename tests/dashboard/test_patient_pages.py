"""The clinical answer in the dashboard: the Predict page requires the sex (no default; a DICOM fills it and
says so; changing it changes the reading) and takes dates and heights; the Patient page shows one child's
series with the chart and the velocities. Run headless with Streamlit's AppTest on real radiographs."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st

from tests.dashboard import app_driver

pytestmark = pytest.mark.integration

FIRST = 120
CASE = "4361"  # official test radiograph of a boy (reference 169.65 months)
PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "views"


@pytest.fixture(autouse=True)
def _data(data_dir, monkeypatch):
    monkeypatch.setenv("BONEAGE_DATA", str(data_dir))
    st.cache_data.clear()


def _ok(at):
    assert not at.exception, [e.message for e in at.exception]
    return at


def _bone_age(at) -> float:
    (m,) = [m for m in at.metric if m.label == "Bone age"]
    return float(m.value.split()[0])


def test_predict_requires_the_sex_and_changing_it_changes_the_reading(data_dir):
    at = _ok(app_driver.open_page(PAGES / "7_Predict.py", timeout=FIRST))
    assert at.radio(key="pr_sex").value is None  # no default
    png = (data_dir / "test" / f"{CASE}.png").read_bytes()
    at.file_uploader(key="pr_files").set_value([(f"{CASE}.png", png, "image/png")])
    _ok(at.run(timeout=FIRST))
    assert not [m for m in at.metric if m.label == "Bone age"]  # nothing read without a sex
    assert any("Choose the sex" in w.value for w in at.warning)
    assert at.dataframe[-1].value.iloc[0]["error"].startswith("sex not given")
    key = f"pr_sex_0_{CASE}.png"
    at.selectbox(key=key).set_value("female")
    girl = _bone_age(_ok(at.run(timeout=FIRST)))
    at.selectbox(key=key).set_value("male")
    boy = _bone_age(_ok(at.run(timeout=FIRST)))
    assert abs(boy - girl) > 5  # the case: a boy's film read as a girl's comes out younger
    # the 'all uploads' choice changes files already uploaded
    at.radio(key="pr_sex").set_value("female")
    assert _bone_age(_ok(at.run(timeout=FIRST))) == pytest.approx(girl, abs=0.05)
    assert at.selectbox(key=key).value == "female"


def test_predict_dicom_fills_the_sex_and_dates_give_the_sds(data_dir, hand_dx):
    at = _ok(app_driver.open_page(PAGES / "7_Predict.py", timeout=FIRST))
    dcm = hand_dx(data_dir / "test" / f"{CASE}.png", sex="M", birth_date="20080305", study_date="20210611")
    at.file_uploader(key="pr_files").set_value([("hand.dcm", dcm, "application/dicom")])
    _ok(at.run(timeout=FIRST))
    assert at.selectbox(key="pr_sex_0_hand.dcm").value == "male"
    assert any("From the DICOM PatientSex (M)" in c.value for c in at.caption)
    row = at.dataframe[-1].value.iloc[0]
    assert row["study_date"] == "2021-06-11" and row["sds_reference"] == "Brush Foundation (Greulich & Pyle)"
    at.date_input(key="pr_birth_0_hand.dcm").set_value(dt.date(2009, 3, 5))  # a year younger than the header
    at.number_input(key="pr_height_0_hand.dcm").set_value(160.0)
    _ok(at.run(timeout=FIRST))
    row = at.dataframe[-1].value.iloc[0]
    assert row["chronological_age_months"] == pytest.approx(147.2, abs=0.1)
    assert pd.notna(row["bone_age_sds"]) and any("Bone age SDS" in s.value for s in [*at.warning, *at.success])
    assert pd.notna(row["predicted_adult_height_cm"]) or "no adult height" in row["notes"]


def test_patient_page_demonstration_series(data_dir):
    at = _ok(app_driver.open_page(PAGES / "10_Patient.py", timeout=FIRST))
    at.radio(key="pt_source").set_value("Demonstration series from the data set")
    _ok(at.run(timeout=FIRST))
    assert any("DEMONSTRATION" in w.value for w in at.warning)
    films = at.dataframe[0].value
    assert len(films) == 4 and films["chronological_age_months"].is_monotonic_increasing
    steps = at.dataframe[1].value
    assert len(steps) == 3 and (steps["lower 90"] < steps["velocity"]).all()
    (v,) = [m for m in at.metric if m.label == "Bone-age velocity over the series"]
    assert float(v.value) > 0


def test_patient_page_uploads_of_one_child(data_dir):
    at = _ok(app_driver.open_page(PAGES / "10_Patient.py", timeout=FIRST))
    files = [(f"{c}.png", (data_dir / "test" / f"{c}.png").read_bytes(), "image/png") for c in ("4361", "4365")]
    at.file_uploader(key="pt_files").set_value(files)
    _ok(at.run(timeout=FIRST))
    assert any("sex and birth date" in w.value for w in at.warning)
    at.radio(key="pt_sex").set_value("male")
    at.date_input(key="pt_birth").set_value(dt.date(2010, 1, 1))
    _ok(at.run(timeout=FIRST))
    at.date_input(key="pt_study_0_4361.png").set_value(dt.date(2022, 1, 1))
    at.date_input(key="pt_study_1_4365.png").set_value(dt.date(2022, 3, 1))
    _ok(at.run(timeout=FIRST))
    assert any("too close" in w.value for w in at.warning)  # two months apart: the precision cannot tell
    assert len(at.dataframe[0].value) == 2
