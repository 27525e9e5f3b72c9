"""Test-time augmentation by shifts: the image read on a 3x3 grid of moves by a third of the network's stride.

A strided network answers unevenly to where a bone falls on its stride grid, so the mean over moves spread
across the deepest stride is steadier than any one pass (measured by ``pipelines.precision``). These tests
check the contract: which passes a set holds, that a shift moves the image by what it says, that a TTA
reading is the mean of its passes, and that the phase views of a native film share the passes out (one pass
each) so a film costs 9 passes rather than 81.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from boneage.config import ModelConfig, model_config_from_dict
from boneage.io.imaging import read_radiograph
from boneage.nn.forward import (OUTPUT_STRIDE, TTA_ZOOMS, View, describe_tta, pass_inputs, run_network, shares_passes,
                               tta_views, view_ranks, view_theta, views)
from boneage.nn.model import BoneAgeNet
from boneage.inference.predictor import load_predictor
from boneage.geometry.preprocess import to_model_input

pytestmark = pytest.mark.integration


def test_the_sets_hold_the_plain_image_first_and_unknown_names_are_refused():
    shifts = tta_views("shifts")
    assert len(shifts) == 9 and shifts[0] == View()
    thirds = {-1 / 3, 0.0, 1 / 3}
    assert {v.shift for v in shifts} == {(dx, dy) for dx in thirds for dy in thirds}
    assert all(v.zoom == 1.0 and not v.mirror for v in shifts)
    assert [v.zoom for v in tta_views("zooms")] == list(TTA_ZOOMS)
    assert shares_passes("shifts") and not shares_passes("zooms")
    with pytest.raises(ValueError, match="unknown test-time augmentation 'spins'"):
        describe_tta("spins")
    with pytest.raises(ValueError, match="unknown test-time augmentation 'spins'"):
        tta_views("spins")
    with pytest.raises(ValueError, match="unknown tta_views 'spins' in the model config; one of zooms, shifts"):
        ModelConfig(tta_views="spins")
    # a config written before the setting existed means the zooms, the only set there was
    assert model_config_from_dict({"input_size": 160}).tta_views == "zooms"


def test_views_follow_the_config_and_mirror_every_pass():
    net = BoneAgeNet(ModelConfig(input_size=64, tta_views="shifts", mirror_invariant=True), pretrained=False)
    assert views(net, tta=False) == [View(), View(mirror=True)]
    both = views(net, tta=True)
    assert len(both) == 18 and sum(v.mirror for v in both) == 9
    # one pass per image: pass 10 is pass 1 of the nine; the plain pass is the plain input, not resampled
    images = torch.rand(2, 100, 100)
    one_each = pass_inputs(net, images, True, np.array([10, 0]))
    assert len(one_each) == 2  # the image and its mirror image
    every = pass_inputs(net, images, True)
    torch.testing.assert_close(one_each[0][0], every[1][0])
    torch.testing.assert_close(one_each[0][1], every[0][1])
    torch.testing.assert_close(one_each[1][1], every[9][1])
    torch.testing.assert_close(one_each[0][1], to_model_input(images, 64)[1])


@pytest.mark.parametrize("shift", [(1 / 3, 0.0), (0.0, -1 / 3)])
def test_a_shift_moves_the_image_by_its_share_of_the_output_stride(shift):
    img = torch.zeros(1, 100, 100)
    img[0, 40:44, 40:44] = 1.0  # a small bright square
    size = 160

    def centre(theta):
        x = to_model_input(img, size, theta)[0, 0]
        ys, xs = torch.nonzero(x > x.min() + 0.5 * (x.max() - x.min()), as_tuple=True)
        w = x[ys, xs] - x.min()
        return float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())

    (x0, y0), (x1, y1) = centre(None), centre(view_theta(1, View(shift=shift), size))
    assert x1 - x0 == pytest.approx(shift[0] * OUTPUT_STRIDE, abs=0.5)
    assert y1 - y0 == pytest.approx(shift[1] * OUTPUT_STRIDE, abs=0.5)
    assert view_theta(3, View(), size) is None  # the plain pass is not resampled


@pytest.fixture(scope="module")
def shifting(tmp_path_factory, repo_root):
    """The shipped network reading with the shifts and 3x3 phases, whatever the shipped config says."""
    d = tmp_path_factory.mktemp("shifts")
    for name in ("model.pt", "conformal.json"):
        shutil.copy(repo_root / "artifacts" / "model" / name, d / name)
    cfg = json.loads((repo_root / "artifacts" / "model" / "config.json").read_text())
    cfg["model"].update(tta_views="shifts", phases=3)
    cfg.setdefault("inference", {})["tta"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    return load_predictor(d)


def test_a_tta_reading_is_the_mean_of_its_passes_and_keeps_the_plain_features(shifting, train_image_path):
    net = shifting.model
    assert net.cfg.tta_views == "shifts"
    img = shifting.prepare(read_radiograph(train_image_path)).image
    imgs, male = np.stack([img, img[::-1].copy()]), np.array([True, False])
    tta = run_network(net, imgs, male, tta=True, return_features=True)
    plain = run_network(net, imgs, male, tta=False, return_features=True)
    passes = [run_network(net, imgs, male, tta=True, tta_pass=k) for k in range(9)]
    mixed = run_network(net, imgs, male, tta=True, tta_pass=np.array([4, 0]))  # one pass per image
    np.testing.assert_allclose(mixed.age, [passes[4].age[0], passes[0].age[1]], atol=1e-3)
    np.testing.assert_allclose(tta.age, np.mean([p.age for p in passes], 0), atol=1e-3)
    np.testing.assert_allclose(tta.scale, np.mean([p.scale for p in passes], 0), atol=1e-3)
    np.testing.assert_allclose(passes[0].age, plain.age, atol=1e-4)
    np.testing.assert_allclose(tta.features, plain.features, atol=1e-4)
    assert np.ptp([p.age for p in passes], axis=0).max() > 0.05  # the moves do enter the reading


def test_view_ranks_count_each_films_views_from_one():
    np.testing.assert_array_equal(view_ranks(np.array([0, 0, 0, 2, 2, 1, 0])), [1, 2, 3, 1, 2, 1, 4])
    assert len(view_ranks(np.array([], np.int64))) == 0


def test_the_phase_views_of_a_native_film_share_the_passes_out(shifting, data_dir, train_image_path):
    film = read_radiograph(data_dir / "test" / "4360.png")
    p = shifting.prepare(film)
    assert p.extra_views is not None and len(p.extra_views) == 8
    stacked = np.concatenate([p.image[None], p.extra_views])
    one_each = [shifting.predict_preprocessed(stacked[k:k + 1], np.array([True]), tta_pass=k).age[0]
                for k in range(9)]
    every_pass = shifting.predict_preprocessed(stacked, np.repeat(True, 9)).age  # 9 passes per view
    reading = shifting.predict_array(film, True).boneage_months
    assert reading == pytest.approx(float(np.mean(one_each)), abs=1e-3)
    assert abs(reading - float(every_pass.mean())) > 1e-3  # not the 81-pass product
    # a film at the base size has one view, which runs every pass
    small = read_radiograph(train_image_path)
    q = shifting.prepare(small)
    assert q.extra_views is None
    assert shifting.predict_array(small, False).boneage_months == pytest.approx(
        float(shifting.predict_preprocessed(q.image[None], np.array([False])).age[0]), abs=1e-3)


def test_a_mixed_batch_reads_each_film_as_it_would_alone(shifting, data_dir, train_image_path):
    """Native films (phase views, passes shared out) and base-size files (every pass) in one call, the
    laterality blend included, give each film its own reading; the zooms keep every pass on every view."""
    films = [read_radiograph(data_dir / "test" / f"{i}.png") for i in ("4360", "4388", "4361")]
    films.insert(1, read_radiograph(train_image_path))
    male = np.array([True, False, True, True])
    together = shifting.read_prepared([shifting.prepare(f) for f in films], male)
    alone = [shifting.read_prepared([shifting.prepare(f)], male[i:i + 1]).age[0] for i, f in enumerate(films)]
    np.testing.assert_allclose(together.age, alone, atol=1e-3)
    assert together.other_weight[2] > 0.01  # 4388: the laterality check is unsure, both sides read and blended
    zooms = shifting.with_options(tta=True)
    zooms.cfg.tta_views = "zooms"
    try:
        p = zooms.prepare(films[0])
        stacked = np.concatenate([p.image[None], p.extra_views])
        every = zooms.predict_preprocessed(stacked, np.repeat(True, len(stacked))).age.mean()
        assert zooms.read_prepared([p], male[:1]).age[0] == pytest.approx(float(every), abs=1e-3)
    finally:
        zooms.cfg.tta_views = "shifts"
