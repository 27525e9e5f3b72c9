"""Bayley-Pinneau adult height: the shipped tables checked against each other, a hand-worked example, the
table choice, the range and the mid-parental target."""
import numpy as np
import pytest

from boneage.growth.adult_height import (ACCELERATED, AVERAGE, RETARDED, bayley_pinneau_provenance,
                                         bayley_pinneau_tables, choose_table, midparental_height,
                                         predict_adult_height)

pytestmark = pytest.mark.unit


def test_every_table_rises_with_bone_age_and_ends_in_its_recorded_range():
    ranges = bayley_pinneau_provenance()["ranges_months"]
    tables = bayley_pinneau_tables()
    assert len(tables) == 6
    for (sex, name), (ages, pct) in tables.items():
        assert np.all(np.diff(ages) > 0) and np.all(np.diff(pct) >= 0), (sex, name)
        assert [ages[0], ages[-1]] == ranges[f"{sex} {name}"]
        assert 60 < pct[0] < pct[-1] <= 100


def test_accelerated_below_average_below_retarded_at_shared_bone_ages():
    tables = bayley_pinneau_tables()
    for sex in ("M", "F"):
        avg = dict(zip(*tables[(sex, AVERAGE)]))
        for name, sign in ((ACCELERATED, -1), (RETARDED, 1)):
            shared = [(a, p) for a, p in zip(*tables[(sex, name)]) if a in avg and avg[a] < 100]
            assert len(shared) >= 10
            assert all(sign * (p - avg[a]) > 0 for a, p in shared), (sex, name)


def test_girls_reach_more_of_adult_height_than_boys_at_the_same_bone_age():
    boys, girls = dict(zip(*bayley_pinneau_tables()[("M", AVERAGE)])), dict(zip(*bayley_pinneau_tables()[("F", AVERAGE)]))
    shared = [a for a in boys if a in girls and girls[a] < 100]
    assert len(shared) > 20 and all(girls[a] > boys[a] for a in shared)


def test_hand_worked_example():
    # boy, 150 cm, bone age 13-0 (156 months) at 13 years 4 months: within a year, so the average table, where
    # 13-0 is 87.6 %: 150 / 0.876 = 171.23 cm. Bone-age interval 150-162 months: 12-6 is 85.3 %, 13-6 90.2 %,
    # so 175.85 and 166.30 cm; method 90 % half-width 1.6449 * 8 / 1.96 = 6.714 cm;
    # lower 171.23 - sqrt(4.93^2 + 6.714^2) = 162.90, upper 171.23 + sqrt(4.62^2 + 6.714^2) = 179.38.
    r = predict_adult_height(150, 156, 160, male=True, interval=(150, 162))
    assert r.table == AVERAGE and r.percent_of_adult_height == pytest.approx(87.6)
    assert r.adult_height_cm == pytest.approx(171.23, abs=0.01)
    assert r.lower_90_cm == pytest.approx(162.90, abs=0.02) and r.upper_90_cm == pytest.approx(179.38, abs=0.02)
    assert "Bayley-Pinneau" in r.text()


def test_interpolates_between_quarter_years():
    r = predict_adult_height(150, 157.5, 160, male=True)  # halfway 13-0 (87.6) and 13-3 (89.0)
    assert r.percent_of_adult_height == pytest.approx(88.3)


def test_table_choice_one_year_or_more():
    assert choose_table(132, 120) == ACCELERATED and choose_table(131.9, 120) == AVERAGE
    assert choose_table(108, 120) == RETARDED and choose_table(108.1, 120) == AVERAGE
    assert predict_adult_height(140, 120, 100, male=False).table == ACCELERATED


def test_out_of_range_is_empty_with_a_reason():
    r = predict_adult_height(120, 60, 60, male=True)  # 5 years: the tables start at 6 or 7
    assert r.adult_height_cm is None and "outside the Bayley-Pinneau average table for boys (84-222" in r.reason
    assert "boys" in predict_adult_height(150, 160, 140, male=True).reason  # accelerated boys stop at 11-9
    assert "not plausible" in predict_adult_height(15, 150, 150, male=True).reason  # metres or inches, not cm


def test_midparental_target():
    assert midparental_height(180, 165, True).target_cm == pytest.approx(179.0)
    t = midparental_height(180, 165, False)
    assert (t.target_cm, t.lower_cm, t.upper_cm) == pytest.approx((166.0, 157.5, 174.5))
    assert midparental_height(None, 165, True).target_cm is None
    assert "not plausible" in midparental_height(18, 165, True).reason
