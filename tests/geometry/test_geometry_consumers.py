"""Consumers of a model's geometry that have a fixed geometry of their own read it explicitly."""
from __future__ import annotations

import pytest

import numpy as np

from boneage.geometry.framing import Geometry, fit_to_base
from boneage.io.imaging import read_radiograph
from boneage.geometry.polarity import REFERENCE_SIZE, at_reference_size, default_check
from boneage.geometry.preprocess import prepare

pytestmark = pytest.mark.integration


def test_negative_image_check_reads_every_base_size_at_its_own_reference_size(data_dir):
    arr = read_radiograph(data_dir / "test" / "4361.png")  # a native official test radiograph
    check = default_check()
    big = fit_to_base(arr, Geometry(512, "letterbox"))
    assert big.shape == (512, 512)
    small = at_reference_size(big)
    assert small.shape == (REFERENCE_SIZE, REFERENCE_SIZE)
    assert check.probability(big) == check.probability(small)  # same reading whatever the base size
    negative = big.max() + big.min() - big
    assert not check.is_inverted(big) and check.is_inverted(negative)
    # and the whole preparation at 512 px: the negative is turned back, the normal film is left alone
    assert not prepare(arr, Geometry(512, "letterbox")).negative
    flipped = prepare(arr.max() + arr.min() - arr, Geometry(512, "letterbox"))
    assert flipped.negative and flipped.image.shape == (512, 512)
