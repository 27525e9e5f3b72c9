"""Phase views: a native film read at several sub-pixel offsets of the nearest-neighbour squeeze grid.

The reading of a film larger than the base size averages the views (boneage.geometry.framing.phase_views); each view
is a plain nearest-neighbour squeeze, the first one the usual squeeze, so films at the base size (the
training and validation files) read exactly as before. Every door reads through
``BoneAgePredictor.read``; the precompute path (the image cache) must give the same numbers.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from boneage.training.image_cache import load_images
from boneage.geometry.framing import Geometry, GeometryError, fit_views, phase_views, squeeze
from boneage.io.imaging import read_radiograph
from boneage.nn.forward import RawPredictions, average_views
from boneage.evidence.precision import crop, rotate
from boneage.inference.predictor import load_predictor
from boneage.geometry.preprocess import prepare

pytestmark = pytest.mark.integration

OFFICIAL = ("4360", "4365", "4372", "4400", "4411", "4420")


@pytest.fixture(scope="module")
def films(data_dir):
    return [read_radiograph(data_dir / "test" / f"{i}.png") for i in OFFICIAL]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, repo_root):
    """The shipped network in two folders: read with one phase and with 3 x 3 phases, without test-time
    augmentation (its passes are shared out between the views, tests/nn/test_tta_shifts.py)."""
    out = {}
    for phases in (1, 3):
        d = tmp_path_factory.mktemp(f"phases{phases}")
        for name in ("model.pt", "conformal.json"):
            shutil.copy(repo_root / "artifacts" / "model" / name, d / name)
        cfg = json.loads((repo_root / "artifacts" / "model" / "config.json").read_text())
        cfg["model"]["phases"] = phases
        cfg.setdefault("inference", {})["tta"] = False
        (d / "config.json").write_text(json.dumps(cfg))
        out[phases] = d
    return out


def test_phase_views_are_shifted_nearest_squeezes_the_plain_one_first():
    rng = np.random.default_rng(0)
    film = rng.random((1000, 700)).astype(np.float32)
    views = phase_views(film, 100, 3)
    assert len(views) == 9
    np.testing.assert_array_equal(views[0], squeeze(film, 100))
    rows = np.floor((np.arange(100) + 1 / 6) * 1000 / 100).astype(int)
    cols = np.floor((np.arange(100) + 5 / 6) * 700 / 100).astype(int)
    assert any(np.array_equal(v, film[np.ix_(rows, cols)]) for v in views[1:])
    assert len({v.tobytes() for v in views}) == 9  # nine different grids
    # every pixel of every view is a film pixel: no interpolation, as sharp as the plain squeeze
    assert all(np.isin(v, film).all() for v in views)
    # an axis not longer than the base has one offset; a film at the base size has one view
    assert len(phase_views(film[:, :100], 100, 3)) == 3
    assert len(phase_views(film[:100, :100], 100, 3)) == 1


def test_phases_are_part_of_the_squeeze_geometry_only():
    with pytest.raises(GeometryError, match="phases 0 must lie in 1-5"):
        Geometry(phases=0)
    with pytest.raises(GeometryError, match="needs the squeeze fit"):
        Geometry(fit="area", phases=3)
    assert Geometry(phases=3).key() == Geometry().key()  # a cache holds the first view, the same either way
    assert Geometry(phases=3) != Geometry()


def test_prepare_keeps_the_plain_image_and_adds_the_other_views(films, train_image_path):
    one, three = Geometry(), Geometry(phases=3)
    p1, p3 = prepare(films[0], one), prepare(films[0], three)
    np.testing.assert_array_equal(p3.image, p1.image)
    assert p1.extra_views is None and p1.n_views == 1
    assert p3.extra_views.shape == (8, 100, 100) and p3.n_views == 9
    assert 0 <= p3.extra_views.min() and p3.extra_views.max() <= 1
    # each further view is normalised like the first: its mean pixel differs by little
    assert np.abs(p3.extra_views.mean(axis=(1, 2)) - p3.image.mean()).max() < 0.02
    small = read_radiograph(train_image_path)
    assert prepare(small, three).extra_views is None
    assert len(fit_views(small, three)) == 1


def test_average_views_weighs_every_view_of_a_film_the_same():
    first = RawPredictions(np.array([10.0, 20.0, 30.0], np.float32), np.array([1.0, 2.0, 3.0], np.float32),
                           np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], np.float32), np.ones((3, 4), np.float32))
    extra = RawPredictions(np.array([14.0, 16.0, 40.0], np.float32), np.array([3.0, 3.0, 5.0], np.float32),
                           np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32))
    out = average_views(first, extra, np.array([0, 0, 2]))
    np.testing.assert_allclose(out.age, [40 / 3, 20.0, 35.0], rtol=1e-6)
    np.testing.assert_allclose(out.scale, [7 / 3, 2.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(out.stage_prob, [[1 / 3, 2 / 3], [0.5, 0.5], [0.5, 0.5]], rtol=1e-6)
    assert out.features is first.features  # features describe the plain view, as with TTA
    assert average_views(first, extra, np.zeros(0, np.int64)) is first


def test_every_door_reads_the_mean_of_the_views(model_dirs, films, data_dir, train_image_path):
    one, three = load_predictor(model_dirs[1]), load_predictor(model_dirs[3])
    male = np.array([True])
    p = three.prepare(films[0])
    stacked = np.concatenate([p.image[None], p.extra_views])
    by_view = three.predict_preprocessed(stacked, np.repeat(male, len(stacked))).age
    assert by_view.std() > 0.2  # the grid's accident moves a single view's reading
    assert three.predict_array(films[0], True).boneage_months == pytest.approx(float(by_view.mean()), abs=1e-3)
    assert one.predict_array(films[0], True).boneage_months == pytest.approx(float(by_view[0]), abs=1e-3)
    # a film at the base size reads as before
    small = read_radiograph(train_image_path)
    assert three.predict_array(small, False).boneage_months == pytest.approx(
        one.predict_array(small, False).boneage_months, abs=1e-4)
    # the cached, batched path of precompute and choose_model gives the doors' numbers
    cases = pd.read_csv(data_dir / "test.csv", dtype={"id": str}).set_index("id").loc[list(OFFICIAL[:3])].reset_index()
    loaded = load_images(cases, data_dir / "test", three.cfg.geometry, progress=False)
    assert len(loaded.extra_views) == 3 * 8 and sorted(set(loaded.extra_owner)) == [0, 1, 2]
    batch = three.read_loaded(loaded).age
    doors = [three.predict_array(read_radiograph(data_dir / "test" / f"{i}.png"), bool(m)).boneage_months
             for i, m in zip(cases["id"], cases["male"])]
    np.testing.assert_allclose(batch, doors, atol=1e-3)


def test_the_views_steady_the_reading_under_a_crop_and_a_turn(model_dirs, films, data_dir):
    male = pd.read_csv(data_dir / "test.csv", dtype={"id": str}).set_index("id").loc[list(OFFICIAL), "male"]
    male = male.to_numpy().astype(bool)
    moved = {}
    for phases, d in model_dirs.items():
        pred = load_predictor(d)

        def read(arrays):
            return pred.read_prepared([pred.prepare(a) for a in arrays], male).age

        base = read(films)
        moved[phases] = np.mean([np.abs(read([change(f) for f in films]) - base).mean()
                                 for change in (crop, lambda f: rotate(f, 10))])
    assert moved[3] < 0.75 * moved[1], moved
