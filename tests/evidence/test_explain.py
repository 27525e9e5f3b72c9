"""Attribution maps, activations and the sex-flip check on real radiographs and real networks.

Two networks: EfficientNet-Lite0 with its ImageNet weights (always available, seeded heads: enough for
shapes, coordinates and completeness) and the shipped model in artifacts/model (committed: its absence
fails). Attribution settings are
reduced where a test checks shapes only, so the file stays well under a minute on two CPU cores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.evidence import explain as E
from boneage.evidence import render
from boneage.config import MODEL_DIR, ModelConfig
from boneage.training.image_cache import load_case_image
from boneage.geometry.hand import hand_mask
from boneage.nn.model import BoneAgeNet
from boneage.geometry.preprocess import to_uint8

pytestmark = pytest.mark.integration

N_IMAGES = 5
LIGHT = {  # cheap settings for the shape / range checks (defaults are exercised further down)
    "gradcam": {},
    "saliency": {},
    "smoothgrad": {"nt_samples": 4},
    "integrated_gradients": {"n_steps": 8, "chunks": 2, "tolerance": 0.0},
    "occlusion": {"window": 25},
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a 2-core machine shared with a training run, two spinning OpenMP threads
    make each backward pass 30-100x slower (measured); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cases(data_dir):
    """Five training cases spread over the table (sorted by id): preprocessed uint8 images + sex."""
    table = pd.read_csv(data_dir / "train.csv").sort_values("id").reset_index(drop=True)
    pick = np.linspace(0, len(table) - 1, N_IMAGES).round().astype(int)
    rows = table.iloc[pick]
    images = np.stack([to_uint8(load_case_image(data_dir / "train", str(i))) for i in rows["id"]])
    males = rows["male"].astype(str).str.lower().eq("true").to_numpy()
    return images, males


@pytest.fixture(scope="module")
def imagenet_model():
    torch.manual_seed(0)  # the sex embedding and heads are random: make them the same every run
    return BoneAgeNet(ModelConfig(input_size=128), pretrained=True).eval()


@pytest.fixture(scope="module")
def trained_model():
    if not (MODEL_DIR / "model.pt").is_file():
        pytest.fail(f"shipped model missing: {MODEL_DIR / 'model.pt'} does not exist "
                    "(it is committed; retrain with `python -m pipelines.train`)", pytrace=False)
    import boneage

    return boneage.load_predictor().model


@pytest.fixture(scope="module", params=["imagenet", "trained"])
def model(request):
    return request.getfixturevalue(f"{request.param}_model")


# -- every method --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(E.METHODS))
def test_every_method_gives_a_unit_range_map_on_the_base_grid(model, cases, method):
    images, males = cases
    img = images[0]
    h = E.attribute(model, img, bool(males[0]), method, **LIGHT[method])
    assert h.shape == (100, 100) and h.dtype == np.float32
    assert np.isfinite(h).all() and h.min() >= 0.0 and h.max() <= 1.0
    assert h.max() == pytest.approx(1.0) and h.std() > 1e-3  # scaled to its maximum, not constant
    # a float image in [0, 1] is the same input as its uint8 version
    h_float = E.attribute(model, img.astype(np.float32) / 255, bool(males[0]), method, **LIGHT[method])
    np.testing.assert_allclose(h_float, h, atol=1e-3)


def test_raw_attributions_are_signed_and_on_the_base_grid(imagenet_model, cases):
    images, males = cases
    raw = E.attribute(imagenet_model, images[1], bool(males[1]), "saliency", normalize=False)
    assert raw.shape == (100, 100) and (raw < 0).any() and (raw > 0).any()
    # the normalised map is |raw| scaled: same ordering of pixels
    h = E.attribute(imagenet_model, images[1], bool(males[1]), "saliency", clip_percentile=None)
    np.testing.assert_allclose(h, np.abs(raw) / np.abs(raw).max(), atol=1e-5)


def test_other_targets_and_bad_arguments(imagenet_model, cases):
    images, males = cases
    for target in ("scale", "stage:Adult", "Child"):
        h = E.attribute(imagenet_model, images[0], bool(males[0]), "gradcam", target=target)
        assert h.shape == (100, 100)
    with pytest.raises(ValueError, match="unknown method"):
        E.attribute(imagenet_model, images[0], True, "lime")
    with pytest.raises(ValueError, match="unknown target"):
        E.attribute(imagenet_model, images[0], True, "saliency", target="height")
    with pytest.raises(TypeError, match="unused options"):
        E.attribute(imagenet_model, images[0], True, "saliency", nt_samples=3)


# -- coordinates -----------------------------------------------------------------------------------
def test_input_space_maps_stay_where_the_image_differs_from_black(imagenet_model):
    """IG and occlusion of an image that is black except one off-centre patch are zero far from the patch:
    proves the maps are in the base image's coordinates (no transpose, flip or offset)."""
    img = np.zeros((100, 100), np.uint8)
    img[10:30, 55:85] = 200
    patch = np.zeros((100, 100), bool)
    patch[10:30, 55:85] = True
    ig = E.attribute(imagenet_model, img, True, "integrated_gradients", normalize=False, n_steps=8, tolerance=0.0)
    assert np.abs(ig[~patch]).max() == 0.0 and np.abs(ig[patch]).sum() > 0
    occ = E.attribute(imagenet_model, img, True, "occlusion", normalize=False)  # default window 12, stride 6
    near = np.zeros((100, 100), bool)
    near[max(0, 10 - 12):30 + 12, 55 - 12:85 + 12] = True
    # outside: only float noise between batched and single forward passes; every patch pixel is covered
    assert np.abs(occ[~near]).max() < 1e-3 * np.abs(occ).max()
    assert np.mean(np.abs(occ[patch]) > 1e-3 * np.abs(occ).max()) > 0.9


def test_occlusion_reports_progress_and_matches_the_map_without_it(imagenet_model, cases):
    img = cases[0][0]
    seen: list[float] = []
    with_bar = E.attribute(imagenet_model, img, True, "occlusion", normalize=False, window=25, stride=25,
                           perturbations_per_eval=4, progress=seen.append)
    # 16 windows in batches of 4 plus the reference pass: 5 forward calls, each reported
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert sorted(seen) == seen and len(set(seen)) >= 6, seen
    assert seen[1] == pytest.approx(1 / 5)
    plain = E.attribute(imagenet_model, img, True, "occlusion", normalize=False, window=25, stride=25,
                        perturbations_per_eval=4)
    np.testing.assert_allclose(with_bar, plain, atol=1e-4)


# -- Grad-CAM --------------------------------------------------------------------------------------
def test_gradcam_layers_exist_and_default_is_stage4_at_1_16(imagenet_model, cases):
    layers = E.gradcam_layers(imagenet_model)
    modules = dict(imagenet_model.named_modules())
    assert {"Last block (stage 7)", "Head conv", "Stage 6", "Stage 5", "Stage 4"} <= set(layers)
    assert layers["Last block (stage 7)"] == "backbone._blocks.15" and layers["Head conv"] == "backbone._bn1"
    assert all(path in modules for path in layers.values())
    assert next(iter(layers.values())) == layers["Stage 4"] == "backbone._blocks.7"  # the default
    assert layers["Stage 5"] == "backbone._blocks.10"
    acts = E.layer_activations(imagenet_model, cases[0][0], True, layers["Stage 4"])
    assert acts.shape[1:] == (128 // 16, 128 // 16)
    # labels and module paths are both accepted
    a = E.attribute(imagenet_model, cases[0][0], True, "gradcam", layer="Stage 4")
    b = E.attribute(imagenet_model, cases[0][0], True, "gradcam", layer=layers["Stage 4"])
    np.testing.assert_array_equal(a, b)


def test_layer_lists_for_the_smallcnn_baseline(cases):
    torch.manual_seed(0)
    small = BoneAgeNet(ModelConfig(backbone="smallcnn", input_size=64), pretrained=False).eval()
    layers = E.gradcam_layers(small)
    assert list(layers)[0] == "Block 5 (1/16)" and len(E.activation_layers(small)) == 5
    calls: list[float] = []
    h = E.attribute(small, cases[0][0], True, "gradcam", progress=calls.append)
    assert h.shape == (100, 100) and 0 <= h.min() and h.max() <= 1 and calls == [0.0, 1.0]
    assert E.layer_activations(small, cases[0][0], True, "Block 5").shape == (32, 4, 4)


def test_gradcam_heat_concentrates_on_the_hand(trained_model, cases):
    images, males = cases
    on, area = [], []
    for img, male in zip(images, males):
        mask = hand_mask(img)
        on.append(heat_on_hand(E.attribute(trained_model, img, bool(male), "gradcam"), mask))
        area.append(mask.mean())
    on, area = np.array(on), np.array(area)
    assert (on > area).sum() >= len(on) - 1, f"heat on hand {on.round(2)} vs hand area {area.round(2)}"
    assert on.mean() > 1.3 * area.mean(), f"heat on hand {on.round(2)} vs hand area {area.round(2)}"


def test_average_gradcam_is_the_mean_of_single_maps(imagenet_model, cases):
    images, males = cases
    avg = E.average_gradcam(imagenet_model, images[:3], males[:3], batch_size=2)
    singles = [E.attribute(imagenet_model, im, bool(m), "gradcam") for im, m in zip(images[:3], males[:3])]
    assert avg.shape == (100, 100) and avg.dtype == np.float32 and 0 <= avg.min() and avg.max() <= 1
    np.testing.assert_allclose(avg, np.mean(singles, axis=0), atol=1e-4)


# -- integrated gradients ------------------------------------------------------------------------
def test_integrated_gradients_completeness(model, cases):
    """Sum of attributions = f(image) - f(black image) within 10%, at the default settings."""
    images, males = cases
    fn = E._Explained(model)
    with torch.no_grad():
        x = torch.as_tensor(images).float()[:, None] / 255
        m = torch.as_tensor(males.astype(np.int64))
        diff = (fn(x, m) - fn(torch.zeros_like(x), m))[:, 0].numpy()
    k = int(np.argmax(np.abs(diff)))  # the case whose prediction moves most away from the black image
    fractions: list[float] = []
    raw = E.attribute(model, images[k], bool(males[k]), "integrated_gradients", normalize=False,
                      progress=fractions.append)
    assert raw.shape == (100, 100) and raw.dtype == np.float32
    assert raw.sum() == pytest.approx(float(diff[k]), rel=0.10)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and np.all(np.diff(fractions) >= 0) and len(fractions) >= 4


# -- activations, sex flip -------------------------------------------------------------------------
def test_layer_activations_shapes_and_order(imagenet_model, cases):
    layers = E.activation_layers(imagenet_model)
    assert list(layers)[0] == "Stem" and list(layers)[-1] == "Head conv"
    assert [f"Stage {k}" for k in range(2, 8)] == [k for k in layers if k.startswith("Stage")]
    img = cases[0][0]
    expected = {"Stem": (32, 64, 64), "Stage 5": (32, 8, 8), "Head conv": (16, 4, 4)}
    for label, shape in expected.items():
        maps, channels = E.layer_activations(imagenet_model, img, True, layers[label], max_maps=shape[0],
                                             return_channels=True)
        assert maps.shape == shape and maps.dtype == np.float32 and len(set(channels.tolist())) == shape[0]
        means = maps.mean(axis=(1, 2))
        assert np.all(np.diff(means) <= 1e-6)  # most active first
    norm = E.layer_activations(imagenet_model, img, True, "Stage 3", normalize=True)
    assert norm.shape[0] == 32 and norm.min() >= 0 and norm.max() <= 1


def test_sex_flip_is_the_reading_every_door_gives(data_dir):
    """The page's "as given" is the prediction shown beside it: official film 4360 (nine phase views) and 4388
    (the laterality check unsure, both sides blended) read through the predictor, views and blend included,
    and with test-time augmentation when it is on. The first view alone reads differently."""
    from boneage.io.imaging import read_radiograph
    from boneage.inference.predictor import load_predictor

    for tta in (False, True):
        p = load_predictor(tta=tta)
        preps = [p.prepare(read_radiograph(data_dir / "test" / f"{i}.png")) for i in ("4360", "4388")]
        for prep, male in zip(preps, (True, False)):
            assert prep.extra_views is not None and len(prep.extra_views) == 8
            res = E.sex_flip(p, prep.image, male, prep.extra_views)
            given = p.read_prepared([prep], np.array([male]))
            other = p.read_prepared([prep], np.array([not male])).age[0]
            assert res["age_as_given"] == pytest.approx(float(given.age[0]), abs=1e-3)
            assert res["age_flipped"] == pytest.approx(float(other), abs=1e-3)
            assert res["difference"] == pytest.approx(res["age_flipped"] - res["age_as_given"])
            assert res["male_as_given"] is male
            assert abs(res["difference"]) > 0.5  # the sex input does move this network's reading
            first_view = E.sex_flip(p, prep.image, male)
            assert abs(first_view["age_as_given"] - res["age_as_given"]) > 0.05  # the views are part of the reading
        assert p.read_prepared(preps[1:], np.array([False])).other_weight[0] >= 0.01  # 4388 is blended


def heat_on_hand(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's mass inside ``mask`` (0 when the map is empty)."""
    h = np.maximum(np.asarray(heatmap, np.float64), 0)
    total = h.sum()
    return float(h[np.asarray(mask, bool)].sum() / total) if total > 0 else 0.0


# -- hand mask, overlay ----------------------------------------------------------------------------
def test_hand_mask_on_real_and_synthetic_images(cases):
    for img in cases[0]:
        share = hand_mask(img).mean()
        assert 0.05 < share < 0.6
    img = np.zeros((100, 100), np.uint8)
    img[20:90, 30:70] = 180  # "hand"
    img[5:9, 5:9] = 255  # a marker letter: smaller component, dropped
    img[50:55, 45:50] = 0  # a dark hole inside the hand: filled
    mask = hand_mask(img)
    expected = np.zeros((100, 100), bool)
    expected[20:90, 30:70] = True
    for y, x in ((20, 30), (20, 69), (89, 30), (89, 69)):
        expected[y, x] = False  # the segmentation's 3x3 median filter takes the rectangle's corner pixels
    np.testing.assert_array_equal(mask, expected)
    assert heat_on_hand(np.ones((100, 100)), mask) == pytest.approx(expected.mean())
    assert heat_on_hand(expected.astype(float), mask) == pytest.approx(1.0)
    assert heat_on_hand(np.zeros((100, 100)), mask) == 0.0


def test_overlay(cases):
    img = cases[0][0]
    heat = np.linspace(0, 1, 100 * 100, dtype=np.float32).reshape(100, 100)
    for cmap in ("jet", "inferno"):
        out = render.overlay(img, heat, alpha=0.5, cmap=cmap)
        assert out.shape == (100, 100, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(render.overlay(img, heat, alpha=0.0), np.repeat(img[..., None], 3, axis=2))
    full = render.overlay(img, heat, alpha=1.0, cmap="jet")
    assert tuple(full[0, 0]) == (0, 0, 128) and tuple(full[-1, -1]) == (128, 0, 0)  # dark blue .. dark red
    assert render.overlay(img, heat[::2, ::2]).shape == (100, 100, 3)  # a coarser map is resized
    with pytest.raises(ValueError):
        render.overlay(img, heat, cmap="rainbow")


def test_activation_mosaic_lays_maps_out_in_a_grid():
    maps = np.stack([np.full((4, 4), v, np.float32) for v in (0.0, 0.5, 0.25)])
    out = render.activation_mosaic(maps, cols=2, cell=8, gap=2, cmap="gray")
    assert out.shape == (2 * 8 + 2, 2 * 8 + 2, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, 10]) == (128, 128, 128)  # maps 0 and 1, first row
    assert tuple(out[10, 0]) == (64, 64, 64)  # map 2 starts the second row
    assert tuple(out[0, 8]) == (255, 255, 255) and tuple(out[-1, -1]) == (255, 255, 255)  # gap, empty cell
