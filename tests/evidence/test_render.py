"""Rendering helpers (boneage.evidence.render): the hand's outline drawn over a heatmap."""
from __future__ import annotations

import numpy as np
import pytest

from boneage.evidence.render import draw_outline, overlay

pytestmark = pytest.mark.unit


def test_the_outline_is_the_masks_boundary_at_the_display_size():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:7] = True
    rgb = overlay(np.zeros((10, 10), np.float32), np.zeros((10, 10), np.float32), 0.0)
    big = np.repeat(np.repeat(rgb, 3, 0), 3, 1)  # shown 3x larger, as the pages enlarge the model input
    out = draw_outline(big, mask, (0, 255, 0))
    green = (out == (0, 255, 0)).all(-1)
    up = np.repeat(np.repeat(mask, 3, 0), 3, 1)
    assert green[up].any() and not green[~up].any()  # drawn on the hand's edge, never outside it
    assert not green[8:20, 12:18].any()  # the inside stays as it was
    assert green.sum() == 2 * (18 + 12) - 4  # one display pixel wide around the 18 x 12 rectangle
    np.testing.assert_array_equal(out[~green], big[~green])
    assert (big == rgb[0, 0]).all()  # the input is not drawn on
