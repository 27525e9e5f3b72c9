"""Dashboard pages Embeddings, Uncertainty, Fairness and Maturation atlas, run headless with AppTest.

They read the artifact set in use ($BONEAGE_ARTIFACTS, default artifacts/) and check that each page renders
without an exception, shows the key numbers of its artifacts, shows the data-folder notice instead of
radiographs when no data folder is configured, shows radiographs when one is, and explains a missing
artifact instead of failing.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest


from streamlit.testing.v1 import AppTest  # noqa: E402

from boneage.store.artifacts import ArtifactStore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
from dashboard import common  # noqa: E402
from tests.dashboard.app_driver import open_page  # noqa: E402  (tests/dashboard/app_driver.py)

pytestmark = pytest.mark.integration

PAGES = REPO / "dashboard" / "views"
EMBEDDINGS = PAGES / "4_Embeddings.py"
UNCERTAINTY = PAGES / "5_Uncertainty.py"
FAIRNESS = PAGES / "6_Fairness.py"
ATLAS = PAGES / "8_Maturation_atlas.py"
ALL_PAGES = (EMBEDDINGS, UNCERTAINTY, FAIRNESS, ATLAS)
FIRST_LOAD_TIMEOUT = 120  # first load imports torch, loads the model, may compute Grad-CAMs
RERUN_BUDGET_S = 3.0


@pytest.fixture(scope="module")
def store() -> ArtifactStore:
    s = ArtifactStore.default()
    needed = ["predictions.parquet", "coverage.json", "outliers.json", "embeddings/maps_penultimate.parquet",
              "embeddings/maps_layers.parquet", "embeddings/layer_quality.json", "fairness/test_sex_gaps.csv"]
    missing = [r for r in needed if not s.exists(r)]
    if missing:
        pytest.fail(f"committed artifacts missing in {s.root} (missing {', '.join(missing)}): run "
                    "`python -m pipelines.precompute`", pytrace=False)
    return s


@pytest.fixture
def with_data(monkeypatch, data_dir):
    monkeypatch.setenv("BONEAGE_DATA", str(data_dir))
    return data_dir


@pytest.fixture
def without_data(monkeypatch):
    monkeypatch.delenv("BONEAGE_DATA", raising=False)


def run(page: Path, timeout: float = FIRST_LOAD_TIMEOUT) -> AppTest:
    at = open_page(page, timeout=timeout)
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything a reader sees as text: markdown, captions, headers, alerts, metrics (label and value)."""
    parts = []
    for kind in ("markdown", "caption", "header", "subheader", "title", "info", "warning", "error", "success"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def n_images(at: AppTest) -> int:
    return len(at.get("image"))


def notice_shown(at: AppTest) -> bool:
    return any("BONEAGE_DATA" in str(i.value) for i in at.info)


def timed_rerun(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    assert not at.exception, [e.message for e in at.exception]
    return elapsed


# -- Embeddings ----------------------------------------------------------------------------------------
def test_embeddings_page_layers_outliers_thumbnails(store, with_data):
    at = run(EMBEDDINGS)
    quality = store.json("embeddings/layer_quality.json")["layers"]
    tables = [d.value for d in at.dataframe]
    layer_table = next(t for t in tables if "knn_mae" in t.columns)
    assert set(quality) <= set(layer_table["layer"])
    for name, q in quality.items():
        shown = float(layer_table.loc[layer_table["layer"] == name, "knn_mae"].iloc[0])
        assert shown == pytest.approx(q["knn_mae"])
    # the LOF threshold from outliers.json is quoted
    thr = store.json("outliers.json")["threshold"]
    assert f"{thr:.3f}" in texts(at)
    assert n_images(at) > 0, "thumbnails of the unusual cases should show with a data folder"
    assert not notice_shown(at)
    # every projection / dimension renders
    for method in ("tsne", "umap"):
        at.radio(key="emb_method").set_value(method)
        at.radio(key="emb_dims").set_value(3)
        at.run()
        assert not at.exception
    assert timed_rerun(at) < RERUN_BUDGET_S


def test_embeddings_page_without_data(store, without_data):
    at = run(EMBEDDINGS)
    assert notice_shown(at)
    assert n_images(at) == 0


# -- Uncertainty ---------------------------------------------------------------------------------------
def test_uncertainty_page_shows_coverage(store, with_data):
    at = run(UNCERTAINTY)
    cov = store.json("coverage.json")
    shown = texts(at)
    for variant in ("mondrian", "global"):
        value = cov[variant]["test"]["90"]["coverage"]
        assert f"90% interval, {variant} {value:.1%}" in shown
    assert n_images(at) > 0
    # The Mondrian calibration groups (merged where small) account for every calibration case.
    conformal = store.json("model/conformal.json")
    shown_groups = [d.value for d in at.dataframe if "n_calibration" in d.value.columns]
    assert len(shown_groups) == 1
    assert shown_groups[0]["n_calibration"].sum() == len(conformal["residuals"])
    assert shown_groups[0]["n_calibration"].tolist() == [g["n_calibration"] for g in conformal["groups"]["90"]]
    for split in [s for s in ("official_test", "calib") if s in cov["mondrian"]]:
        at.segmented_control(key="unc_split").set_value(split).run()
        assert not at.exception, [e.message for e in at.exception]
        value = cov["mondrian"][split]["90"]["coverage"]
        if value is not None and not math.isnan(value):
            assert f"90% interval, mondrian {value:.1%}" in texts(at)
    for measure in ("width_90", "entropy"):
        at.selectbox(key="unc_measure").set_value(measure).run()
        assert not at.exception
    at.segmented_control(key="unc_split").set_value("test").run()
    assert timed_rerun(at) < RERUN_BUDGET_S


def test_uncertainty_page_shows_the_precision_benchmark(store, without_data):
    """The precision table comes from artifacts/precision.json, one dataframe per set, every perturbation."""
    prec = store.json("precision.json")
    at = run(UNCERTAINTY)
    assert not at.exception, [e.message for e in at.exception]
    shown = texts(at)
    assert "Does the same hand get the same reading?" in shown
    tables = [d.value for d in at.dataframe if "test_retest_sd" in d.value.columns]
    assert len(tables) == len(prec["sets"])
    for table, rows in zip(tables, prec["sets"].values()):
        assert table["mean_abs"].round(4).tolist() == [round(r["mean_abs"], 4) for r in rows]
    for name, sd in prec["test_retest_sd"].items():
        assert f"test-retest SD over all changes {sd:.2f} months" in shown
    # the floor beside each set: resampling and re-encoding only, no target column
    floors = [d.value for d in at.dataframe if "mean_signed" in d.value.columns and "meets_target" not in d.value.columns]
    assert set(prec["diagnostics"]) == set(prec["sets"]) and len(floors) == len(prec["diagnostics"])
    for table, rows in zip(floors, prec["diagnostics"].values()):
        assert table["mean_abs"].round(4).tolist() == [round(r["mean_abs"], 4) for r in rows]
    assert "The floor (diagnostics, not targets)" in shown
    if not prec["all_targets_met"]:
        assert "Not every change meets the precision target" in shown


def test_uncertainty_page_without_data(store, without_data):
    at = run(UNCERTAINTY)
    assert notice_shown(at)
    assert n_images(at) == 0


# -- Fairness ------------------------------------------------------------------------------------------
def test_fairness_page_gap_test_and_downloads(store, without_data):
    at = run(FAIRNESS)
    gaps = pd.read_csv(store.root / "fairness" / "test_sex_gaps.csv")
    g = gaps[(gaps["scope"] == "all") & (gaps["metric"] == "mae")].iloc[0]
    shown = texts(at)
    assert f"p-value (permutation test) {common.format_p(g['p_value'])}" in shown
    overall = pd.read_csv(store.root / "fairness" / "test_overall.csv").iloc[0]
    assert f"MAE (months) {overall['mae']:.2f}" in shown
    assert len(at.get("download_button")) == 3
    for metric in ("bias", "coverage_90", "within_12"):
        at.radio(key="fair_metric").set_value(metric).run()
        assert not at.exception, [e.message for e in at.exception]
    if store.exists("fairness/official_test_sex_gaps.csv"):
        at.segmented_control(key="fair_split").set_value("official_test").run()
        assert not at.exception, [e.message for e in at.exception]
    assert timed_rerun(at) < RERUN_BUDGET_S


# -- Maturation atlas ----------------------------------------------------------------------------------
def test_atlas_page_with_data_shows_radiographs_and_gradcams(store, with_data):
    at = run(ATLAS, timeout=300)  # first load computes the band-average Grad-CAMs
    assert n_images(at) >= 2, "typical radiographs and their Grad-CAM overlays"
    assert not notice_shown(at)
    assert not at.warning, [w.value for w in at.warning]
    if store.exists("atlas/gradcam.npz"):
        assert "precomputed by" in texts(at), "atlas/gradcam.npz exists but was not used (made with another model?)"
    at.slider(key="atlas_years").set_value(3.0)
    at.radio(key="atlas_sex").set_value("M")
    elapsed = timed_rerun(at)  # new typical cases: their Grad-CAMs are precomputed (or 4 computed live)
    assert n_images(at) >= 2
    assert elapsed < RERUN_BUDGET_S, (
        f"atlas rerun took {elapsed:.1f}s" + ("" if store.exists("atlas/gradcam.npz") else
                                              ": precompute its maps with `python -m pipelines.precompute --only atlas`"))


def test_atlas_page_without_data(store, without_data):
    at = run(ATLAS)
    assert notice_shown(at)
    assert n_images(at) == 0
    assert "developmental stage" in texts(at)


def test_atlas_page_computes_maps_live_without_the_precomputed_ones(store, with_data, tmp_path, monkeypatch):
    import streamlit as st

    for p in store.root.iterdir():  # the same artifact set without atlas/
        if p.name != "atlas":
            (tmp_path / p.name).symlink_to(p)
    monkeypatch.setenv("BONEAGE_ARTIFACTS", str(tmp_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = run(ATLAS, timeout=600)
        assert n_images(at) >= 2
        # the one warning is the frame's manifest banner, naming the atlas file this set lacks
        assert [w.value for w in at.warning if "gradcam.npz" not in w.value] == [], [w.value for w in at.warning]
        assert "precomputed by" not in texts(at)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


# -- Missing artifacts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: p.stem)
def test_pages_explain_missing_artifacts(page, tmp_path, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("BONEAGE_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("BONEAGE_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = run(page, timeout=60)
        errors = " ".join(str(e.value) for e in at.error)
        assert "is missing" in errors and "pipelines.precompute" in errors
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
