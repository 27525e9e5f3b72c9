"""Placeholder DICOM ages (#31.6): 000D, 000Y, a zero age from equal dates are no age, with a note."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from boneage.io.dicom_patient import patient_info

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["000D", "000Y", "000M", "000W"])
def test_zero_patient_age_is_no_age(value):
    ds = Dataset()
    ds.PatientSex, ds.PatientAge = "M", value
    info = patient_info(ds)
    assert info.age_months is None and info.age_source == ""
    assert any(value in n and "placeholder" in n for n in info.notes), info.notes


def test_birth_date_equal_to_study_date_is_no_age():
    ds = Dataset()
    ds.PatientSex, ds.PatientBirthDate, ds.StudyDate = "F", "20200101", "20200101"
    info = patient_info(ds)
    assert info.age_months is None and any("placeholder" in n for n in info.notes), info.notes
    ds.PatientAge = "009Y"  # the dates are a placeholder; a real PatientAge is still used
    assert patient_info(ds).age_months == 108


def test_real_ages_are_kept():
    ds = Dataset()
    ds.PatientBirthDate, ds.StudyDate = "20100115", "20201120"
    assert 130 < patient_info(ds).age_months < 131
    ds2 = Dataset()
    ds2.PatientAge = "003D"
    assert patient_info(ds2).age_months == pytest.approx(3 / (365.25 / 12))
