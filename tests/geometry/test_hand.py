"""Hand segmentation (boneage.geometry.hand.segment_hand) on what real films carry: plates, frames joined to the
hand, burnt-in letters brighter than the hand; and on real official and training radiographs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage.config import Geometry
from boneage.geometry.hand import FAILURES, hand_mask, segment_hand
from boneage.geometry.preprocess import prepare
from boneage.io.imaging import read_radiograph

pytestmark = pytest.mark.integration

GEOMETRY = Geometry(100, trim_bars=True, laterality="left")
# official films with a plate and a frame joined to the hand (4403, 4549, 4551), a faint hand beside bright
# markers (4444, 4531, 4555), a bright plate (4409, 4504) and plain films
OFFICIAL = ("4360", "4403", "4409", "4444", "4504", "4531", "4549", "4551", "4555", "4380")


def _hand(shape=(100, 100), level=0.6) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic hand: a palm, five fingers and a forearm leaving at the bottom."""
    img = np.zeros(shape, np.float32)
    img[45:80, 30:70] = level  # palm
    for x in (30, 39, 48, 57, 65):
        img[15 if x != 65 else 40:45, x:x + 5] = level  # fingers, the thumb shorter
    img[80:, 38:62] = level  # forearm
    return img, img > 0


def _iou(a, b) -> float:
    return (a & b).sum() / (a | b).sum()


def test_a_plain_synthetic_hand_is_found():
    img, truth = _hand()
    seg = segment_hand(img)
    assert seg.ok and not seg.failure
    assert _iou(seg.mask, truth) > 0.97  # the 3x3 median filter rounds the fingertips' corners


def test_a_frame_along_the_edges_joined_to_the_hand_is_cut_off():
    img, truth = _hand()
    img[:2, :] = img[:, :2] = img[:, -2:] = 0.9  # a bright frame touching the forearm's row at the bottom edge
    img[-2:, :] = 0.9
    seg = segment_hand(img)
    assert seg.ok
    inner = np.zeros_like(truth)
    inner[3:-3, 3:-3] = True
    assert (seg.mask[inner] == truth[inner]).mean() > 0.99
    assert not seg.mask[0].any() and not seg.mask[:, 0].any()


def test_a_letter_brighter_than_a_faint_hand_is_not_taken_for_it():
    img, truth = _hand(level=0.12)
    img[5:15, 80:90] = 1.0  # a burnt-in "L", far brighter than the hand
    seg = segment_hand(img)
    assert seg.ok
    assert _iou(seg.mask, truth) > 0.97 and not seg.mask[5:15, 80:90].any()


def test_a_hand_on_a_plate_is_found_inside_the_plate():
    img, truth = _hand(level=0.8)
    plate = np.zeros_like(truth)
    plate[8:96, 12:88] = True
    img = np.where(plate & ~truth, 0.35, img).astype(np.float32)
    seg = segment_hand(img)
    assert seg.ok
    assert (seg.mask == truth)[plate].mean() > 0.97


def test_nothing_or_only_a_plate_is_a_failure_with_the_reason():
    empty = segment_hand(np.zeros((100, 100), np.float32))
    assert not empty.ok and empty.failure == "no-hand" and "no hand" in empty.reason and not empty.mask.any()
    flat = np.zeros((100, 100), np.float32)
    flat[5:95, 5:95] = 0.5
    seg = segment_hand(flat)
    assert not seg.ok and seg.failure in FAILURES and seg.reason


def test_real_films_are_segmented_as_hands(data_dir):
    areas = []
    for cid in OFFICIAL:
        seg = segment_hand(prepare(read_radiograph(data_dir / "test" / f"{cid}.png"), GEOMETRY).image)
        assert seg.ok, (cid, seg.reason)
        areas.append(seg.area)
        # the second mask is the next threshold's: another plausible outline of the same hand
        assert (seg.tight & seg.mask).sum() / (seg.tight | seg.mask).sum() > 0.7
    assert 0.15 < np.median(areas) < 0.5
    ids = pd.read_csv(data_dir / "train.csv")["id"].astype(str).sample(40, random_state=1)
    ok = [segment_hand(prepare(read_radiograph(data_dir / "train" / f"{i}.png"), GEOMETRY).image).ok for i in ids]
    assert np.mean(ok) >= 0.95
    assert hand_mask(np.zeros((50, 50), np.uint8)).shape == (50, 50)
