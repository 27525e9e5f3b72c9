"""The hand alone (boneage.geometry.masking): the numpy and torch versions agree, the background is gone, the
hand's intensities are stretched, and a geometry with ``mask = "hand"`` prepares exactly that."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from boneage.config import Geometry, GeometryError, ModelConfig
from boneage.geometry.masking import dilate, dilate_batch, isolate_hand, isolate_hand_batch, pack_masks

pytestmark = pytest.mark.unit


def _hand_on_plate(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = np.full((60, 60), 0.2, np.float32) + rng.normal(0, 0.01, (60, 60)).astype(np.float32)  # a plate
    mask = np.zeros((60, 60), bool)
    mask[15:50, 20:40] = True
    img[mask] = 0.5 + 0.4 * rng.random(int(mask.sum())).astype(np.float32)
    img[2:6, 2:8] = 1.0  # a burnt-in letter in the background
    return np.clip(img, 0, 1), mask


def test_background_outside_the_dilated_mask_is_zero_and_the_hand_is_stretched():
    img, mask = _hand_on_plate()
    out = isolate_hand(img, mask, 2)
    keep = dilate(mask, 2)
    assert keep.sum() == (35 + 4) * (20 + 4)  # a square element grows a rectangle by 2 px each way
    assert (out[~keep] == 0).all()
    assert out[2:6, 2:8].max() == 0  # the letter is gone
    assert np.percentile(out[keep], 1) == pytest.approx(0.0, abs=1e-3)
    assert out[keep].max() == pytest.approx(1.0)
    # moving the background (another plate, another letter) does not change what is read
    other = img.copy()
    other[~keep] = 0.7
    np.testing.assert_array_equal(isolate_hand(other, mask, 2), out)


def test_torch_batch_version_equals_the_numpy_version_per_image():
    imgs, masks = zip(*(_hand_on_plate(s) for s in range(3)))
    masks = list(masks)
    masks[1] = np.roll(masks[1], 5, axis=1)
    dil = [0, 2, 3]
    want = np.stack([isolate_hand(i, m, d) for i, m, d in zip(imgs, masks, dil)])
    got = isolate_hand_batch(torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(masks)),
                             torch.tensor(dil)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)
    grown = dilate_batch(torch.from_numpy(np.stack(masks)), torch.tensor(dil)).numpy()
    for g, m, d in zip(grown, masks, dil):
        np.testing.assert_array_equal(g, dilate(m, d))


def test_an_empty_mask_reads_nothing():
    img, _ = _hand_on_plate()
    assert not isolate_hand(img, np.zeros_like(img, bool), 2).any()
    out = isolate_hand_batch(torch.from_numpy(img[None]), torch.zeros((1, 60, 60), dtype=torch.bool),
                             torch.tensor([2]))
    assert not out.any()


def test_packed_masks_keep_both_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[1:3, 1:3] = True
    b[1, 1] = True
    packed = pack_masks(a, b)
    np.testing.assert_array_equal((packed & 1) > 0, a)
    np.testing.assert_array_equal((packed & 2) > 0, b)


def test_the_mask_is_part_of_the_geometry_and_old_configs_read_the_whole_film():
    assert ModelConfig().geometry.mask == "none"
    g = ModelConfig(hand_mask="hand", mask_dilation=3).geometry
    assert (g.mask, g.mask_dilation) == ("hand", 3)
    assert g.key().endswith("-mask3") and "mask" not in Geometry().key()
    with pytest.raises(GeometryError, match="none, hand"):
        Geometry(mask="soft")


def _film_with_hand(size: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A 12-bit-like film: a grey plate, a hand (palm and five fingers, bone brighter than soft tissue)."""
    rng = np.random.default_rng(seed)
    film = np.full((size, size), 900.0, np.float32) + rng.normal(0, 15, (size, size)).astype(np.float32)
    hand = np.zeros((size, size), bool)
    s = size / 100
    hand[int(55 * s):int(90 * s), int(30 * s):int(70 * s)] = True  # palm
    for k, x in enumerate((30, 39, 48, 57, 66)):
        top = 20 + 6 * abs(k - 2) if k else 50
        hand[int(top * s):int(56 * s), int(x * s):int((x + 5) * s)] = True
    film[hand] = 1800 + 900 * rng.random(int(hand.sum())).astype(np.float32)
    return film, hand


@pytest.mark.parametrize("intensity", ["hand", "film"])
def test_with_the_hands_own_scale_nothing_outside_the_outline_moves_the_pixels(intensity):
    from boneage.geometry.preprocess import prepare

    film, hand = _film_with_hand()
    g = Geometry(100, mask="hand", mask_dilation=2, intensity=intensity)
    before = prepare(film, g)
    assert before.hand.ok, before.hand.reason
    # the surround changed twice over: blacked out (the background level moves from the plate to 0), and a
    # uniform bright bar along two edges (a letterbox an export adds); 12 film px = 6 base px off the hand
    far = ~ndimage.binary_dilation(hand, iterations=12)
    other = film.copy()
    other[far] = 0.0
    other[:, :6] = other[:, -6:] = 4000.0
    after = prepare(other, g)
    np.testing.assert_array_equal(after.hand.mask, before.hand.mask)
    if intensity == "hand":
        np.testing.assert_allclose(after.image, before.image, atol=1e-6)
    else:  # the film scale is the surround's: the same change moves the hand's pixels (why "hand" exists)
        assert np.abs(after.image - before.image).max() > 0.01


def test_the_hands_own_scale_is_part_of_the_geometry_and_trims_no_bars_unless_asked():
    assert ModelConfig().geometry.intensity == "film"
    g = ModelConfig(hand_mask="hand", hand_intensity="hand", framing="hand").geometry
    assert g.intensity == "hand" and g.key().endswith("-handscale") and not g.trims
    assert Geometry(intensity="hand", trim_bars=True).trims
    assert Geometry(framing="hand").trims  # the film scale keeps its old rule
    with pytest.raises(GeometryError, match="film, hand"):
        Geometry(intensity="bone")


def test_a_training_cache_on_the_hands_own_scale_keeps_the_film_unclipped():
    """Without a mask (how training keeps its films, masks drawn per batch) the values run min to max,
    so the batch's stretch inside its mask equals what every door prepares."""
    from boneage.geometry.preprocess import prepare

    film, _ = _film_with_hand(100)
    g = Geometry(100, mask="hand", mask_dilation=2, intensity="hand")
    served = prepare(film, g)
    cached = prepare(film, Geometry(100, mask="none", intensity="hand")).image
    assert cached.min() == 0.0 and cached.max() == pytest.approx(1.0)
    x = torch.from_numpy(cached)[None]
    again = isolate_hand_batch(x, torch.from_numpy(served.hand.mask)[None], torch.tensor([2]))[0].numpy()
    np.testing.assert_allclose(again, served.image, atol=1e-5)
