"""Bone age SDS and the delayed / normal / advanced / indeterminate call."""
import pytest

from boneage.growth.sds import ADVANCED, DELAYED, INDETERMINATE, NORMAL, bone_age_sds, sds_status

pytestmark = pytest.mark.unit


def test_sds_at_the_check_value():
    r = bone_age_sds(145.26, 120, male=True)  # the boys' mean + 2 SD at 120 months
    assert r.sds == pytest.approx(2.0, abs=1e-3) and r.reference_mean_months == pytest.approx(125.68)
    assert "Greulich" in r.reference and "Greulich" in r.text()
    assert bone_age_sds(125.68, 120, male=True).sds == pytest.approx(0.0)
    assert bone_age_sds(125.66 - 11.73, 120, male=False).sds == pytest.approx(-1.0)


def test_status_by_point_without_interval():
    assert bone_age_sds(100, 120, True).status == DELAYED       # (100 - 125.68) / 9.79 = -2.62
    assert bone_age_sds(150, 120, True).status == ADVANCED      # +2.48
    assert bone_age_sds(130, 120, True).status == NORMAL
    assert "SDS alone" in bone_age_sds(130, 120, True).rule


def test_indeterminate_when_the_models_interval_crosses_a_threshold():
    # point -2.62 SDS, but the interval 95-112 months spans -3.13 to -1.39 SDS: cannot tell
    r = bone_age_sds(100, 120, True, interval=(95, 112))
    assert r.status == INDETERMINATE and r.sds_lower < -2 < r.sds_upper
    assert bone_age_sds(100, 120, True, interval=(95, 104)).status == DELAYED    # all below -2 (104 -> -2.21)
    assert bone_age_sds(150, 120, True, interval=(140, 160)).status == INDETERMINATE
    assert bone_age_sds(150, 120, True, interval=(147, 160)).status == ADVANCED
    assert bone_age_sds(126, 120, True, interval=(115, 135)).status == NORMAL
    assert sds_status(0.0, -2.5, 2.5)[0] == INDETERMINATE


def test_outside_the_reference_no_sds_and_the_reason():
    r = bone_age_sds(200, 200, male=False)
    assert r.sds is None and r.status is None and "outside" in r.reason
    assert r.text().startswith("No bone age SDS")
    assert bone_age_sds(2, 1, male=True).sds is None
