"""boneage.inference.assess: one assessment for every door. The same numbers as the predictor, one row schema for the
library, the CLI (single image and batch) and the dashboard, sex and age read from a DICOM header when not
given, and each input problem named."""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from boneage.inference.assess import AssessmentInputError, assess, assess_cases, row_columns
from boneage.io.dicom_patient import parse_patient_age, patient_info
from boneage.io.imaging import ImageLoadError

pytestmark = pytest.mark.integration

CASE = "4361"  # official test radiograph, male, reference 169.65 months


@pytest.fixture(scope="module")
def predictor():
    from boneage.inference.assess import shipped_predictor

    return shipped_predictor()


def test_assess_gives_the_predictors_numbers_and_every_part(predictor, data_dir):
    path = data_dir / "test" / f"{CASE}.png"
    ref = predictor.predict_file(path, male=True)
    a = assess(path, "M", chronological_age=120)
    assert a.boneage_months == ref.boneage_months and a.intervals == ref.intervals and a.stage == ref.stage
    assert a.model_sha256 and len(a.model_sha256.split("+")[0]) == 64
    # the outlier check of the shipped model ran and passed this real radiograph
    assert a.unlike_training_data is False and 0 < a.outlier_score < a.outlier_threshold
    assert a.maturity is not None and a.chronological_age_source == "given"
    assert a.maturity.difference_months == pytest.approx(a.boneage_months - 120)
    assert a.maturity.status == "advanced"  # ~160 months against 120: far outside the 95 % interval
    row = a.as_row()
    assert list(row) == row_columns(predictor.cfg.stages.names)
    assert row["boneage_pred"] == round(ref.boneage_months, 2) and row["maturity"] == "advanced"
    assert row["lower_90"] == round(ref.intervals["90"][0], 2) and row["error"] == "" and row["site"] is None
    # bytes, an upload object and the array give the same answer
    data = path.read_bytes()

    class Upload:
        name = "hand.png"

        def getvalue(self):
            return data

    assert assess(data, "M", name="x.png").boneage_months == a.boneage_months
    up = assess(Upload(), True)
    assert up.id == "hand.png" and up.boneage_months == a.boneage_months and up.maturity is None


def test_site_profile_and_negative_and_refusals(data_dir, tmp_path):
    from PIL import Image

    path = data_dir / "test" / f"{CASE}.png"
    plain = assess(path, "M")
    sited = assess(path, "M", site="rsna-official")
    assert sited.site == "rsna-official" and "rsna-official" in sited.site_note
    assert sited.boneage_months != plain.boneage_months and sited.as_row()["site"] == "rsna-official"
    neg = tmp_path / "neg.png"
    Image.fromarray(255 - np.asarray(Image.open(path).convert("L"))).save(neg)
    n = assess(neg, "M")
    assert n.inverted_negative and not plain.inverted_negative
    assert any("looks like a negative" in c for c in n.cautions())
    assert abs(n.boneage_months - plain.boneage_months) < 3.0
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(black)
    with pytest.raises(ImageLoadError, match="blank"):
        assess(black, "F")
    with pytest.raises(AssessmentInputError, match="sex 'x' is not understood"):
        assess(path, "x")
    with pytest.raises(AssessmentInputError, match="sex is needed.*not a DICOM"):
        assess(path)
    with pytest.raises(AssessmentInputError, match="outside 0-300"):
        assess(path, "F", chronological_age=-4)


def test_dicom_header_gives_sex_and_age(data_dir, make_dicom):
    path = data_dir / "test" / f"{CASE}.png"
    plain = assess(path, "M")
    data = make_dicom(path, PatientID="P-77", PatientSex="M", PatientBirthDate="20100115", StudyDate="20201120")
    a = assess(data, name="hand.dcm")
    months = (dt.date(2020, 11, 20) - dt.date(2010, 1, 15)).days / (365.25 / 12)
    assert a.male and a.sex_source == "DICOM PatientSex"
    assert a.chronological_age_months == pytest.approx(months) and a.patient.patient_id == "P-77"
    assert a.chronological_age_source == "DICOM PatientBirthDate and StudyDate" and a.maturity is not None
    notes = a.as_row()["notes"]
    assert "sex M from the DICOM PatientSex" in notes and "from the DICOM PatientBirthDate and StudyDate" in notes
    assert a.boneage_months == pytest.approx(plain.boneage_months, abs=1e-4)  # same pixels, same answer
    # given values win over the header
    given = assess(data, "F", chronological_age=150, name="hand.dcm")
    assert not given.male and given.chronological_age_months == 150 and given.chronological_age_source == "given"
    assert any("sex given as F, but the DICOM PatientSex is M" in c for c in given.cautions())
    # PatientAge alone; an unusable sex is refused with the reason
    aged = assess(make_dicom(path, PatientSex="M", PatientAge="012Y"), name="a.dcm")
    assert aged.chronological_age_months == 144 and aged.chronological_age_source == "DICOM PatientAge 012Y"
    with pytest.raises(AssessmentInputError, match="PatientSex is 'O'"):
        assess(make_dicom(path, PatientSex="O"), name="o.dcm")


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # the malformed PatientAge is the point
def test_patient_header_parsing():
    from pydicom.dataset import Dataset

    assert parse_patient_age("010Y") == 120 and parse_patient_age("018M") == 18
    assert parse_patient_age("052W") == pytest.approx(52 * 7 / (365.25 / 12)) and parse_patient_age("10 years") is None
    ds = Dataset()
    ds.PatientSex, ds.PatientBirthDate, ds.StudyDate, ds.PatientAge = "F", "20200101", "20100101", "007Y"
    info = patient_info(ds)  # birth after the study: the dates are not used, PatientAge is, and a note says why
    assert info.sex == "F" and info.age_months == 84 and info.age_source == "PatientAge 007Y"
    assert any("cannot be right" in n for n in info.notes)
    ds.PatientAge = "banana"
    assert patient_info(ds).age_months is None and len(patient_info(ds).notes) == 2
    assert patient_info(None).male is None


def test_batch_rows_match_single_assessments(predictor, data_dir, make_dicom, tmp_path):
    shutil.copy(data_dir / "test" / f"{CASE}.png", tmp_path / "a.png")
    (tmp_path / "d.dcm").write_bytes(make_dicom(data_dir / "test" / "4365.png", PatientSex="M", PatientAge="006Y"))
    out = assess_cases(pd.DataFrame({"id": ["a", "d", "nope"], "male": ["M", "M", "F"]}), tmp_path, predictor)
    assert list(out.columns) == row_columns(predictor.cfg.stages.names)
    single = assess(tmp_path / "a.png", "M", name="a").as_row()
    for key, value in single.items():  # a batch of two and a single image: equal up to float rounding
        got = out.iloc[0][key]
        if isinstance(value, float):
            assert got == pytest.approx(value, abs=0.011), key
        else:
            assert (value is None and pd.isna(got)) or got == value, key
    d = out.iloc[1]
    assert d["chronological_age_months"] == 72 and d["maturity"] in ("delayed", "normal", "advanced")
    assert "not found" in out.iloc[2]["error"]


def test_cli_single_image_row_has_the_batch_schema(data_dir, tmp_path, predict_cli):
    out = tmp_path / "row.csv"
    proc = predict_cli([str(data_dir / "test" / f"{CASE}.png"), "--sex", "M", "--age", "120", "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "Advanced: bone age is" in proc.stdout and "Rule: chronological age outside" in proc.stdout
    row = pd.read_csv(out, keep_default_na=False)
    assert list(row.columns) == row_columns(["Child", "Adolescent", "Adult"])
    assert row["maturity"].iloc[0] == "advanced" and row["chronological_age_months"].iloc[0] == 120
    nosex = predict_cli([str(data_dir / "test" / f"{CASE}.png")])
    assert nosex.returncode == 2 and "sex is needed" in nosex.stderr and "Traceback" not in nosex.stderr


@pytest.mark.parametrize("tags", [dict(PatientAge="000D"), dict(PatientAge="001Y"),
                                  dict(PatientBirthDate="20200101", StudyDate="20200101")])
def test_placeholder_or_implausible_header_age_gives_no_call(data_dir, make_dicom, tags):
    """#31.6: a DICOM age of zero (000D, equal dates) or one that contradicts the film (a 1-year-old's age on a
    teenager's hand) is no age: no delayed/advanced call, and a note says why."""
    path = data_dir / "test" / f"{CASE}.png"
    a = assess(make_dicom(path, PatientSex="M", **tags), name="p.dcm")
    assert a.boneage_months > 100  # the film is a teenager's: the header age cannot be right
    assert a.chronological_age_months is None and a.maturity is None
    assert a.as_row()["maturity"] in (None, "")
    assert any("age" in n and ("placeholder" in n or "contradicts" in n) for n in a.notes), a.notes
