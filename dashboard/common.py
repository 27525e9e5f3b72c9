"""Page plumbing for the dashboard: the page table, the frame around every page, and cached access to the
artifacts, the model, the data folder and images.

Pages call these and lay out results; analysis lives in ``boneage/``. The dashboard is one Streamlit app
(``dashboard/app.py``, started by ``./run.sh``); the project is installed (``pip install -e .``), so pages import
``from dashboard import common`` and ``boneage`` like any other package.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from boneage.store.artifacts import ArtifactMissingError, ArtifactStore
from boneage.config import DATA_ENV, DataDirError, resolve_data_dir
from boneage.geometry.hand import hand_mask
from boneage.io.imaging import ImageLoadError

SPLIT_LABELS = {"test": "Internal test", "official_test": "Official test (RSNA)", "val": "Validation",
                "calib": "Calibration", "train": "Training"}


@dataclass(frozen=True)
class PageSpec:
    """One page of the dashboard: its script (relative to ``dashboard/``), the title in the sidebar and the
    browser tab, its URL path ("" for the home page) and the heading shown above it (default: the title)."""

    file: str
    title: str
    url_path: str
    heading: str | None = None

    @property
    def header(self) -> str:
        return self.heading or self.title


# The pages in sidebar order; titles and URL paths are those of the former pages/ folder.
PAGES = (
    PageSpec("views/0_Home.py", "Home", "", heading="Pediatric bone age"),
    PageSpec("views/1_Overview.py", "Overview", "Overview"),
    PageSpec("views/2_Error_browser.py", "Error browser", "Error_browser"),
    PageSpec("views/3_Explain.py", "Explain", "Explain"),
    PageSpec("views/4_Embeddings.py", "Embeddings", "Embeddings"),
    PageSpec("views/5_Uncertainty.py", "Uncertainty", "Uncertainty"),
    PageSpec("views/6_Fairness.py", "Fairness", "Fairness"),
    PageSpec("views/7_Predict.py", "Predict", "Predict"),
    PageSpec("views/8_Maturation_atlas.py", "Maturation atlas", "Maturation_atlas"),
    PageSpec("views/9_Explanation_audit.py", "Explanation audit", "Explanation_audit"),
    PageSpec("views/10_Patient.py", "Patient", "Patient"),
)
PAGE_ICON = ":material/radiology:"


def page_frame(spec: PageSpec) -> None:
    """What every page shows above its own content: the tab title, the heading and the artifact banner."""
    st.set_page_config(page_title=f"{spec.header} | Bone age", page_icon=PAGE_ICON, layout="wide")
    st.title(spec.header)
    manifest_banner()


@st.cache_resource(show_spinner=False)
def store() -> ArtifactStore:
    return ArtifactStore.default()


@st.cache_resource(show_spinner="Loading the model...")
def predictor():
    from boneage.inference.predictor import load_predictor

    # The model of the artifact set in use ($BONEAGE_ARTIFACTS or artifacts/), so that features, outlier
    # scores and conformal intervals match the predictions table.
    return load_predictor(store().root / "model")


def tta_description() -> str:
    """What the shipped model's test-time augmentation averages, in words."""
    from boneage.nn.forward import describe_tta

    return describe_tta(predictor().cfg.tta_views)


@st.cache_data(show_spinner=False)
def predictions() -> pd.DataFrame:
    return store().predictions()


@st.cache_data(show_spinner=False)
def features() -> np.ndarray:
    return store().features()


@st.cache_resource(show_spinner=False)
def similar_cases_index():
    """Nearest-neighbour index over training-split penultimate features."""
    from boneage.evaluation.embeddings import SimilarCases

    df = predictions()
    mask = (df["split"] == "train").to_numpy()
    return SimilarCases(features()[mask], df.loc[mask, ["id", "male", "sex", "boneage", "boneage_pred"]])


@st.cache_resource(show_spinner=False)
def outlier_detector():
    """LOF refitted on the committed training features (deterministic), for scoring uploads."""
    from boneage.evaluation.embeddings import OutlierDetector

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
def case_prepared(case_id: str, split: str):
    """A case's film as the shipped model reads it (:class:`boneage.geometry.preprocess.Prepared`: the uint8 base image and
    its other phase views), or None without data or when the file cannot be read (with a warning)."""
    from boneage.io.imaging import read_radiograph, safe_image_path

    folder = image_dir_for(split)
    if folder is None:
        return None
    try:
        return predictor().prepare(read_radiograph(safe_image_path(folder, case_id)))
    except ImageLoadError as exc:
        st.warning(str(exc))
        return None


def case_image(case_id: str, split: str) -> np.ndarray | None:
    """Preprocessed base-size uint8 image of a case in the shipped model's geometry (what the network
    sees), or None without data."""
    prepared = case_prepared(case_id, split)
    return None if prepared is None else prepared.image


def case_views(case_id: str, split: str) -> np.ndarray | None:
    """The other phase views of a case's film (uint8), which its reading averages with :func:`case_image`;
    None for a film with one view, or without data."""
    prepared = case_prepared(case_id, split)
    return None if prepared is None else prepared.extra_views


@st.cache_data(show_spinner=False, max_entries=128)
def case_raw_image(case_id: str, split: str) -> np.ndarray | None:
    """The radiograph as stored (for display at full size), 8-bit, or None without data."""
    from boneage.io.imaging import read_radiograph, safe_image_path

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


# -- additions for Home / Overview / Error browser / Explain / Predict ------------------------------------
CASE_KEY, CASE_SPLIT_KEY = "case_id", "case_split"  # the case chosen on one page, opened on another
ERROR_BROWSER = "views/2_Error_browser.py"
EXPLAIN = "views/3_Explain.py"


def artifact_or_none(fn, *args, **kwargs):
    """Like :func:`artifact_or_stop` but the page goes on: shows what is missing and returns None."""
    try:
        return fn(*args, **kwargs)
    except ArtifactMissingError as exc:
        st.error(str(exc), icon=":material/error:")
        return None


@st.cache_data(show_spinner=False)
def artifact_json(rel: str):
    return store().json(rel)


@st.cache_data(show_spinner=False)
def metrics() -> dict:
    return store().metrics()


@st.cache_data(show_spinner=False)
def history() -> pd.DataFrame:
    return store().history()


def base_size() -> int:
    """Side of the base image the shipped model reads (its geometry, from ``config.json``; 100 if absent)."""
    cfg = artifact_or_none(model_config) or {}
    return int(cfg.get("model", {}).get("base_size", 100))


def base_label() -> str:
    """'100x100' for the shipped model: how image captions name what the network sees."""
    b = base_size()
    return f"{b}x{b}"


@st.cache_data(show_spinner=False)
def model_config() -> dict:
    return store().model_config()


@st.cache_data(show_spinner=False)
def model_card() -> str:
    return store().model_card()


def split_rows(split: str, labelled: bool = False) -> pd.DataFrame:
    """Prediction rows of one split; ``labelled`` keeps only rows with a reference bone age."""
    df = predictions()
    d = df[df["split"] == split]
    return d[d["boneage"].notna()] if labelled else d


@st.cache_data(show_spinner=False)
def mae_ci(split: str, by: tuple[str, ...] = (), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """MAE with 95% bootstrap CI per group (``by=()``: overall) on the labelled rows of a split."""
    from boneage.evaluation.metrics import mae_ci_table

    return mae_ci_table(split_rows(split, labelled=True), list(by) or None, n_boot=n_boot, seed=seed)


@st.cache_data(show_spinner=False)
def stage_report(split: str) -> tuple[dict, bool]:
    """Stage calibration report (confusion, ROC ...) of a split and whether it came from the artifact.

    Read from ``stage_calibration.json`` when it exists, else computed from the predictions table with the
    same function (:func:`boneage.evaluation.calibration.stage_calibration_report`).
    """
    if store().exists("stage_calibration.json"):
        rep = store().json("stage_calibration.json")
        if split in rep:
            return rep[split], True
    from boneage.evaluation.calibration import stage_calibration_report
    from boneage.config import model_config_from_dict

    stages = model_config_from_dict(model_config()["model"]).stages
    d = split_rows(split)
    return stage_calibration_report(d[d["stage_true"] >= 0], stages), False


@st.cache_data(show_spinner=False)
def bland_altman(split: str) -> tuple[pd.DataFrame, dict]:
    from boneage.evidence.error_analysis import bland_altman as _ba

    ba = _ba(split_rows(split, labelled=True))
    return ba.points, ba.summary


def stage_names() -> list[str]:
    try:
        from boneage.config import model_config_from_dict

        return list(model_config_from_dict(model_config()["model"]).stages.names)
    except ArtifactMissingError:
        from boneage.config import StageConfig

        return list(StageConfig().names)


def open_case(case_id: str, split: str, page: str | None = ERROR_BROWSER) -> None:
    """Remember a case for the other pages; with ``page``, switch to it (does not return)."""
    st.session_state[CASE_KEY] = str(case_id)
    st.session_state[CASE_SPLIT_KEY] = split
    if page:
        st.switch_page(page)


def selected_case() -> tuple[str, str] | None:
    """The (id, split) chosen on another page, or None."""
    cid = st.session_state.get(CASE_KEY)
    if not cid:
        return None
    split = st.session_state.get(CASE_SPLIT_KEY)
    if not split:
        row = case_row(cid)
        split = row["split"] if row is not None else "test"
    return str(cid), str(split)


def case_row(case_id: str) -> pd.Series | None:
    """The predictions-table row of a case (the first if an id occurs in both test sets)."""
    df = predictions()
    hit = df[df["id"] == str(case_id)]
    return None if hit.empty else hit.iloc[0]


def case_row_in(case_id: str, split: str) -> pd.Series | None:
    df = predictions()
    hit = df[(df["id"] == str(case_id)) & (df["split"] == split)]
    return None if hit.empty else hit.iloc[0]


@st.cache_data(show_spinner=False, max_entries=256)
def case_feature(case_id: str, split: str) -> np.ndarray | None:
    """Precomputed penultimate feature vector of a case (no model run)."""
    df = predictions()
    idx = np.flatnonzero(((df["id"] == str(case_id)) & (df["split"] == split)).to_numpy())
    return None if len(idx) == 0 else features()[idx[0]]


@st.cache_data(show_spinner=False, max_entries=256)
def case_attribution(case_id: str, split: str, method: str, layer: str | None = None,
                     _progress=None) -> np.ndarray | None:
    """Attribution heatmap (base size, in [0, 1]) of a dataset case, cached on (id, split, method, layer)."""
    from boneage.evidence import explain
    img = case_image(case_id, split)
    row = case_row_in(case_id, split)
    if img is None or row is None:
        return None
    return explain.attribute(predictor().model, img, bool(row["male"]), method, layer=layer, progress=_progress)


@st.cache_data(show_spinner=False, max_entries=128)
def image_attribution(image: np.ndarray, male: bool, method: str, layer: str | None = None,
                      _progress=None) -> np.ndarray:
    """Attribution heatmap of an arbitrary preprocessed image (an upload), cached on its pixels."""
    from boneage.evidence import explain
    return explain.attribute(predictor().model, image, bool(male), method, layer=layer, progress=_progress)


@st.cache_data(show_spinner=False, max_entries=64)
def image_activations(image: np.ndarray, male: bool, layer: str, max_maps: int = 32) -> np.ndarray:
    from boneage.evidence import explain
    return explain.layer_activations(predictor().model, image, bool(male), layer, max_maps=max_maps, normalize=True)


@st.cache_data(show_spinner=False, max_entries=128)
def image_sex_flip(image: np.ndarray, male: bool, extra_views: np.ndarray | None = None) -> dict:
    """The film read with each sex, as the shipped model reads it (``extra_views``: its other phase views)."""
    from boneage.evidence import explain
    return explain.sex_flip(predictor(), image, bool(male), extra_views)


@st.cache_data(show_spinner=False, max_entries=64)
def assess_upload(data: bytes, name: str, male: bool, site: str | None = None):
    """:func:`boneage.inference.assess.assess` of an upload with the model and the outlier check of the artifact set in
    use (``site``: a profile of that set), cached on the bytes; the chronological age is applied by the page
    (:meth:`Assessment.with_chronological_age`, no new prediction). Raises ImageLoadError with the reason."""
    from boneage.inference.assess import assess

    try:
        detector = outlier_detector()
    except ArtifactMissingError:
        detector = None  # the page says that the check is unavailable
    return assess(data, male, name=name, predictor=site_predictor(site) if site else predictor(),
                  outlier_check=detector, upload=True)


def site_names() -> list[str]:
    """Site profiles of the artifact set in use (``sites/<name>.json``)."""
    from boneage.evaluation.site_calibration import available_sites

    return available_sites(store().root / "sites")


@st.cache_data(show_spinner=False)
def model_fingerprint() -> str:
    """sha256 of the networks of the artifact set in use (as recorded in site profiles)."""
    from boneage.store.manifest import model_fingerprint as fingerprint

    return fingerprint(store().root / "model")


@st.cache_resource(show_spinner=False)
def site_predictor(name: str):
    """The model with a site profile applied; raises SiteProfileError when it does not fit the model."""
    return predictor().with_site(store().root / "sites" / f"{name}.json")


_MD_SPECIAL = set("\\`*_{}[]()#+!|<>~$:")


def md_escape(text: str) -> str:
    """User-supplied text (file names, ids) made inert for st.markdown / st.error: every markdown
    character is backslash-escaped, so a name like ``[x](http://...)`` shows as written, never as a link."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in str(text))


# -- case tables (Error browser, Embeddings, Uncertainty) -----------------------------------------------------
def case_column_config() -> dict:
    """One set of labels and formats for the predictions-table columns wherever cases are listed."""
    num, cc = st.column_config.NumberColumn, st.column_config
    return {
        "id": cc.TextColumn("id"),
        "boneage": num("reference (mo)", format="%.1f"),
        "boneage_pred": num("predicted (mo)", format="%.1f"),
        "residual": num("pred - ref (mo)", format="%+.1f"),
        "abs_error": num("|error| (mo)", format="%.1f"),
        "uncertainty": num("model scale (mo)", format="%.1f"),
        "lower_90": num("90% low", format="%.0f"),
        "upper_90": num("90% high", format="%.0f"),
        "width_90": num("90% width", format="%.0f"),
        "entropy": num("stage entropy", format="%.3f"),
        "stage_true": "true stage",
        "stage_pred": "predicted stage",
        "outlier_score": num("LOF score", format="%.2f"),
        "is_outlier": cc.CheckboxColumn("outlier flag"),
    }


def case_table(cases: pd.DataFrame, key: str, open_selected: bool = True, **kwargs) -> pd.Series | None:
    """A single-row-selectable table of cases with :func:`case_column_config`; returns the selected row (None
    without one). ``open_selected``: the selected case opens in the Error browser (needs ``id`` and ``split``)."""
    event = st.dataframe(cases, key=key, on_select="rerun", selection_mode="single-row", hide_index=True,
                         column_config=case_column_config(), **kwargs)
    rows = event.selection.rows if event is not None and event.selection else []
    if not rows or rows[0] >= len(cases):
        return None
    row = cases.iloc[rows[0]]
    if open_selected:
        try_open_case(str(row["id"]), str(row["split"]))
    return row


def case_thumbnails(cases: pd.DataFrame, caption, per_row: int, what: str) -> None:
    """The preprocessed radiographs of ``cases`` (``id``, ``split``) in rows of ``per_row``, each captioned
    ``caption(row)``; without a data folder the notice instead (``what`` names the images)."""
    if data_dir() is None:
        data_dir_notice(what)
        return
    cols = st.columns(per_row)
    for i, (_, r) in enumerate(cases.iterrows()):
        img = case_image(str(r["id"]), str(r["split"]))
        with cols[i % per_row]:
            if img is None:
                st.caption(f"{r['id']}: image not found")
            else:
                st.image(img, caption=caption(r), width="stretch")


def show_radiograph_or_notice(case_id: str, split: str, caption: str | None = None, width: int | None = None) -> bool:
    """The stored radiograph of a case, or the data-folder notice; True when shown."""
    if data_dir() is None:
        data_dir_notice()
        return False
    raw = case_raw_image(case_id, split)
    if raw is None:
        st.warning(f"Radiograph of case {case_id} not found in {image_dir_for(split)}.")
        return False
    st.image(raw, caption=caption, width=width or "stretch")
    return True


# -- additions for Embeddings / Uncertainty / Fairness / Maturation atlas --------------------------------
@st.cache_data(show_spinner=False)
def embedding_map(rel: str = "embeddings/maps_penultimate.parquet") -> pd.DataFrame:
    """A map table joined with the case columns of the predictions table (by id)."""
    from boneage.evaluation.embeddings import maps_with_cases

    return maps_with_cases(store().table(rel), predictions())


def fairness_splits() -> list[str]:
    """Splits with a precomputed fairness audit (``fairness/<split>_by_sex.csv``), test sets first."""
    folder = store().root / "fairness"
    found = {p.name[: -len("_by_sex.csv")] for p in folder.glob("*_by_sex.csv")} if folder.is_dir() else set()
    order = [s for s in SPLIT_LABELS if s in found]
    return order + sorted(found - set(order))


@st.cache_data(show_spinner=False)
def fairness_tables(split: str) -> dict[str, pd.DataFrame]:
    return store().fairness_tables(split)


def format_p(p) -> str:
    """A p-value for display: 3 decimals, or scientific below 0.001; a dash when unknown."""
    if p is None or pd.isna(p):
        return "–"
    p = float(p)
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def split_label(split: str) -> str:
    return SPLIT_LABELS.get(split, split)


def try_open_case(case_id: str, split: str) -> None:
    """Open a case in the Error browser; if that page is not there, say which case was picked instead."""
    from streamlit.errors import StreamlitAPIException

    try:
        open_case(case_id, split)
    except StreamlitAPIException:
        st.info(f"Case {case_id} ({split_label(split)}) selected; the Error browser page is not available.")


@st.cache_data(show_spinner="Averaging Grad-CAM over the band's radiographs...", max_entries=64)
def average_gradcam_of(ids: tuple[str, ...], splits: tuple[str, ...], males: tuple[bool, ...],
                       layer: str | None = None):
    """Mean preprocessed image and mean Grad-CAM (both at the base size) over cases, or None without their images.

    Cases whose image cannot be read are left out; returns (mean_image uint8, heatmap [0, 1], n used).
    """
    from boneage.evidence import explain
    imgs, used_males = [], []
    for cid, split, male in zip(ids, splits, males):
        img = case_image(cid, split)
        if img is not None:
            imgs.append(img)
            used_males.append(bool(male))
    if not imgs:
        return None
    stack = np.stack(imgs)
    heat = explain.average_gradcam(predictor().model, stack, np.array(used_males), layer=layer)
    return stack.mean(0).round().astype(np.uint8), heat, len(imgs)


@st.cache_resource(show_spinner=False)
def atlas_heatmaps():
    """Precomputed maturation-atlas Grad-CAMs (``atlas/gradcam.npz``), or None when absent or made with a
    different model than the one in use (then the atlas computes its maps live)."""
    from boneage.evidence.atlas import ATLAS_FILE, AtlasHeatmaps
    from boneage.store.manifest import sha256_file

    s = store()
    weights = s.root / "model" / "model.pt"
    if not s.exists(ATLAS_FILE) or not weights.is_file():
        return None
    with np.load(s.path(ATLAS_FILE), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if str(arrays.get("model_sha256", "")) != sha256_file(weights):
        return None
    return AtlasHeatmaps(arrays)


@st.cache_data(show_spinner=False, max_entries=64)
def mean_image_of(ids: tuple[str, ...], splits: tuple[str, ...]):
    """Pixel-wise mean of cases' preprocessed images (uint8) and how many were found, or None."""
    imgs = [img for img in (case_image(c, s) for c, s in zip(ids, splits)) if img is not None]
    if not imgs:
        return None
    return np.stack(imgs).mean(0).round().astype(np.uint8), len(imgs)


# -- explanation audit ------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False)
def artifact_table(rel: str) -> pd.DataFrame:
    return store().table(rel)


@st.cache_data(show_spinner=False)
def model_sha256() -> str | None:
    """sha256 of the model weights in use (to tell whether a precomputed artifact belongs to them)."""
    from boneage.store.manifest import sha256_file

    weights = store().root / "model" / "model.pt"
    return sha256_file(weights) if weights.is_file() else None


@st.cache_data(show_spinner=False, max_entries=64)
def hand_outline(image: np.ndarray) -> np.ndarray:
    """The hand mask of a model input (:func:`boneage.geometry.hand.hand_mask`), drawn over every heatmap."""
    return hand_mask(image)


def attention_note(image: np.ndarray, heatmap: np.ndarray, label: str) -> tuple[str, bool]:
    """A caption sentence on how much of a shown map lies on the hand, and whether it is mostly off it."""
    from boneage.evidence.explanation_audit import attribution_shares, describe_shares

    shares = attribution_shares(heatmap, mask=hand_outline(image))  # the outline the page draws, segmented once
    return describe_shares(shares, label), shares.off_hand


def audit_method_note(method: str) -> str:
    """What the explanation audit says about a method ('' without an audit of the model in use)."""
    from boneage.evidence.explanation_audit import AUDIT_FILE

    if not store().exists(AUDIT_FILE):
        return ""
    audit = artifact_json(AUDIT_FILE)
    e = audit.get("methods", {}).get(method)
    if e is None or audit.get("model_sha256") != model_sha256():
        return ""
    if not e["sanity"]["passes"]:
        return (f" Explanation audit: {e['label']} fails the sanity check (its maps keep a rank correlation of "
                f"{e['sanity']['rho_top_half']:.2f} with themselves when half the network is replaced by noise), so "
                "it shows the image's structure more than this model's reasoning.")
    if audit["default_method"]["method"] == method:
        return " Explanation audit: the default method (see the Explanation audit page)."
    return ""



# -- the clinical answer: sex from a DICOM header, the reference chart, the demonstration series -------------
@st.cache_data(show_spinner=False, max_entries=64)
def upload_patient(data: bytes, name: str):
    """What an upload's DICOM header says about the patient (:class:`boneage.io.dicom_patient.PatientInfo`),
    None for a file that is not DICOM."""
    from boneage.io.dicom_patient import read_patient_info

    if not name.lower().endswith((".dcm", ".dicom")) and data[128:132] != b"DICM":
        return None
    try:
        return read_patient_info(data, name)
    except ImageLoadError:
        return None


def check_upload(data: bytes, name: str) -> None:
    """The input gate alone (no reading): raises ImageLoadError with the reason for a file that cannot be a
    hand radiograph, so a bad upload is named before its sex is chosen."""
    from boneage.io.input_gate import load_radiograph_bytes

    load_radiograph_bytes(data, name, upload=True)


def growth_chart(male: bool, points: pd.DataFrame, title: str = ""):
    """Plotly figure: the reference's mean bone age and +/-2 SD band over chronological age for the sex
    (:func:`boneage.growth.reference.load_reference`), and ``points`` (chronological_age_months,
    boneage_pred, optional lower_90 / upper_90, label) as the child's readings."""
    import plotly.graph_objects as go

    from boneage.growth.reference import load_reference

    ref = load_reference()
    band = ref.band(male)
    x = band["chronological_age_months"] / 12
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(x) + list(x[::-1]), y=list(band["upper"] / 12) + list(band["lower"][::-1] / 12),
                             fill="toself", fillcolor="rgba(120,130,170,0.2)", line=dict(width=0),
                             name="mean +/- 2 SD", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=band["mean"] / 12, mode="lines", line=dict(color="rgb(90,90,110)"), name="mean"))
    if len(points):
        err = None
        if {"lower_90", "upper_90"} <= set(points.columns):
            err = dict(type="data", symmetric=False, array=(points["upper_90"] - points["boneage_pred"]) / 12,
                       arrayminus=(points["boneage_pred"] - points["lower_90"]) / 12)
        fig.add_trace(go.Scatter(x=points["chronological_age_months"] / 12, y=points["boneage_pred"] / 12,
                                 mode="lines+markers", marker=dict(size=10, color="rgb(200,40,40)"), error_y=err,
                                 text=points.get("label"), name="this child (90% interval)"))
    fig.update_layout(title=title or f"{ref.name}, {'boys' if male else 'girls'}", xaxis_title="chronological age (years)",
                      yaxis_title="bone age (years)", height=420, margin=dict(l=10, r=10, t=40, b=10))
    return fig
