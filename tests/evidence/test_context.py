"""The context benchmark's variants (boneage.evidence.context) change only what lies outside the hand, and a
geometry that reads the hand alone (mask "hand") prepares nearly the same model input whatever they change."""
from __future__ import annotations

import numpy as np
import pytest

from boneage.config import Geometry
from boneage.evidence.context import VARIANTS, context_changes, protected_region, summarise
from boneage.geometry.preprocess import prepare
from boneage.io.imaging import read_radiograph

pytestmark = pytest.mark.integration

FILMS = ("4360", "4403", "4549")  # a plain film, a hand on a framed plate, a film with markers
WHOLE = Geometry(100, trim_bars=True, laterality="left")
HAND = Geometry(100, trim_bars=True, laterality="left", mask="hand", mask_dilation=2)


@pytest.fixture(scope="module")
def films(data_dir):
    return [read_radiograph(data_dir / "test" / f"{i}.png").astype(np.float32) for i in FILMS]


def test_variants_change_only_what_lies_outside_the_hand(films):
    for film in films:
        region, why = protected_region(film)
        assert not why and 0.1 < region.mean() < 0.8
        for name, (_, fn) in VARIANTS.items():
            changed = fn(film, region, np.random.default_rng(0))
            assert changed.shape == film.shape
            np.testing.assert_array_equal(changed[region], film[region], err_msg=name)
            assert (changed[~region] != film[~region]).mean() > 0.001, name


def test_the_hand_alone_hardly_changes_when_the_background_does(films):
    for film in films:
        region, _ = protected_region(film)
        whole, hand = prepare(film, WHOLE).image, prepare(film, HAND).image
        assert (hand == 0).mean() > (whole == 0).mean()  # the background is gone
        d_hand, d_whole = [], []
        for name, (_, fn) in VARIANTS.items():
            changed = fn(film, region, np.random.default_rng(0))
            d_hand.append(np.abs(prepare(changed, HAND).image - hand).mean())
            d_whole.append(np.abs(prepare(changed, WHOLE).image - whole).mean())
        # the hand alone moves less than the whole film under every variant but the plate edge (a plate edge
        # joined to the forearm at the film's edge can join the outline), and on average by a third or less
        assert all(h < w for h, w, name in zip(d_hand, d_whole, VARIANTS) if name != "plate_edge"), (d_hand, d_whole)
        assert np.mean(d_hand) < np.mean(d_whole) / 3, (d_hand, d_whole)


def test_context_changes_read_each_variant_and_leave_out_films_without_a_hand(films):
    calls = []

    def predict(arrays, male):
        calls.append(len(arrays))
        return np.array([float(np.mean(a)) for a in arrays])

    blank = np.zeros((200, 150), np.float32)
    changes, left_out = context_changes(predict, [films[0], blank], np.array([True, False]), ["4360", "blank"])
    assert set(changes) == set(VARIANTS) and all(len(d) == 1 for d in changes.values())
    assert len(left_out) == 1 and left_out[0].startswith("blank: no hand")
    assert calls == [1] * (1 + len(VARIANTS))  # the original once, then each variant once
    s = summarise(changes, left_out)
    assert [st.name for st in s.stats] == list(VARIANTS) and s.left_out == left_out
    assert changes["blackout"][0] < 0  # blacking out lowers a film's mean
