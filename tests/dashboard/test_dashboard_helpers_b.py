"""Pure helpers behind the Embeddings, Uncertainty and Maturation atlas pages (synthetic tables, no artifacts)."""
import numpy as np
import pandas as pd
import pytest

from boneage.evidence.atlas import AtlasHeatmaps, band_samples, typical_cases
from boneage.evaluation.conformal import coverage_frame
from boneage.evaluation.embeddings import layer_quality_table, map_columns, maps_with_cases, most_unusual
from boneage.evaluation.uncertainty import error_by_uncertainty, least_certain, rank_correlation, stage_outcome

pytestmark = pytest.mark.unit


def _cases(n=400, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(6, 220, n)
    scale = rng.uniform(3, 30, n)
    pred = ref + rng.laplace(0, scale)
    male = rng.random(n) < 0.5
    df = pd.DataFrame({"id": [str(1000 + i) for i in range(n)], "split": np.where(np.arange(n) % 4 == 0, "test", "train"),
                       "male": male, "sex": np.where(male, "M", "F"), "boneage": ref, "boneage_pred": pred,
                       "uncertainty": scale, "lower_90": pred - 2 * scale, "upper_90": pred + 2 * scale,
                       "entropy": rng.uniform(0, 1.1, n), "stage_true": np.digitize(ref, [96, 180]),
                       "stage_pred": np.array(["Child", "Adolescent", "Adult"])[np.digitize(pred, [96, 180])],
                       "outlier_score": rng.uniform(0.9, 1.6, n), "is_outlier": False})
    df.loc[df["outlier_score"] > 1.55, "is_outlier"] = True
    df["residual"] = df["boneage_pred"] - df["boneage"]
    df["abs_error"] = df["residual"].abs()
    return df


def test_typical_cases_are_near_the_age_of_the_right_sex_and_well_read():
    df = _cases()
    t = typical_cases(df, 120, male=False, k=4, window_months=12)
    assert len(t) == 4 and (t["split"] == "train").all() and (~t["male"]).all()
    assert (t["age_distance"] <= 12).all()
    pool = df[(df["split"] == "train") & ~df["male"] & ((df["boneage"] - 120).abs() <= 12)]
    assert set(t["id"]) == set(pool.nsmallest(4, "abs_error")["id"])
    assert list(t["boneage"]) == sorted(t["boneage"])
    far = typical_cases(df, 20 * 12 + 100, male=True, k=3)  # beyond every case: the nearest ones still come
    assert len(far) == 3


def test_band_samples_balance_sex_and_stay_in_band():
    df = _cases(2000)
    b = band_samples(df, None, n_per_band=8)
    for band, g in b.groupby("age_band"):
        assert len(g) == 8 and (g["sex"] == "F").sum() == 4
    assert (b["split"] == "train").all()
    assert list(dict.fromkeys(b["age_band"])) == [x for x in ("0-2y", "2-5y", "5-8y", "8-11y", "11-14y", "14-17y", "17y+")
                                                   if x in set(b["age_band"])]


def test_atlas_heatmaps_lookup_and_stale_band():
    arrays = {"layer": np.array("Stage 5"), "ids": np.array(["1", "2"]), "splits": np.array(["train", "train"]),
              "heatmaps": np.full((2, 4, 4), 255, np.uint8), "bands": np.array(["5-8y"]),
              "band_members": np.array(["1 2"]), "band_n": np.array([2]), "band_heatmaps": np.zeros((1, 4, 4), np.uint8)}
    a = AtlasHeatmaps(arrays)
    assert a.case("1", "train").max() == 1.0 and a.case("1", "test") is None
    assert a.band("5-8y", ["2", "1"]) is not None and a.band("5-8y", ["1", "3"]) is None
    assert a.layer == "Stage 5"


def test_coverage_frame_flattens_the_report():
    report = {"mondrian": {"test": {"90": {"n": 10, "coverage": 0.9, "mean_width": 40.0, "by_group": {
        "M 5-8y": {"n": 4, "coverage": 1.0, "mean_width": 30.0}, "F 0-2y": {"n": 6, "coverage": 5 / 6, "mean_width": 20.0}}}}},
        "global": {"test": {"90": {"n": 10, "coverage": 0.8, "mean_width": 35.0, "by_group": {}}}}}
    f = coverage_frame(report, "test")
    assert len(f) == 4
    all_m = f[(f["variant"] == "mondrian") & (f["group"] == "all")].iloc[0]
    assert all_m["coverage"] == 0.9 and all_m["nominal"] == 0.9 and all_m["n"] == 10
    assert list(f.loc[f["variant"] == "mondrian", "group"]) == ["all", "F 0-2y", "M 5-8y"]
    assert coverage_frame(report, "calib").empty


def test_error_by_uncertainty_tracks_a_calibrated_laplace_scale():
    df = _cases(4000, seed=1)
    bins = error_by_uncertainty(df, n_bins=5)
    assert len(bins) == 5 and bins["n"].sum() == len(df)
    assert (np.diff(bins["measure_mean"]) > 0).all()
    # Laplace(0, b) has E|x| = b: every bin's MAE CI should contain its mean scale (calibrated by construction)
    assert ((bins["mae_lo"] <= bins["measure_mean"] * 1.1) & (bins["mae_hi"] >= bins["measure_mean"] * 0.9)).all()
    assert rank_correlation(df)["rho"] > 0.3


def test_least_certain_and_stage_outcome():
    df = _cases()
    df.loc[df.index[0], "boneage"] = np.nan
    top = least_certain(df, "width_90", k=5)
    assert len(top) == 5 and top["width_90"].is_monotonic_decreasing
    assert top["width_90"].iloc[0] == pytest.approx((df["upper_90"] - df["lower_90"]).max())
    with pytest.raises(ValueError):
        least_certain(df, "nonsense")
    d = df.assign(stage_true=[-1] + [0] * (len(df) - 1), stage_pred=["Child"] * 2 + ["Adult"] * (len(df) - 2))
    out = stage_outcome(d)
    assert list(out[:3]) == ["unknown", "correct", "wrong"]


def test_embedding_helpers():
    assert map_columns("umap", 3) == ["umap3_x", "umap3_y", "umap3_z"]
    with pytest.raises(ValueError):
        map_columns("pca", 2)
    q = layer_quality_table({"layers": {"penultimate": {"knn_mae": 10.0, "knn_r2": 0.9, "n": 5, "dims": 256},
                                        "stage3": {"knn_mae": 30.0, "knn_r2": 0.2, "n": 5, "dims": 40}}})
    assert list(q["layer"]) == ["stage3", "penultimate"]
    cases = _cases(20)
    maps = pd.DataFrame({"id": cases["id"], "split": cases["split"], "tsne2_x": 0.0, "tsne2_y": 0.0})
    joined = maps_with_cases(maps, cases)
    assert len(joined) == 20 and "boneage" in joined
    with pytest.raises(ValueError, match="stale"):
        maps_with_cases(maps.assign(id=maps["id"] + "x"), cases)
    unusual = most_unusual(cases, k=3)
    assert unusual["outlier_score"].is_monotonic_decreasing and len(unusual) >= 3
