"""The precision benchmark: perturbations, statistics, and the CLI on a few real radiographs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from boneage.io.imaging import read_radiograph
from boneage.evidence.precision import (DIAGNOSTICS, PERTURBATIONS, PerturbationStats, border, crop, downscale, gamma, jpeg,
                               mirror, perturbation, reading_changes, rotate, summarise)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def film(data_dir):
    return read_radiograph(data_dir / "test" / "4365.png")


def test_perturbations_change_the_film_as_named(film):
    h, w = film.shape
    assert border(film).shape == (h + 2 * round(h * 0.2), w + 2 * round(w * 0.2))
    assert border(film)[0].max() == film.min()
    assert crop(film).shape == (h - 2 * round(h * 0.08), w - 2 * round(w * 0.08))
    assert max(downscale(film).shape) == round(max(h, w) * 0.7)  # 506 px: already under 512, so to 70 %
    assert max(downscale(np.zeros((1500, 1000), np.float32)).shape) == 512
    np.testing.assert_array_equal(mirror(mirror(film)), film)
    assert rotate(film, 10).shape == film.shape and not np.allclose(rotate(film, 10), film)
    mid = (film > film.min() + 0.2 * np.ptp(film)) & (film < film.max() - 0.2 * np.ptp(film))
    assert gamma(film, 0.7)[mid].mean() > film[mid].mean() > gamma(film, 1.4)[mid].mean()
    j = jpeg(film, 70)
    assert j.shape == film.shape and 0 < np.abs(j - film).mean() < 5


def test_statistics_follow_their_definitions():
    s = PerturbationStats.from_changes("x", "x", np.array([2.0, -2.0, 2.0, -2.0]))
    assert s.mean_abs == 2.0 and s.mean_signed == 0.0
    assert s.test_retest_sd == pytest.approx(np.sqrt(2.0))  # sqrt(mean(d^2) / 2)
    assert s.meets_target  # mean 2 <= 2, p95 2 <= 6
    big = PerturbationStats.from_changes("y", "y", np.r_[np.zeros(90), np.full(10, 7.0)])
    assert big.mean_abs == pytest.approx(0.7) and big.p95_abs == pytest.approx(7.0) and not big.meets_target
    stats, pooled = summarise({"mirror": np.array([1.0, -1.0]), "crop_8pct": np.array([3.0, 3.0])})
    assert [x.name for x in stats] == ["mirror", "crop_8pct"]
    assert pooled == pytest.approx(np.sqrt((1 + 1 + 9 + 9) / 4 / 2))


def test_reading_changes_calls_the_reader_once_per_perturbation(film):
    calls = []

    def reader(arrays, male):  # a mirror-blind reading: mean intensity
        calls.append(len(arrays))
        return np.array([float(np.mean(a)) for a in arrays])

    out = reading_changes(reader, [film, film[::2, ::2]], np.array([True, False]))
    assert list(out) == list(PERTURBATIONS) and calls == [2] * (len(PERTURBATIONS) + 1)
    np.testing.assert_allclose(out["mirror"], 0.0, atol=1e-6)
    assert (out["border_20pct"] < 0).all()  # a black border lowers the mean


def test_diagnostics_resample_without_turning_or_cropping(film):
    assert not set(DIAGNOSTICS) & set(PERTURBATIONS)
    back, turned = DIAGNOSTICS["rotate_+10_back"][1](film), rotate(film, 10)
    assert back.shape == film.shape == DIAGNOSTICS["rotate_+0.5"][1](film).shape == DIAGNOSTICS["jpeg_q95"][1](film).shape
    inner = (slice(film.shape[0] // 4, -film.shape[0] // 4), slice(film.shape[1] // 4, -film.shape[1] // 4))
    # there and back lands on the film again (blurred), where the turn alone does not
    assert np.abs(back - film)[inner].mean() < 0.25 * np.abs(turned - film)[inner].mean()
    assert 0 < np.abs(jpeg(film, 95) - film).mean() < np.abs(jpeg(film, 70) - film).mean()
    assert perturbation("jpeg_q95") is DIAGNOSTICS["jpeg_q95"] and perturbation("crop_8pct") is PERTURBATIONS["crop_8pct"]
    with pytest.raises(ValueError, match="unknown perturbation 'sharpen'.*rotate_\\+10_back"):
        perturbation("sharpen")


def test_reading_changes_measures_named_diagnostics(film):
    reader = lambda arrays, male: np.array([float(np.mean(a)) for a in arrays])  # noqa: E731
    out = reading_changes(reader, [film], np.array([True]), ["crop_8pct", *DIAGNOSTICS])
    assert list(out) == ["crop_8pct", *DIAGNOSTICS]
    stats, _ = summarise({k: out[k] for k in DIAGNOSTICS})
    assert [s.description for s in stats] == [d for d, _ in DIAGNOSTICS.values()]


@pytest.mark.parametrize("diagnostics, split, n_official", [(True, "test", 2), (False, "train", 0)])
def test_precision_cli_writes_the_report(diagnostics, split, n_official, data_dir, subprocess_env, tmp_path):
    out = tmp_path / "precision.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.precision", "--n-internal", "2", "--n-official",
                        str(n_official), "--out", str(out), "--quiet", "--internal-split", split,
                        *([] if diagnostics else ["--no-diagnostics"])],
                       env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    measured = {f"internal_{split}", *(["official_test"] if n_official else [])}
    assert set(rep["sets"]) == measured and set(rep["sample"]) == {f"internal_{split}", "official_test"}
    for rows in rep["sets"].values():
        assert [x["name"] for x in rows] == list(PERTURBATIONS)
        assert all(x["n"] == 2 and x["mean_abs"] >= 0 for x in rows)
    assert rep["geometry"] and len(rep["model_sha256"]) >= 64 and "border_20pct" in r.stdout
    # the targets are the benchmark's perturbations only, whatever the diagnostics say
    assert rep["all_targets_met"] == all(x["meets_target"] for rows in rep["sets"].values() for x in rows)
    if not diagnostics:
        assert "diagnostics" not in rep and "diagnostic" not in r.stdout
        return
    assert set(rep["diagnostics"]) == measured
    for rows in rep["diagnostics"].values():
        assert [x["name"] for x in rows] == list(DIAGNOSTICS)
        assert all(x["n"] == 2 and x["mean_abs"] >= 0 and "meets_target" not in x for x in rows)
    assert r.stdout.count("diagnostic") == len(measured) * len(DIAGNOSTICS)


def test_precision_cli_refuses_an_empty_sample(subprocess_env, tmp_path):
    out = tmp_path / "precision.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.precision", "--n-internal", "0", "--n-official", "0",
                        "--out", str(out)], env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "at least one in all" in r.stderr
    assert not out.exists()


def test_nothing_measured_is_not_every_target_met():
    from boneage.evidence.precision import PrecisionReport

    assert reading_changes(lambda arrays, male: np.zeros(len(arrays)), [], np.zeros(0, bool)) == {
        n: pytest.approx(np.zeros(0)) for n in PERTURBATIONS}
    assert not PrecisionReport().all_met()
