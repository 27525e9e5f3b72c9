"""The analysis pipeline's building blocks on inputs with known answers, and the precompute end to end on a
few dozen real cases into a temporary folder (the committed artifacts are never touched)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from boneage.evaluation.conformal import (ConformalCalibrator, band_offsets, merge_small_bands, min_group_size,
                               mondrian_bins)
from boneage.evaluation.embeddings import OutlierDetector
from boneage.store.manifest import check_manifest, write_manifest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LEVELS = ("80", "90", "95")


def _synthetic(n: int, rng: np.random.Generator):
    """Predictions with Laplace errors whose scale the 'model' knows (heteroscedastic, differs by sex)."""
    y_hat = rng.uniform(10, 220, n)
    male = rng.random(n) < 0.5
    scale = np.where(male, 4.0, 7.0) * rng.uniform(0.5, 1.5, n)
    y = y_hat + rng.laplace(0, scale)
    return y, y_hat, scale, male


@pytest.mark.parametrize("mondrian", [True, False])
def test_conformal_intervals_reach_their_coverage_on_synthetic_residuals(mondrian):
    rng = np.random.default_rng(0)
    # Large enough that even the smallest Mondrian group (sex x 0-2 years, ~3 % of cases) has ~600.
    cal = ConformalCalibrator.fit(*_synthetic(20000, rng), mondrian=mondrian)
    y, y_hat, scale, male = _synthetic(30000, rng)
    widths = {}
    for lvl in LEVELS:
        lo, hi = cal.interval(y_hat, scale, male, lvl)
        cover = np.mean((y >= lo) & (y <= hi))
        assert abs(cover - int(lvl) / 100) < 0.015, (lvl, cover)
        widths[lvl] = np.mean(hi - lo)
        if mondrian:  # per group too (sex x reference age band)
            bins = mondrian_bins(y, male)
            for b in np.unique(bins):
                m = bins == b
                assert np.mean((y[m] >= lo[m]) & (y[m] <= hi[m])) > int(lvl) / 100 - 0.05, (lvl, b)
    assert widths["80"] < widths["90"] < widths["95"]
    # Normalised by the model's scale: cases the model is surer about get narrower intervals.
    lo, hi = cal.interval(np.array([100.0, 100.0]), np.array([2.0, 8.0]), np.array([True, True]), "90")
    assert (hi - lo)[0] < (hi - lo)[1]


def test_conformal_intervals_follow_skewed_errors_in_each_tail():
    """Errors skewed upwards (a model pulling the oldest children to the mean): each tail keeps its share."""
    rng = np.random.default_rng(3)

    def skewed(n):
        y_hat = rng.uniform(150, 220, n)
        male = np.ones(n, bool)
        scale = np.full(n, 6.0)
        y = y_hat + rng.exponential(12.0, n) - 4.0  # mostly under-predicted, rarely over
        return y, y_hat, scale, male

    cal_data, (y, y_hat, scale, male) = skewed(5000), skewed(20000)
    lo, hi = ConformalCalibrator.fit(*cal_data, mondrian=False).interval(y_hat, scale, male, "90")
    below, above = np.mean(y < lo), np.mean(y > hi)
    assert abs(below - 0.05) < 0.012 and abs(above - 0.05) < 0.012, (below, above)
    assert np.mean(hi - y_hat) > 2 * np.mean(y_hat - lo)  # the interval reaches further up than down
    # Mondrian: the hull over age bands is conservative, never short, and just as lopsided.
    lo, hi = ConformalCalibrator.fit(*cal_data, mondrian=True).interval(y_hat, scale, male, "90")
    assert 0.035 < np.mean(y < lo) < 0.062 and 0.02 < np.mean(y > hi) < 0.062
    assert np.mean(hi - y_hat) > 2 * np.mean(y_hat - lo)


def _shrunk_to_the_mean(n: int, rng: np.random.Generator):
    """A regression model's typical failure: predictions pulled towards the mean age, worst at the extremes."""
    y = rng.uniform(0, 228, n)
    male = rng.random(n) < 0.5
    y_hat = 127 + 0.8 * (y - 127) + rng.laplace(0, 6, n)
    return y, y_hat, np.full(n, 6.0), male


def test_mondrian_intervals_cover_every_true_age_band_even_when_predictions_shrink():
    """The audited groups are sex x *true* age band; the label-conditional intervals keep their promise in each,
    where one calibration for everybody (global) misses the youngest and the oldest."""
    rng = np.random.default_rng(5)
    cal_data, test_data = _shrunk_to_the_mean(4000, rng), _shrunk_to_the_mean(40000, rng)
    y, y_hat, scale, male = test_data
    bins = mondrian_bins(y, male)
    worst = {}
    for mondrian in (True, False):
        lo, hi = ConformalCalibrator.fit(*cal_data, mondrian=mondrian).interval(y_hat, scale, male, "90")
        cover = [np.mean((y[bins == b] >= lo[bins == b]) & (y[bins == b] <= hi[bins == b])) for b in np.unique(bins)]
        worst[mondrian] = min(cover)
    assert worst[True] > 0.87, worst
    assert worst[False] < 0.75, worst  # the failure the Mondrian variant exists for


def test_small_bands_are_merged_with_their_inner_neighbour():
    assert min_group_size("80") == 9 and min_group_size("90") == 19 and min_group_size("95") == 39
    assert merge_small_bands([3, 30, 100, 100, 40, 21, 3], 19) == [[0, 1], [2], [3], [4], [5, 6]]
    assert merge_small_bands([3, 30, 100, 100, 40, 21, 3], 39) == [[0, 1, 2], [3], [4, 5, 6]]
    assert merge_small_bands([5, 5], 100) == [[0, 1]]  # never fewer than one group


def test_mondrian_calibration_with_tiny_groups_still_gives_finite_intervals():
    rng = np.random.default_rng(2)
    y, y_hat, scale, male = _synthetic(300, rng)
    cal = ConformalCalibrator.fit(y, y_hat, scale, male)
    groups = cal.groups("95")
    assert (groups["n_calibration"] >= 39).all() and np.isfinite(groups[["score_lo", "score_hi"]]).all().all()
    lo, hi = cal.interval(y_hat, scale, male, "95")
    assert np.all(lo < hi) and np.all(hi - lo < 150)


def test_conformal_from_an_older_version_is_refused_with_a_fix(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"mondrian": True, "pred_band_edges": [60, 120, 168],
                                                 "residuals": [1.0], "sigmas": [1.0], "bins": [0]}))
    with pytest.raises(ValueError, match="pipelines.precompute --only intervals"):
        ConformalCalibrator.load(tmp_path / "c.json")


def _biased_top_band(n: int, rng: np.random.Generator):
    """Girls only; those of 17+ (204+ months) are rare and predicted ~2.5 scales too young, the way the
    model squeezes mature girls towards the mean; everyone else has centred Laplace errors."""
    y = np.concatenate([rng.uniform(150, 204, n), rng.uniform(204, 228, max(n // 40, 1))])
    scale = np.full(len(y), 8.0)
    shift = np.where(y >= 204, 2.5 * 8.0, 0.0)
    y_hat = y - shift - rng.laplace(0, 0.5 * scale)
    return y, y_hat, scale, np.zeros(len(y), bool)


def test_band_offsets_are_the_median_score_per_group_and_zero_where_too_few():
    rng = np.random.default_rng(5)
    y, y_hat, scale, male = _biased_top_band(4000, rng)
    off = band_offsets(y, y_hat, scale, male)
    top, mid = mondrian_bins([210.0], [False])[0], mondrian_bins([180.0], [False])[0]
    assert abs(off[top] - 2.5) < 0.15 and abs(off[mid]) < 0.1
    assert np.all(off[1::2] == 0)  # no boys at all: nothing to centre
    few = band_offsets(y[:5], y_hat[:5], scale[:5], male[:5], min_cases=10)
    assert np.all(few == 0)
    with_nan = band_offsets(np.append(y, np.nan), np.append(y_hat, 100.0), np.append(scale, 8.0), np.append(male, False))
    np.testing.assert_allclose(with_nan, off)  # unlabelled rows are ignored


def test_band_offsets_rescue_a_rare_band_merged_with_its_neighbour():
    """Too few calibration cases for the biased top band at 90 %: merged with its neighbour, whose errors
    decide the bound, the band is missed; centred by offsets from a separate training sample, it is covered,
    and the other band keeps its nominal coverage."""
    rng = np.random.default_rng(6)
    train, cal, test = _biased_top_band(4000, rng), _biased_top_band(400, rng), _biased_top_band(40000, rng)
    offsets = band_offsets(*train)
    assert (mondrian_bins(cal[0], cal[3]) == mondrian_bins([210.0], [False])[0]).sum() < min_group_size("90")
    y, y_hat, scale, male = test
    top = y >= 204
    cover = {}
    for name, off in (("plain", None), ("centred", offsets)):
        lo, hi = ConformalCalibrator.fit(*cal, offsets=off).interval(y_hat, scale, male, "90")
        inside = (y >= lo) & (y <= hi)
        cover[name] = (inside[top].mean(), inside[~top].mean())
    assert cover["plain"][0] < 0.5 and cover["centred"][0] > 0.85, cover
    assert abs(cover["centred"][1] - 0.9) < 0.03, cover
    with pytest.raises(ValueError, match="Mondrian"):
        ConformalCalibrator.fit(*cal, mondrian=False, offsets=offsets)


def test_conformal_round_trips_through_json(tmp_path):
    rng = np.random.default_rng(1)
    cal = ConformalCalibrator.fit(*_synthetic(2000, rng), offsets=np.linspace(-1, 1, 14))
    cal.save(tmp_path / "c.json")
    back = ConformalCalibrator.load(tmp_path / "c.json")
    np.testing.assert_allclose(back.offsets, cal.offsets, atol=1e-4)  # stored to 4 decimals
    _, y_hat, scale, male = _synthetic(50, rng)
    for lvl in LEVELS:
        np.testing.assert_allclose(back.interval(y_hat, scale, male, lvl), cal.interval(y_hat, scale, male, lvl),
                                   atol=1e-3)  # stored rounded to 6 significant digits


def test_lof_flags_a_planted_outlier_and_few_typical_cases():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(600, 16))
    det = OutlierDetector().fit(train)
    typical = rng.normal(size=(400, 16))
    planted = np.full((1, 16), 6.0)
    assert det.flag(planted)[0]
    assert det.score(planted)[0] > 3 * det.threshold / 2
    assert det.flag(typical).mean() < 0.05


def test_manifest_detects_changed_and_missing_files(tmp_path):
    (tmp_path / "sub").mkdir()
    pd.DataFrame({"id": ["1", "2"], "x": [1.0, 2.0]}).to_parquet(tmp_path / "table.parquet")
    (tmp_path / "sub" / "report.json").write_text(json.dumps({"a": 1}))
    write_manifest(tmp_path, {"backbone": "test"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} >= {"table.parquet", "sub/report.json"}
    assert check_manifest(tmp_path) == []
    assert [p.path for p in check_manifest(tmp_path, required=("other.json",))] == ["other.json"]
    (tmp_path / "sub" / "report.json").write_text(json.dumps({"a": 2}))
    (tmp_path / "table.parquet").unlink()
    problems = {p.path: p.problem for p in check_manifest(tmp_path)}
    assert "stale" in problems["sub/report.json"]
    assert problems["table.parquet"] == "missing"


def test_precompute_end_to_end_on_real_cases(tmp_path, data_dir, subprocess_env):
    art = tmp_path / "artifacts"
    (art / "model").mkdir(parents=True)
    for f in ("model.pt", "config.json"):
        shutil.copy(REPO / "artifacts" / "model" / f, art / "model" / f)
    for f in ("splits.csv", "splits.json"):
        shutil.copy(REPO / "artifacts" / f, art / f)
    proc = subprocess.run([sys.executable, "-m", "pipelines.precompute", "--artifacts", str(art), "--data-dir",
                           str(data_dir), "--max-cases", "8"], cwd=REPO, env=subprocess_env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    df = pd.read_parquet(art / "predictions.parquet")
    assert set(df["split"]) == {"train", "val", "calib", "test", "official_test"}
    assert len(df) == 40
    for col in ("id", "sex", "boneage", "boneage_pred", "residual", "abs_error", "stage_pred", "uncertainty",
                "lower_90", "upper_90", "outlier_score", "is_outlier", "entropy"):
        assert col in df.columns, col
    assert df["boneage_pred"].between(0, 300).all()
    assert (df["lower_90"] <= df["boneage_pred"]).all() and (df["boneage_pred"] <= df["upper_90"]).all()
    off = df[df["split"] == "official_test"]
    # Rows without a reference age are predicted, never scored.
    assert off["boneage"].isna().any() or len(off) == 8
    assert df.loc[df["boneage"].isna(), "abs_error"].isna().all()
    feats = np.load(art / "embeddings" / "features_penultimate.npy")
    assert feats.dtype == np.float16 and feats.shape[0] == 40
    maps = pd.read_parquet(art / "embeddings" / "maps_penultimate.parquet")
    assert {"tsne2_x", "tsne3_z", "umap2_y", "umap3_z"} <= set(maps.columns) and len(maps) == 40
    assert check_manifest(art) == []
    listed = {f["path"] for f in json.loads((art / "manifest.json").read_text())["files"]}
    assert {"predictions.parquet", "coverage.json", "model/conformal.json", "stage_calibration.json"} <= listed


def test_shipped_intervals_are_reproduced_from_the_stored_predictions(tmp_path):
    """`--only intervals` on the committed predictions gives the committed calibration and coverage report,
    with band offsets from the training split, and meets the coverage target per group on the internal test
    split."""
    from pipelines.precompute import part_intervals

    art = tmp_path / "artifacts"
    (art / "model").mkdir(parents=True)
    shutil.copy(REPO / "artifacts" / "predictions.parquet", art / "predictions.parquet")
    part_intervals(art, log=lambda msg: None)
    shipped = json.loads((REPO / "artifacts" / "model" / "conformal.json").read_text())
    redone = json.loads((art / "model" / "conformal.json").read_text())
    assert redone["offsets"] == shipped["offsets"] and redone["groups"] == shipped["groups"]
    df = pd.read_parquet(REPO / "artifacts" / "predictions.parquet")
    train = df[df["split"] == "train"]
    np.testing.assert_allclose(redone["offsets"], band_offsets(train["boneage"], train["boneage_pred"],
                                                              train["uncertainty"], train["male"]), atol=1e-4)
    coverage = json.loads((art / "coverage.json").read_text())
    assert coverage == json.loads((REPO / "artifacts" / "coverage.json").read_text())
    test90 = coverage["mondrian"]["test"]["90"]
    assert 0.88 <= test90["coverage"] <= 0.92
    assert min(g["coverage"] for g in test90["by_group"].values()) >= 0.8
    redone_df = pd.read_parquet(art / "predictions.parquet")
    pd.testing.assert_frame_equal(redone_df, df)
