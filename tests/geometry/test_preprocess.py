"""One preprocessing path: real training and native test images to the 100x100 [0, 1] geometry the model saw."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from boneage.io.imaging import read_radiograph
from boneage.geometry.preprocess import (BASE_SIZE, normalize_intensity, preprocess_array, random_affine, squeeze_to_base,
                                to_model_input, to_uint8)

pytestmark = pytest.mark.integration


def _check_normalised(x: np.ndarray) -> None:
    assert x.shape == (BASE_SIZE, BASE_SIZE)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.min() == 0.0 and x.max() == 1.0
    # background (the histogram mode) maps to ~0: a large share of the picture is near black
    assert (x <= 0.05).mean() > 0.3
    # dense bone (99.5th percentile and up) maps to 1
    assert (x >= 0.999).mean() >= 0.004
    assert np.percentile(x, 99.5) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("case", ["1378", "1377", "1380"])
def test_real_training_image(data_dir, case):
    raw = read_radiograph(data_dir / "train" / f"{case}.png")
    assert raw.shape == (BASE_SIZE, BASE_SIZE)
    _check_normalised(preprocess_array(raw))


@pytest.mark.parametrize("case", ["4362", "4360", "4364"])  # black, dark grey and grey-plate backgrounds
def test_real_native_test_image(data_dir, case):
    raw = read_radiograph(data_dir / "test" / f"{case}.png")
    assert raw.shape[0] > 400 and raw.shape[1] > 400
    x = preprocess_array(raw)
    _check_normalised(x)
    # bone (the brightest pixels of the source) ends up bright, background (the mode) ends up dark
    small = squeeze_to_base(raw)
    assert x[small >= np.percentile(small, 99.5)].min() == 1.0
    hist, edges = np.histogram(small, bins=64)
    mode_mask = (small >= edges[np.argmax(hist)]) & (small <= edges[np.argmax(hist) + 1])
    assert np.median(x[mode_mask]) < 0.05


def test_grey_background_is_mapped_to_black(data_dir):
    """4364 lies on a grey plate (the histogram mode is mid-grey): after preprocessing the plate is near 0."""
    raw = squeeze_to_base(read_radiograph(data_dir / "test" / "4364.png"))
    counts = np.bincount(raw.astype(int).ravel(), minlength=256)
    plate_level = int(np.argmax(counts[1:])) + 1  # most common non-black grey value
    assert plate_level > 100
    plate = np.abs(raw - plate_level) <= 8
    assert plate.mean() > 0.3
    x = normalize_intensity(raw)
    assert np.median(x[plate]) < 0.05
    assert x[raw >= np.percentile(raw, 99.5)].min() == 1.0


def test_inverted_polarity_flip_keeps_normal_images(data_dir):
    """The polarity check must not flip ordinary (dark background) radiographs."""
    raw = read_radiograph(data_dir / "train" / "1378.png")
    x = preprocess_array(raw)
    big = squeeze_to_base(raw)
    assert np.corrcoef(x.ravel(), big.ravel())[0, 1] > 0.5  # same polarity as the source


@pytest.mark.parametrize("case", ["train/1377", "test/4362"])
def test_inverted_polarity_is_flipped(data_dir, case):
    raw = read_radiograph(data_dir / f"{case}.png")
    normal = preprocess_array(raw)
    inverted = preprocess_array(255.0 - raw)  # white background, dark bone: a negative of the same hand
    assert np.corrcoef(normal.ravel(), inverted.ravel())[0, 1] > 0.9


def test_preprocess_is_invariant_to_affine_intensity_scaling(data_dir):
    raw = read_radiograph(data_dir / "test" / "4362.png")
    np.testing.assert_allclose(preprocess_array(raw * 257.0 + 1000.0), preprocess_array(raw), atol=1e-4)


def test_squeeze_uses_nearest_neighbour(data_dir):
    raw = read_radiograph(data_dir / "test" / "4362.png")
    small = squeeze_to_base(raw)
    assert small.shape == (BASE_SIZE, BASE_SIZE) and small.dtype == np.float32
    assert set(np.unique(small)) <= set(np.unique(raw))  # no new (interpolated) values
    # and it is exactly Pillow's NEAREST resize, the geometry the training images were made with
    expected = np.asarray(Image.fromarray(raw.astype(np.uint8)).resize((BASE_SIZE, BASE_SIZE), Image.NEAREST))
    np.testing.assert_array_equal(small, expected.astype(np.float32))
    # a smoothing resize would have produced values that are not in the source
    smooth = np.asarray(Image.fromarray(raw, mode="F").resize((BASE_SIZE, BASE_SIZE), Image.BILINEAR))
    assert not set(np.unique(smooth)) <= set(np.unique(raw))


def test_squeeze_ignores_aspect_ratio_and_keeps_base_images():
    wide = np.arange(30 * 250, dtype=np.float32).reshape(30, 250)
    assert squeeze_to_base(wide).shape == (BASE_SIZE, BASE_SIZE)
    base = np.random.default_rng(0).random((BASE_SIZE, BASE_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(squeeze_to_base(base), base)


def test_flat_and_non_finite_images():
    np.testing.assert_array_equal(normalize_intensity(np.full((50, 50), 7.0)), np.zeros((50, 50), np.float32))
    arr = np.random.default_rng(1).random((60, 60)).astype(np.float32) * 100
    arr[0, 0], arr[1, 1], arr[2, 2] = np.nan, np.inf, -np.inf
    x = preprocess_array(arr)
    assert np.isfinite(x).all() and 0 <= x.min() and x.max() <= 1


def test_preprocess_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        preprocess_array(np.zeros((10, 10, 3), np.float32))


def test_to_uint8_round_trip():
    x = np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]], np.float32)
    np.testing.assert_array_equal(to_uint8(x), np.array([[0, 0, 128, 255, 255]], np.uint8))


def test_to_model_input_shapes_and_range(data_dir):
    imgs = np.stack([to_uint8(preprocess_array(read_radiograph(data_dir / "train" / f"{i}.png")))
                     for i in (1377, 1378, 1379)])
    batch = torch.from_numpy(imgs)
    for size in (64, 128):
        x = to_model_input(batch, size)
        assert x.shape == (3, 1, size, size) and x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
    # uint8 and float [0, 1] inputs give the same tensor
    x_u8 = to_model_input(batch, 100)
    x_f = to_model_input(batch.float() / 255.0, 100)
    torch.testing.assert_close(x_u8, x_f)
    # at the base size nothing is resampled: just centred around 0
    torch.testing.assert_close(x_u8[:, 0], batch.float() / 255.0 * 2 - 1)


def test_to_model_input_with_affine():
    batch = torch.rand(4, BASE_SIZE, BASE_SIZE)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3)
    x = to_model_input(batch, 64, identity)
    assert x.shape == (4, 1, 64, 64)
    torch.testing.assert_close(x, to_model_input(batch, 64), atol=1e-4, rtol=0)  # same interpolation path
    theta = random_affine(4, 15.0, 0.1, 0.1, torch.Generator().manual_seed(0), flip=True)
    assert theta.shape == (4, 2, 3)
    y = to_model_input(batch, 64, theta)
    assert y.shape == (4, 1, 64, 64) and not torch.allclose(y, x)
    theta2 = random_affine(4, 15.0, 0.1, 0.1, torch.Generator().manual_seed(0), flip=True)
    torch.testing.assert_close(theta, theta2)  # seeded: reproducible augmentation
