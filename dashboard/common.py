"""Shared, cached access for the dashboard pages: artifacts, the model, the data directory and images.

Pages call these and lay out results; analysis lives in ``boneage/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/Home.py` puts dashboard/ on the path, not the repo
    sys.path.insert(0, str(ROOT))

from boneage.artifacts import ArtifactMissingError, ArtifactStore  # noqa: E402
from boneage.config import DATA_ENV, DataDirError, resolve_data_dir  # noqa: E402
from boneage.imaging import ImageLoadError  # noqa: E402

SPLIT_LABELS = {"test": "Internal test", "official_test": "Official test (RSNA)", "val": "Validation",
                "calib": "Calibration", "train": "Training"}


def page_setup(title: str, icon: str = ":material/radiology:") -> None:
    st.set_page_config(page_title=f"{title} | Bone age", page_icon=icon, layout="wide")
    st.title(title)


@st.cache_resource(show_spinner=False)
def store() -> ArtifactStore:
    return ArtifactStore.default()


@st.cache_resource(show_spinner="Loading the model...")
def predictor():
    from boneage.predictor import load_predictor

    return load_predictor()


@st.cache_data(show_spinner=False)
def predictions() -> pd.DataFrame:
    return store().predictions()


@st.cache_data(show_spinner=False)
def features() -> np.ndarray:
    return store().features()


@st.cache_resource(show_spinner=False)
def similar_cases_index():
    """Nearest-neighbour index over training-split penultimate features."""
    from boneage.embeddings import SimilarCases

    df = predictions()
    mask = (df["split"] == "train").to_numpy()
    return SimilarCases(features()[mask], df.loc[mask, ["id", "male", "sex", "boneage", "boneage_pred"]])


@st.cache_resource(show_spinner=False)
def outlier_detector():
    """LOF refitted on the committed training features (deterministic), for scoring uploads."""
    from boneage.embeddings import OutlierDetector

    df = predictions()
    return OutlierDetector().fit(features()[(df["split"] == "train").to_numpy()])


def artifact_or_stop(fn, *args, **kwargs):
    """Call an artifact loader; on a missing artifact show what and how to fix, and stop the page."""
    try:
        return fn(*args, **kwargs)
    except ArtifactMissingError as exc:
        st.error(str(exc))
        st.stop()


def data_dir() -> Path | None:
    """The configured RSNA data folder, or None (pages then explain how to set it)."""
    try:
        return resolve_data_dir(None, required=True)
    except DataDirError:
        return None


def data_dir_notice(what: str = "Radiographs") -> None:
    st.info(f"{what} are shown only where the RSNA data folder is configured: start the dashboard with "
            f"`{DATA_ENV}=/path/to/rsna-bone-age ./run.sh` (the folder holding train/ and test/). "
            "Everything else on this page works without it.", icon=":material/folder_off:")


def image_dir_for(split: str) -> Path | None:
    d = data_dir()
    if d is None:
        return None
    return d / ("test" if split == "official_test" else "train")


@st.cache_data(show_spinner=False, max_entries=512)
def case_image(case_id: str, split: str) -> np.ndarray | None:
    """Preprocessed 100x100 uint8 image of a case (what the network sees), or None without data."""
    from boneage.data import load_case_image
    from boneage.preprocess import to_uint8

    folder = image_dir_for(split)
    if folder is None:
        return None
    try:
        return to_uint8(load_case_image(folder, case_id))
    except ImageLoadError as exc:
        st.warning(str(exc))
        return None


@st.cache_data(show_spinner=False, max_entries=128)
def case_raw_image(case_id: str, split: str) -> np.ndarray | None:
    """The radiograph as stored (for display at full size), 8-bit, or None without data."""
    from boneage.imaging import read_radiograph, safe_image_path

    folder = image_dir_for(split)
    if folder is None:
        return None
    try:
        arr = read_radiograph(safe_image_path(folder, case_id))
    except ImageLoadError as exc:
        st.warning(str(exc))
        return None
    lo, hi = np.percentile(arr, [0.5, 99.5])
    return np.clip((arr - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)


def manifest_banner() -> None:
    """A warning listing missing or stale artifacts (empty when all is well)."""
    problems = store().problems()
    if problems:
        st.warning("Some artifacts are missing or stale; pages using them say what to run:\n\n"
                   + "\n".join(f"- {p}" for p in problems[:12]), icon=":material/warning:")


def months_to_text(m: float) -> str:
    return f"{m:.1f} months ({m / 12:.1f} years)"
