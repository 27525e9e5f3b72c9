"""The batch contract of pipelines.predict and boneage.inference.assess.assess_cases: one output row per input row,
every failure with its reason, truthful counts, a non-zero exit when nothing succeeded, the output path
checked before any work, and no spreadsheet formulas in any CSV the product writes."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from boneage.io.csv_safety import neutralise_frame, to_csv_safe
from boneage.inference.assess import assess_cases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDS = ["1377", "1378"]  # real training radiographs



@pytest.fixture
def image_dir(tmp_path, data_dir):
    d = tmp_path / "images"
    d.mkdir()
    for cid in IDS:
        shutil.copy(data_dir / "train" / f"{cid}.png", d / f"{cid}.png")
    return d


def _cases(tmp_path, rows: list[tuple[str, str]], name="cases.csv"):
    p = tmp_path / name
    pd.DataFrame(rows, columns=["id", "sex"]).to_csv(p, index=False)
    return p


def test_every_input_row_gets_an_output_row(tmp_path, image_dir, predict_cli):
    cases = _cases(tmp_path, [("1377", "F"), ("1378", "x"), ("1379", ""), ("missing", "M"), ("1377", "M")])
    out = tmp_path / "out.csv"
    proc = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    res = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert res["id"].tolist() == ["1377", "1378", "1379", "missing", "1377"]
    err = res["error"].tolist()
    assert err[0] == "" and float(res["boneage_pred"].iloc[0]) > 0
    assert "sex not understood: 'x'" in err[1] and "sex not understood: ''" in err[2]
    assert "not found" in err[3] and "duplicate id" in err[4]
    assert "wrote 5 rows" in proc.stdout and "(1 predicted, 4 failed)" in proc.stdout
    for cid in ("1378", "1379", "missing"):
        assert f"failed {cid}:" in proc.stderr


def test_batch_where_nothing_succeeds_exits_non_zero(tmp_path, image_dir, predict_cli):
    cases = _cases(tmp_path, [("nope1", "F"), ("1377", "?")])
    out = tmp_path / "out.csv"
    proc = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(out)])
    assert proc.returncode == 1
    assert "none of the 2 cases could be predicted" in proc.stderr
    assert len(pd.read_csv(out)) == 2  # the reasons are still written


def test_output_path_checked_before_any_work(tmp_path, image_dir, predict_cli):
    cases = _cases(tmp_path, [("1377", "F")])
    before = cases.read_bytes()
    same = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(cases)])
    assert same.returncode == 2 and "is the cases file itself" in same.stderr
    assert cases.read_bytes() == before  # the input is intact
    no_dir = tmp_path / "no_such_folder" / "out.csv"
    missing = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(no_dir)])
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert not list(tmp_path.glob("**/*.tmp"))
    folder = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(tmp_path)])
    assert folder.returncode == 2 and "is a folder" in folder.stderr


def test_formula_cells_are_neutralised_in_the_cli_output(tmp_path, image_dir, predict_cli):
    evil = ['=HYPERLINK("http://x.example/?a=1","click")', "@SUM(1+1)", "+1", "-2", "\tcmd"]
    cases = _cases(tmp_path, [("1377", "F"), *[(e, "M") for e in evil]])
    out = tmp_path / "out.csv"
    proc = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    res = pd.read_csv(out, dtype=str, keep_default_na=False)
    for cell in res.to_numpy().ravel():
        assert not re.match(r"^[=+\-@\t\r]", cell), cell
    assert res["id"].tolist()[1:] == ["'" + e for e in evil[:4]] + ["cmd"]  # ids are stripped of blanks
    assert "=HYPERLINK" in text  # still readable, just not executable
    # numbers stay numbers
    assert float(res.loc[0, "boneage_pred"]) > 0


def test_csv_safety_helper():
    df = pd.DataFrame({"id": ["=1+1", "@x", "ok", "-3", "+a", "\rz", ""], "age": [-1.5, 2, 3, 4, 5, 6, 7]})
    safe = neutralise_frame(df)
    assert safe["id"].tolist() == ["'=1+1", "'@x", "ok", "'-3", "'+a", "'\rz", ""]
    assert safe["age"].tolist() == df["age"].tolist()  # numeric cells untouched
    assert to_csv_safe(df).splitlines()[1] == "'=1+1,-1.5"
    assert df["id"].iloc[0] == "=1+1"  # the caller's frame is not changed


def test_every_csv_written_for_people_goes_through_the_helper(repo_root):
    """Pages and the prediction CLI write CSV only through boneage.io.csv_safety (a plain .to_csv there would be
    a formula-injection hole)."""
    files = [*(repo_root / "dashboard").rglob("*.py"), repo_root / "pipelines" / "predict.py"]
    offenders = [f"{f.name}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
                 if ".to_csv(" in line]
    assert not offenders, offenders


def test_assess_cases_keeps_rows_with_bad_sex(data_dir, image_dir):
    from boneage import load_predictor

    p = load_predictor()
    out = assess_cases(pd.DataFrame({"id": ["1377", "1378", "1377"], "male": [True, None, "x"]}), image_dir, predictor=p)
    assert out["id"].tolist() == ["1377", "1378", "1377"]
    assert out["error"].iloc[0] == "" and np.isfinite(out["boneage_pred"].iloc[0])
    assert "sex missing or not understood" in out["error"].iloc[1]
    assert "sex missing or not understood" in out["error"].iloc[2]
    assert out["male"].iloc[0] and pd.isna(out["male"].iloc[1])
