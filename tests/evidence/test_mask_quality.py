"""The mask-quality report's measures (boneage.evidence.mask_quality) on real films."""
from __future__ import annotations

import numpy as np
import pytest

from boneage.evidence.mask_quality import (PERTURBATIONS, carried_mask, failure_rates, iou, segment_film, stability,
                                           stability_summary)
from boneage.geometry.hand import HandSegmentation
from boneage.io.imaging import read_radiograph

pytestmark = pytest.mark.integration


def test_iou_and_an_identity_carry():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.roll(a, 2, axis=1)
    assert iou(a, a) == 1.0 and iou(a, b) == pytest.approx(8 / 24) and iou(a & False, b & False) == 1.0
    np.testing.assert_array_equal(carried_mask(a, (37, 53), lambda m: m), a)


def test_a_real_films_outline_is_stable_under_re_acquisition(data_dir):
    film = read_radiograph(data_dir / "test" / "4360.png")
    st = stability(film)
    assert set(st) == set(PERTURBATIONS)
    assert st["jpeg_q70"] > 0.9 and st["border_20pct"] > 0.9  # the border is trimmed again before the squeeze
    assert all(0.5 < v <= 1.0 for v in st.values()), st
    summary = stability_summary([st, {}])  # a film without an outline adds nothing
    assert summary["jpeg_q70"]["n"] == 1 and summary["jpeg_q70"]["mean"] == pytest.approx(st["jpeg_q70"])
    # a carried turn matches the turned film's own outline far better than the unturned outline does
    change, carry = PERTURBATIONS["rotate_+10"]
    seg = segment_film(film)
    turned = segment_film(change(film)).mask
    assert iou(turned, carried_mask(seg.mask, film.shape, carry)) > iou(turned, seg.mask)


def test_failure_rates_count_each_kind():
    ok = HandSegmentation(np.ones((2, 2), bool), np.ones((2, 2), bool), True, 0.1, 0.3, 0.6)
    plate = HandSegmentation(np.ones((2, 2), bool), np.ones((2, 2), bool), False, 0.1, 0.9, 1.0, "plate", "x")
    rates = failure_rates([ok, ok, ok, plate])
    assert rates == {"no-hand": 0.0, "plate": 0.25, "cut-at-frame": 0.0, "any": 0.25}
