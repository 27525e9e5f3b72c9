"""The printable report (boneage.clinic.report): one page per radiograph holding the bone age, its 90 % interval,
the maturity status, the patient facts from a DICOM header and the disclaimer; written by the CLI's
--report-dir for a single image and for a batch. Checked by rendering the PDF with poppler (text and PNG)."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from boneage.clinic.report import gradcam
from boneage.inference.assess import DECISION_SUPPORT, assess
from boneage.clinic.report import reference_chart, render_report, report_name

pytestmark = pytest.mark.integration

CASE = "4361"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_one_page_with_the_numbers_and_the_disclaimer(data_dir, make_dicom, poppler):
    pdf_text, pdf_pages = poppler
    data = make_dicom(data_dir / "test" / f"{CASE}.png", PatientID="P-0042", PatientSex="M",
                      PatientBirthDate="20080305", StudyDate="20210611")
    a = assess(data, name="hand.dcm")
    pdf = render_report(a, gradcam(a))
    assert pdf.startswith(b"%PDF")
    text = _flat(pdf_text(pdf))
    lo, hi = a.intervals["90"]
    assert f"Bone age: {a.boneage_months:.1f} months" in text
    assert f"{lo:.1f} - {hi:.1f} months" in text
    assert _flat(DECISION_SUPPORT) in text
    assert "P-0042" in text and "2021-06-11" in text and "2008-03-05" in text and "male (from the DICOM PatientSex)" in text
    assert f"{a.chronological_age_months:.1f} months" in text and a.maturity.rule in text
    assert a.model_sha256 in text and "Within the training data" in text and f"{a.stage} (probability" in text
    assert len(pdf_pages(pdf)) == 1
    # several radiographs: one page each; a name outside Latin-1 is printed, not a crash
    b = assess(data_dir / "test" / "4365.png", "F", name="main_\u624b.png")
    two = render_report([a, b], [None, None])
    assert len(pdf_pages(two)) == 2 and "main_?.png" in pdf_text(two)


def test_report_name_is_a_safe_file_name():
    assert report_name("/x/y/4361.png") == "4361.pdf"
    assert report_name("../../etc/passwd") == "passwd.pdf"
    # odd characters replaced, and a hash of the id added so that different ids never share a file (#31.3)
    assert report_name("a b:c.dcm").startswith("a_b_c-") and report_name("...").startswith("report-")
    assert report_name("a b:c.dcm") != report_name("a_b_c") == "a_b_c.pdf"


def test_cli_writes_reports_for_a_single_image_and_a_batch(data_dir, tmp_path, predict_cli, poppler):
    pdf_text, pdf_pages = poppler
    single = tmp_path / "single"
    proc = predict_cli([str(data_dir / "test" / f"{CASE}.png"), "--sex", "M", "--age", "150", "--report-dir",
                        str(single)])
    assert proc.returncode == 0, proc.stderr
    pdf = (single / f"{CASE}.pdf").read_bytes()
    text = _flat(pdf_text(pdf))
    age = proc.stdout.split("bone age ")[1].split(" months")[0]
    assert f"Bone age: {age} months" in text and "Advanced" in text and len(pdf_pages(pdf)) == 1
    images = tmp_path / "images"
    images.mkdir()
    for cid in (CASE, "4365"):
        shutil.copy(data_dir / "test" / f"{cid}.png", images / f"{cid}.png")
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"id": [CASE, "4365", "missing"], "sex": ["M", "M", "F"]}).to_csv(cases, index=False)
    batch = tmp_path / "batch"
    proc = predict_cli(["--image-dir", str(images), "--cases", str(cases), "--output", str(tmp_path / "o.csv"),
                        "--report-dir", str(batch)])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in batch.iterdir()) == [f"{CASE}.pdf", "4365.pdf"]  # none for the failed row
    out = pd.read_csv(tmp_path / "o.csv", dtype={"id": str}).set_index("id")
    shown = re.search(r"Bone age: ([\d.]+) months", pdf_text((batch / "4365.pdf").read_bytes()))
    assert shown and abs(float(shown.group(1)) - out.loc["4365", "boneage_pred"]) <= 0.051
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    bad = predict_cli([str(data_dir / "test" / f"{CASE}.png"), "--sex", "M", "--report-dir", str(not_a_dir)])
    assert bad.returncode == 2 and "is a file; give a folder" in bad.stderr


@pytest.mark.parametrize("months", [None, 100.0])
def test_report_without_intervals_or_age_still_says_so(data_dir, poppler, months):
    import dataclasses

    pdf_text, _ = poppler
    a = assess(data_dir / "test" / f"{CASE}.png", "M", chronological_age=months)
    bare = dataclasses.replace(a, intervals={}, interval_problem="no conformal.json in the model folder")
    text = _flat(pdf_text(render_report(bare)))
    assert "not available (no conformal.json in the model folder)" in text
    assert ("not given (no maturity status)" in text) == (months is None)
    # an assessment of a file path names the file, never the server's folders
    assert a.id == str(data_dir / "test" / f"{CASE}.png")
    assert f"Radiograph: {CASE}.png" in text and str(data_dir) not in _flat(pdf_text(render_report(a)))


def test_report_shows_sds_chart_adult_height_and_follow_up(data_dir, poppler, tmp_path):
    from boneage.growth.followup import Film, follow_up

    pdf_text, pdf_pages = poppler
    clinical = {"patient_id": "P-7", "birth_date": "2010-01-01", "study_date": "2021-01-01", "height_cm": "150",
                "father_height_cm": "180", "mother_height_cm": "166"}
    a = assess(data_dir / "test" / f"{CASE}.png", "M", clinical=clinical)
    earlier = Film("earlier.png", "P-7", a.boneage_months - 14, a.chronological_age_months - 12, True)
    series = follow_up([earlier, Film(a.id, "P-7", a.boneage_months, a.chronological_age_months, True)], 2.0)
    pdf = render_report(a, series={"P-7": series})
    text = _flat(pdf_text(pdf))
    assert f"Bone age SDS {a.sds.sds:+.2f}" in text and "Brush Foundation (Greulich & Pyle)" in text
    assert a.sds.status in text and "P-7" in text and "2021-01-01" in text and "2010-01-01" in text
    assert ("Predicted adult height" in text) or ("No predicted adult height" in text)
    assert "Target height 179.5 cm" in text
    assert "bone age advanced 1.17 months per month of age" in text
    (page,) = pdf_pages(pdf)
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(page).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)  # the child's points on the chart
    assert red.sum() > 0  # no heatmap was passed: the only red on the page is the chart's points
    chart = np.asarray(reference_chart(a, series)).astype(int)
    # the later film's point: 46 + 462 * CA / 228 across, 406 - 380 * BA / 228 down (the chart's own axes)
    x = round(46 + 462 * a.chronological_age_months / 228)
    y = round(406 - 380 * a.boneage_months / 228)
    assert tuple(chart[y, x]) == (200, 40, 40)
