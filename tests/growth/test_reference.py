"""The shipped bone-age reference against its own check values, interpolation, range and pluggability."""
import json
import shutil

import numpy as np
import pytest

from boneage.growth.reference import (DEFAULT_REFERENCE, REFERENCE_DIR, ReferenceError, available_references,
                                      load_reference)

pytestmark = pytest.mark.unit


def test_brush_check_values_from_the_source_readme():
    ref = load_reference()
    assert ref.key == DEFAULT_REFERENCE and "Greulich" in ref.name
    mean, sd = ref.at(True, 120)
    assert (mean, sd) == pytest.approx((125.68, 9.79))
    assert (mean - 2 * sd, mean + 2 * sd) == pytest.approx((106.10, 145.26), abs=0.005)
    assert ref.at(False, 120) == pytest.approx((125.66, 11.73))


def test_interpolates_linearly_between_tabulated_ages():
    ref = load_reference()
    mean, sd = ref.at(True, 126)  # halfway between 120 (125.68, 9.79) and 132 (137.32, 10.09)
    assert mean == pytest.approx((125.68 + 137.32) / 2) and sd == pytest.approx((9.79 + 10.09) / 2)


def test_no_value_outside_the_table_and_the_reason_names_the_range():
    ref = load_reference()
    assert ref.age_range(True) == (3, 204) and ref.age_range(False) == (3, 192)
    assert ref.at(False, 200) is None
    assert "3-192" in ref.out_of_range(False, 200) and "girls" in ref.out_of_range(False, 200)
    assert ref.at(True, 200) is not None and ref.out_of_range(True, 200) == ""


def test_table_is_plausible_mean_rises_sd_positive():
    ref = load_reference()
    for s in ("M", "F"):
        assert np.all(np.diff(ref.means[s]) > 0) and np.all(ref.sds[s] > 0)


def test_a_reference_is_added_as_data(tmp_path):
    for f in ("brush_foundation_bone_age.csv", "brush_foundation_bone_age.json"):
        shutil.copy(REFERENCE_DIR / f, tmp_path / f)
    meta = json.loads((tmp_path / "brush_foundation_bone_age.json").read_text())
    meta.update(key="national_2030", name="A national reference", file="national.csv")
    (tmp_path / "national.json").write_text(json.dumps(meta))
    (tmp_path / "national.csv").write_text("sex,chronological_age_months,mean_bone_age_months,sd_months\n"
                                           "M,60,60,6\nM,180,180,12\nF,60,62,7\nF,180,182,11\n")
    assert set(available_references(tmp_path)) == {"brush_foundation", "national_2030"}
    ref = load_reference("national_2030", tmp_path)
    assert ref.name == "A national reference" and ref.at(True, 120) == pytest.approx((120, 9))
    with pytest.raises(ReferenceError, match="available: brush_foundation, national_2030"):
        load_reference("nope", tmp_path)


def test_a_reference_without_provenance_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "bone_age_sds", "key": "x", "file": "brush.csv"}))
    shutil.copy(REFERENCE_DIR / "brush_foundation_bone_age.csv", tmp_path / "brush.csv")
    with pytest.raises(ReferenceError, match="lacks 'name'"):
        load_reference("x", tmp_path)
