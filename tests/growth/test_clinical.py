"""Clinical facts from a row: dates to an age, heights, and a reason for every unusable value."""
import datetime as dt

import pytest

from boneage.growth.clinical import parse_clinical

pytestmark = pytest.mark.unit
TODAY = dt.date(2026, 12, 7)


def test_dates_give_the_age_and_win_over_a_disagreeing_age():
    c = parse_clinical({"birth_date": "2010-01-01", "study_date": "2020-01-01", "chronological_age_months": "100",
                        "patient_id": " P1 ", "height_cm": "140,5"}, TODAY)
    assert c.chronological_age_months == pytest.approx(3652 / (365.25 / 12)) and c.age_source == "birth_date and study_date"
    assert c.patient_id == "P1" and c.height_cm == 140.5 and "disagrees with the dates" in c.problems[0]


@pytest.mark.parametrize("raw, reason", [
    ({"birth_date": "2015-01-01", "study_date": "2014-01-01"}, "before birth_date"),
    ({"study_date": "2027-01-01"}, "in the future"),
    ({"study_date": "01/02/2020"}, "not a date"),
    ({"chronological_age_months": "400"}, "outside 0-300"),
    ({"height_cm": "1.40"}, "not plausible"),
    ({"father_height_cm": "abc"}, "not a number"),
])
def test_each_bad_value_is_left_out_with_its_reason(raw, reason):
    c = parse_clinical(raw, TODAY)
    assert c.chronological_age_months is None and c.height_cm is None and c.father_height_cm is None
    assert len(c.problems) == 1 and reason in c.problems[0]


def test_nothing_given_is_empty():
    assert parse_clinical({}, TODAY).empty and parse_clinical({"height_cm": float("nan")}, TODAY).empty
