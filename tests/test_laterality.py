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
from boneage.geometry import Geometry, GeometryError
from boneage.imaging import read_radiograph
from boneage.laterality import N_FEATURES, LateralityCheck, default_check, fit_laterality_check, mirror_contrast
from boneage.predictor import mirrored_text
from boneage.preprocess import prepare, preprocess_array

REPO = Path(__file__).resolve().parent.parent
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


def test_a_native_film_mirrors_every_phase_view(data_dir):
    raw = read_radiograph(data_dir / "test" / "4361.png")
    geo = Geometry(laterality="left", phases=2)
    p, plain = prepare(np.ascontiguousarray(raw[:, ::-1]), geo), prepare(np.ascontiguousarray(raw[:, ::-1]),
                                                                         Geometry(phases=2))
    assert p.mirrored and p.extra_views is not None and len(p.extra_views) == 4  # 2x2 offsets after the plain squeeze
    np.testing.assert_array_equal(p.image, plain.image[:, ::-1])
    np.testing.assert_array_equal(p.extra_views, plain.extra_views[:, :, ::-1])


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
