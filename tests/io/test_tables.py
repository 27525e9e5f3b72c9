"""Case tables: the CSV layouts users have, and broken rows reported instead of crashing."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from boneage.io.tables import normalize_id, parse_cases, parse_male, read_cases

pytestmark = pytest.mark.integration


def _write(tmp_path, text: str, name: str = "cases.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _reasons(table) -> dict[str, str]:
    return dict(table.rejected)


@pytest.mark.parametrize("text", [
    "id,boneage,male\n1377,180,False\n1378,12,True\n",
    "id,boneage,male\n1377,180,false\n1378,12,true\n",
    "id,boneage,male\n1377,180,0\n1378,12,1\n",
    "id,bone_age,sex\n1377,180,F\n1378,12,M\n",
    "id,Bone Age (months),gender\n1377.png,180,female\n1378.png,12,male\n",
    "Case ID,boneage,Sex\n 1377 ,180, f \n1378.PNG,12,m\n",
])
def test_layout_variants_normalise_to_the_same_table(tmp_path, text):
    table = read_cases(_write(tmp_path, text))
    assert table.rejected == []
    cases = table.cases
    assert list(cases.columns) == ["id", "male", "boneage"]
    assert cases["id"].tolist() == ["1377", "1378"]
    assert cases["male"].dtype == bool
    assert cases["male"].tolist() == [False, True]
    assert cases["boneage"].tolist() == [180.0, 12.0]


def test_ids_as_int_float_or_file_name():
    assert normalize_id(1377) == "1377"
    assert normalize_id("1377.png") == "1377"
    assert normalize_id("1377.0") == "1377"  # id column that went through a float
    assert normalize_id("scan_7.dcm") == "scan_7"
    assert normalize_id(" 42.JPG ") == "42"
    assert normalize_id("v1.0a") == "v1.0a"  # only a numeric .0 tail is a float artefact


def test_parse_male_values():
    for v in (True, "True", "true", "1", "M", "male", "Yes", np.bool_(True)):
        assert parse_male(v) is True, v
    for v in (False, "False", "0", "F", "female", "no", np.bool_(False)):
        assert parse_male(v) is False, v
    for v in (None, float("nan"), "", "X", "unknown", "2"):
        assert parse_male(v) is None, v


def test_broken_rows_rejected_with_reasons_and_rest_kept(tmp_path):
    text = (
        "id,boneage,sex\n"
        "1,100,M\n"        # good
        "2,120,X\n"        # bad sex
        "3,abc,F\n"        # non-numeric age
        ",50,F\n"          # missing id
        "1,90,F\n"         # duplicate id (first kept)
        "5,999,M\n"        # age out of range
        "6,-3,F\n"         # negative age
        "7,,F\n"           # no label: kept with NaN
        "8,33.5,female\n"  # good
    )
    table = read_cases(_write(tmp_path, text))
    cases = table.cases
    assert cases["id"].tolist() == ["1", "7", "8"]
    assert cases.loc[cases["id"] == "1", "boneage"].item() == 100.0  # the first row of the duplicate wins
    assert cases.loc[cases["id"] == "1", "male"].item() == True  # noqa: E712
    assert math.isnan(cases.loc[cases["id"] == "7", "boneage"].item())
    assert cases.loc[cases["id"] == "8", "boneage"].item() == 33.5

    reasons = _reasons(table)
    assert len(table.rejected) == 6
    assert "sex not understood" in reasons["2"] and "'X'" in reasons["2"]
    assert "not a number" in reasons["3"] and "abc" in reasons["3"]
    assert reasons["row 5"] == "missing id"  # CSV line 5 (header is line 1)
    assert "duplicate id" in reasons["1"]
    assert "out of range" in reasons["5"] and "out of range" in reasons["6"]


def test_require_age_rejects_unlabelled_rows(tmp_path):
    table = read_cases(_write(tmp_path, "id,male,boneage\n1,True,\n2,False,150.25\n"), require_age=True)
    assert table.cases["id"].tolist() == ["2"]
    assert _reasons(table) == {"1": "missing bone age"}


def test_rows_without_labels_get_nan_boneage(tmp_path):
    table = read_cases(_write(tmp_path, "id,male,boneage\n10,True,\n11,False,169.65\n12,True,nan\n"))
    assert table.rejected == []
    ages = table.cases["boneage"]
    assert ages.dtype == float
    assert np.isnan(ages.iloc[0]) and np.isnan(ages.iloc[2])
    assert ages.iloc[1] == pytest.approx(169.65)


def test_table_without_age_column_is_all_nan(tmp_path):
    table = read_cases(_write(tmp_path, "id,sex\n1,M\n2,F\n"))
    assert table.cases["male"].tolist() == [True, False]
    assert table.cases["boneage"].isna().all()


@pytest.mark.parametrize("text,needs", [
    ("name,male,boneage\n1,True,10\n", "'id'"),
    ("id,boneage\n1,10\n", "'male'"),
    ("id,age_years,weight\n1,10,30\n", "'male'"),
])
def test_missing_columns_raise_value_error(tmp_path, text, needs):
    with pytest.raises(ValueError, match=needs):
        read_cases(_write(tmp_path, text))


def test_missing_age_column_raises_when_required(tmp_path):
    with pytest.raises(ValueError, match="boneage"):
        read_cases(_write(tmp_path, "id,male\n1,True\n"), require_age=True)


def test_parse_cases_on_a_dataframe_with_python_types():
    df = pd.DataFrame({"id": [1377, 1378.0, None], "male": [True, False, True], "boneage": [180, np.nan, 5]})
    table = parse_cases(df)
    assert table.cases["id"].tolist() == ["1377", "1378"]
    assert table.cases["male"].tolist() == [True, False]
    assert np.isnan(table.cases["boneage"].iloc[1])
    assert table.rejected == [("row 4", "missing id")]


def test_real_train_and_test_tables(data_dir):
    train = read_cases(data_dir / "train.csv", require_age=True)
    assert train.rejected == []
    assert len(train.cases) == 12611
    assert train.cases["id"].is_unique
    assert train.cases["boneage"].between(1, 228).all()
    assert 0.5 < train.cases["male"].mean() < 0.6  # 54% male

    test = read_cases(data_dir / "test.csv")
    assert test.rejected == []
    assert len(test.cases) == 200
    assert test.cases["boneage"].isna().sum() == 100
    assert test.cases.loc[test.cases["id"] == "4361", "boneage"].item() == pytest.approx(169.65)


def test_out_of_range_reference_names_the_one_range(tmp_path):
    """#31.7: a -5 reference age is refused with the same range calibrate-site's help and header state."""
    from boneage.evaluation.site_calibration import REFERENCE_RANGE
    from pipelines import calibrate_site

    lo, hi = REFERENCE_RANGE
    table = read_cases(_write(tmp_path, "id,male,boneage\n1,True,-5\n2,False,250\n"))
    reasons = _reasons(table)
    for cid in ("1", "2"):
        assert f"outside {lo:.0f}-{hi:.0f} months" in reasons[cid], reasons
    assert f"{lo:.0f}-{hi:.0f} months" in calibrate_site.__doc__
