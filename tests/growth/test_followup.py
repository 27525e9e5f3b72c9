"""Follow-up of one child: ordering, velocities with the precision's interval, and the checks."""
import datetime as dt
import math

import pytest

from boneage.growth.followup import Film, follow_up, group_films, step_interval

pytestmark = pytest.mark.unit
SD = 2.0  # months, about the shipped model's official-test test-retest SD


def film(i, ca, ba, date=None, male=True, side="left", pid="P1"):
    return Film(f"f{i}", pid, ba, ca, male, date, side)


def test_ordered_by_study_date_and_velocity_between_films():
    fu = follow_up([film(2, 132, 140, dt.date(2021, 1, 1)), film(1, 120, 125, dt.date(2020, 1, 1))], SD)
    assert [f.id for f in fu.films] == ["f1", "f2"]
    (s,) = fu.steps
    assert s.velocity == pytest.approx(15 / 12) and s.months_between == 12
    half = 1.6449 * math.sqrt(2) * SD / 12
    assert (s.lower_90, s.upper_90) == pytest.approx((15 / 12 - half, 15 / 12 + half))
    assert fu.velocity == pytest.approx(15 / 12)  # two films: the series' slope is the step
    assert (fu.lower_90, fu.upper_90) == pytest.approx((s.lower_90, s.upper_90))
    assert fu.as_row()["first_study_date"] == "2020-01-01" and fu.as_row()["films"] == 2


def test_interval_narrows_as_the_films_move_apart():
    widths = []
    for gap in (3, 6, 12, 24):
        fu = follow_up([film(1, 120, 125), film(2, 120 + gap, 125 + gap)], SD)
        widths.append(fu.upper_90 - fu.lower_90)
    assert widths == sorted(widths, reverse=True) and widths[0] == pytest.approx(8 * widths[-1])


def test_least_squares_over_the_whole_series():
    fu = follow_up([film(1, 100, 100), film(2, 112, 110), film(3, 124, 124), film(4, 136, 130)], SD)
    # slope of (100,100),(112,110),(124,124),(136,130): sxx = 720, sxy = 288 + 36 + 48 + 252 = 624 -> 0.8667
    assert fu.velocity == pytest.approx(624 / 720) and len(fu.steps) == 3
    assert fu.upper_90 - fu.velocity == pytest.approx(1.6449 * SD / math.sqrt(720))


def test_too_close_films_get_a_note():
    fu = follow_up([film(1, 120, 125), film(2, 123, 128)], SD)
    assert step_interval(3, SD) > 1 and any("too close" in n for n in fu.notes)
    assert not follow_up([film(1, 120, 125), film(2, 132, 137)], SD).notes


def test_checks_sex_laterality_duplicate_date_and_younger_later_film():
    d = dt.date(2020, 5, 1)
    fu = follow_up([film(1, 120, 130, d), film(2, 120, 131, d, male=False, side="right"),
                    film(3, 144, 118, dt.date(2022, 5, 1))], SD)
    text = " ".join(fu.notes)
    assert "sex changes" in text and "laterality changes" in text and "same study date" in text
    assert "reads 13.0 months younger" in text
    assert fu.steps[0].velocity is None


def test_grouping_by_patient_and_bad_precision():
    g = group_films([film(1, 1, 1, pid="A"), film(2, 1, 1, pid="B"), film(3, 2, 2, pid="A"), film(4, 1, 1, pid="")])
    assert list(g) == ["A", "B"] and [f.id for f in g["A"]] == ["f1", "f3"]
    with pytest.raises(ValueError, match="test-retest SD"):
        follow_up([film(1, 1, 1)], float("nan"))
