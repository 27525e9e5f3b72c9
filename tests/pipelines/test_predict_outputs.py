"""pipelines.predict never destroys its inputs or unrelated files (#31.2), and its report names never collide
(#31.3)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from boneage.clinic.report import report_name
from pipelines.predict import main

pytestmark = pytest.mark.integration


@pytest.fixture
def image_dir(tmp_path, data_dir):
    d = tmp_path / "img"
    d.mkdir()
    for cid in ("1377", "1378"):
        shutil.copy(data_dir / "train" / f"{cid}.png", d / f"{cid}.png")
    return d


def test_output_that_is_an_input_image_is_refused(image_dir, capsys):
    target = image_dir / "1377.png"
    before = target.read_bytes()
    assert main([str(target), "--sex", "F", "--no-outlier-check", "--output", str(target)]) == 2
    assert target.read_bytes() == before
    assert "is an input of this run" in capsys.readouterr().err


def test_batch_output_into_an_input_image_is_refused(image_dir, tmp_path, capsys):
    cases = tmp_path / "cases.csv"
    cases.write_text("id,sex\n1377,F\n1378,M\n")
    target = image_dir / "1378.png"
    before = target.read_bytes()
    assert main(["--image-dir", str(image_dir), "--cases", str(cases), "--no-outlier-check", "--output",
                 str(target)]) == 2
    assert target.read_bytes() == before and "is an input of this run" in capsys.readouterr().err


def test_unrelated_csv_is_kept_unless_overwrite(image_dir, tmp_path, capsys):
    other = tmp_path / "budget.csv"
    other.write_text("month,amount\njan,100\n")
    img = str(image_dir / "1377.png")
    assert main([img, "--sex", "F", "--no-outlier-check", "--output", str(other)]) == 2
    assert other.read_text() == "month,amount\njan,100\n"
    assert "--overwrite" in capsys.readouterr().err
    # a previous output of this tool is replaced; so is anything with --overwrite
    assert main([img, "--sex", "F", "--no-outlier-check", "--output", str(other), "--overwrite"]) == 0
    assert "boneage_pred" in pd.read_csv(other).columns
    assert main([img, "--sex", "M", "--no-outlier-check", "--output", str(other)]) == 0
    assert pd.read_csv(other)["male"].tolist() == [True]


def test_report_names_are_unique_and_the_count_is_true(tmp_path, data_dir, capsys):
    ids = ["x y", "x_y", "x?y"]
    names = {report_name(i) for i in ids}
    assert len(names) == 3 and "x_y.pdf" in names, names
    assert report_name("1377.png") == "1377.pdf" and report_name("1377") == "1377.pdf"
    d = tmp_path / "img"
    d.mkdir()
    for i in ids:
        shutil.copy(data_dir / "train" / "1377.png", d / f"{i}.png")
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"id": ids, "sex": ["F"] * 3}).to_csv(cases, index=False)
    reports = tmp_path / "reports"
    assert main(["--image-dir", str(d), "--cases", str(cases), "--no-outlier-check", "--report-dir", str(reports),
                 "--output", str(tmp_path / "out.csv")]) == 0
    written = sorted(p.name for p in reports.glob("*.pdf"))
    assert len(written) == 3, written
    assert f"wrote {len(written)} reports" in capsys.readouterr().out
