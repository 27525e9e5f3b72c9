"""The learned laterality check and models that read left hands only: a film and its mirror image always get
opposite answers, so they are read as the same picture; right hands in the data are found."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from boneage.config import ModelConfig
from boneage.geometry.framing import Geometry, GeometryError
from boneage.io.imaging import read_radiograph
from boneage.geometry.laterality import N_FEATURES, LateralityCheck, default_check, fit_laterality_check, mirror_contrast
from boneage.inference.predictor import mirrored_text
from boneage.geometry.preprocess import prepare, preprocess_array

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LEFT = Geometry(laterality="left")


def _val_images(data_dir: Path, n: int) -> list[np.ndarray]:
    splits = pd.read_csv(REPO / "artifacts" / "splits.csv", dtype={"id": str})
    ids = splits.loc[splits["split"] == "val", "id"].head(n)
    return [preprocess_array(read_radiograph(data_dir / "train" / f"{i}.png")) for i in ids]


def test_the_answer_flips_exactly_with_the_image(data_dir):
    check = default_check()
    for img in _val_images(data_dir, 8):
        assert check.score(img[:, ::-1]) == pytest.approx(-check.score(img), abs=1e-9)
        assert check.is_right(img) != check.is_right(img[:, ::-1]) or check.score(img) == 0


def test_held_out_left_hands_are_kept_and_their_mirror_images_turned(data_dir):
    check = default_check()
    images = _val_images(data_dir, 60)
    right = np.array([check.is_right(a) for a in images])
    # About 2 % of RSNA films are right hands; of these 60 validation films the shipped check takes 1 for one
    # (shipped counts: laterality.json "evaluation").
    assert right.mean() <= 0.1, right.mean()


def test_a_film_and_its_mirror_are_prepared_identically(data_dir):
    for cid in ("1378", "1380"):
        raw = read_radiograph(data_dir / "train" / f"{cid}.png")
        a, b = prepare(raw, LEFT), prepare(np.ascontiguousarray(raw[:, ::-1]), LEFT)
        np.testing.assert_array_equal(a.image, b.image)
        assert a.mirrored != b.mirrored
        # as-is geometry reads the two differently
        assert not np.array_equal(prepare(raw).image, prepare(np.ascontiguousarray(raw[:, ::-1])).image)


def test_a_native_film_taken_for_a_right_hand_reads_as_the_left_hand_film_view_for_view(data_dir):
    raw = read_radiograph(data_dir / "test" / "4361.png")
    geo = Geometry(laterality="left", phases=2)
    p = prepare(np.ascontiguousarray(raw[:, ::-1]), geo)  # the left hand, exported mirrored
    left = prepare(raw, Geometry(phases=2))  # the left hand as it came
    assert p.mirrored and p.extra_views is not None and len(p.extra_views) == 4  # 2x2 offsets after the plain squeeze
    # the mirror image is fitted again: the same views in the same order, so each takes the same test-time pass
    np.testing.assert_array_equal(p.image, left.image)
    np.testing.assert_array_equal(p.extra_views, left.extra_views)


def test_geometry_names_a_bad_laterality_and_keys_the_cache():
    with pytest.raises(GeometryError, match="unknown laterality 'right'; one of as-is, left"):
        Geometry(laterality="right")
    assert LEFT.key().endswith("-left") and not Geometry().key().endswith("-left")
    assert ModelConfig(laterality="left").geometry == LEFT


def test_the_mirrored_cell_says_what_was_done():
    cfg = ModelConfig(laterality="left")
    assert mirrored_text(cfg, True).startswith("yes: taken for a right hand")
    assert mirrored_text(cfg, False).startswith("no: taken for a left hand")
    assert mirrored_text(ModelConfig()) == "not checked (left hand assumed)"


def test_fit_learns_an_asymmetry_and_refuses_a_stale_file(tmp_path):
    rng = np.random.default_rng(0)
    lefts = []
    for _ in range(60):  # a bright bar on the right-hand side: "left hands" of this toy world
        img = rng.uniform(0, 0.2, (100, 100)).astype(np.float32)
        c = int(rng.integers(60, 85))
        img[20:80, c:c + 8] = 1.0
        lefts.append(img)
    check = fit_laterality_check(np.array([mirror_contrast(a) for a in lefts]), C=1.0)
    assert not any(check.is_right(a) for a in lefts) and all(check.is_right(a[:, ::-1]) for a in lefts)
    path = tmp_path / "laterality.json"
    check.save(path)
    assert LateralityCheck.load(path).score(lefts[0]) == pytest.approx(check.score(lefts[0]))
    d = json.loads(path.read_text())
    d["coef"] = d["coef"][:-1]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=f"this version computes {N_FEATURES}.*pipelines.fit_laterality"):
        LateralityCheck.load(path)


def test_fit_laterality_cli_writes_a_check_with_its_counts(tmp_path, subprocess_env):
    out = tmp_path / "laterality.json"
    proc = subprocess.run([sys.executable, "-m", "pipelines.fit_laterality", "--max-cases", "24",
                           "--held-out-cases", "6", "--out", str(out)], cwd=REPO, env=subprocess_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check = LateralityCheck.load(out)
    ev = check.evaluation
    assert ev["train"]["n"] == 24 and ev["val"]["n"] == 6 and ev["official_test"]["n"] == 24
    assert set(ev["official_test"]["answer_changed"]) == {"jpeg_q70", "downscale_512", "gamma_0.7", "gamma_1.4",
                                                          "rotate_+10", "rotate_-10", "crop_8pct", "border_20pct"}
    assert "official_test: n=24" in proc.stdout


def test_blend_readings_replaces_only_the_given_rows():
    from boneage.nn.forward import RawPredictions, blend_readings

    first = RawPredictions(np.array([100.0, 50.0, 80.0]), np.array([5.0, 6.0, 7.0]),
                           np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), np.ones((3, 4)))
    other = RawPredictions(np.array([60.0]), np.array([9.0]), np.array([[0, 1.0, 0]]), None)
    out = blend_readings(first, other, np.array([2]), np.array([0.25]))
    np.testing.assert_allclose(out.age, [100.0, 50.0, 0.75 * 80 + 0.25 * 60])
    np.testing.assert_allclose(out.scale, [5.0, 6.0, 0.75 * 7 + 0.25 * 9])
    np.testing.assert_allclose(out.stage_prob[2], [0, 0.25, 0.75])
    assert out.features is first.features
    assert blend_readings(first, other, np.array([], np.int64), np.array([])) is first


@pytest.fixture(scope="module")
def left_predictor(tmp_path_factory):
    """The shipped weights with a config that reads left hands only."""
    import shutil

    from boneage.inference.predictor import load_predictor

    d = tmp_path_factory.mktemp("left_model")
    for name in ("model.pt", "conformal.json"):
        shutil.copy(REPO / "artifacts" / "model" / name, d / name)
    cfg = json.loads((REPO / "artifacts" / "model" / "config.json").read_text())
    cfg["model"]["laterality"] = "left"
    (d / "config.json").write_text(json.dumps(cfg))
    return load_predictor(d)


def test_an_unsure_check_blends_the_two_sides(left_predictor, data_dir, monkeypatch):
    import boneage.inference.predictor as P
    from boneage.geometry.laterality import other_side_weight

    img = (prepare(read_radiograph(data_dir / "train" / "1380.png"), LEFT).image * 255).astype(np.uint8)[None]
    male = np.array([True])
    plain = left_predictor.predict_preprocessed(img, male).age[0]
    mirror = left_predictor.predict_preprocessed(np.ascontiguousarray(img[:, :, ::-1]), male).age[0]
    assert abs(plain - mirror) > 0.5  # the network reads the two pictures differently

    class Unsure:
        def score(self, _img):
            return -1.0

    monkeypatch.setattr(P, "laterality_check", lambda: Unsure())
    w = other_side_weight(-1.0)
    blended = left_predictor.read(img, male)
    assert blended.age[0] == pytest.approx((1 - w) * plain + w * mirror, abs=1e-3)
    assert blended.other_weight.tolist() == [pytest.approx(w)]
    film = read_radiograph(data_dir / "train" / "1380.png")
    assert left_predictor.predict_array(film, True).mirrored.endswith(
        f"side uncertain, so {w:.0%} of the reading is the other side's")  # the weight read blended

    class Sure:
        def score(self, _img):
            return -9.0

    monkeypatch.setattr(P, "laterality_check", lambda: Sure())
    assert left_predictor.read(img, male).age[0] == pytest.approx(plain, abs=1e-4)
    assert "side uncertain" not in left_predictor.predict_array(film, True).mirrored


def test_a_native_film_and_its_mirror_get_one_reading_and_say_so(left_predictor, data_dir):
    raw = read_radiograph(data_dir / "test" / "4361.png")
    a = left_predictor.predict_array(raw, True)
    b = left_predictor.predict_array(np.ascontiguousarray(raw[:, ::-1]), True)
    assert abs(a.boneage_months - b.boneage_months) < 0.5, (a.boneage_months, b.boneage_months)
    assert a.mirrored.startswith("no: taken for a left hand") and b.mirrored.startswith("yes: taken for a right")
