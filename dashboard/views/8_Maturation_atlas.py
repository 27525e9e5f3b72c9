"""Maturation atlas (for teaching): typical hands of a chosen bone age and sex, where the model looks on
them, and how its average attention moves as the skeleton matures."""
from __future__ import annotations

import streamlit as st

from boneage.evidence import explain
from boneage.evidence.atlas import AGE_GRID_YEARS, N_PER_BAND, N_TYPICAL, band_samples, typical_cases
from boneage.config import StageConfig, model_config_from_dict
from boneage.evidence.render import overlay
from dashboard import common

st.markdown(
    "An atlas in the spirit of Greulich and Pyle, built from this data set: pick a **bone age** and a **sex** to "
    "see training radiographs whose reference bone age is closest to it *and* which the model reads well "
    "(smallest error), each with its **Grad-CAM** map: the regions whose features push the predicted age up. "
    "Below, the attention averaged over several hands per age band shows how the model's focus shifts as the "
    f"skeleton matures. Images are shown as the network sees them (preprocessed, {common.base_label()} pixels).")
st.caption("For teaching and for understanding the model; Grad-CAM shows where a network looks, not why, and "
           "is no substitute for reading the radiograph.")

preds = common.artifact_or_stop(common.predictions)
has_data = common.data_dir() is not None

c1, c2 = st.columns([1, 3])
sex = c1.radio("Sex", ("F", "M"), format_func={"F": "Girl", "M": "Boy"}.get, horizontal=True, key="atlas_sex")
step = AGE_GRID_YEARS[1] - AGE_GRID_YEARS[0]
years = c2.slider("Bone age (years)", AGE_GRID_YEARS[0], AGE_GRID_YEARS[-1], 10.0, step=step, key="atlas_years")
male = sex == "M"
months = years * 12
try:
    stage_cfg = model_config_from_dict(common.model_config()["model"]).stages
except Exception:  # noqa: BLE001 - no model config: the default thresholds
    stage_cfg = StageConfig()
stage = stage_cfg.names[stage_cfg.stage_of(months)]

typical = typical_cases(preds, months, male, k=N_TYPICAL)
st.subheader(f"Typical {'boys' if male else 'girls'} at {years:g} years ({months:.0f} months)"
             + f": developmental stage {stage}")
if typical.empty:
    st.info("No training cases of this sex with a reference age in the predictions table.")
else:
    far = typical["age_distance"].max()
    if far > 12:
        st.caption(f"Few training cases are this age: the nearest are up to {far / 12:.1f} years away.")


precomputed = common.atlas_heatmaps()  # None: maps are computed live (slower on the first visit of an age)


def gradcam_or_none(case_id: str, split: str):
    """Grad-CAM of a case (precomputed when available), or None with a message when there is no model."""
    heat = precomputed.case(case_id, split) if precomputed is not None else None
    if heat is not None:
        return heat
    try:
        return common.case_attribution(case_id, split, "gradcam")
    except FileNotFoundError as exc:  # ModelNotFoundError
        st.warning(f"Grad-CAM unavailable: {exc}")
        return None


if not has_data:
    common.data_dir_notice("The atlas radiographs and their Grad-CAM maps")
    if not typical.empty:
        st.dataframe(typical[["id", "sex", "boneage", "boneage_pred", "abs_error"]], hide_index=True,
                     column_config={"boneage": st.column_config.NumberColumn("reference (mo)", format="%.0f"),
                                    "boneage_pred": st.column_config.NumberColumn("predicted (mo)", format="%.1f"),
                                    "abs_error": st.column_config.NumberColumn("|error| (mo)", format="%.1f")})
        st.caption("The cases the atlas would show at this age.")
elif not typical.empty:
    alpha = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, step=0.05, key="atlas_alpha")
    cols = st.columns(len(typical))
    for c, (_, r) in zip(cols, typical.iterrows()):
        cid, split = str(r["id"]), str(r["split"])
        img = common.case_image(cid, split)
        with c:
            if img is None:
                st.caption(f"Case {cid}: image not found.")
                continue
            st.image(img, caption=f"Case {cid}: reference {r['boneage'] / 12:.1f} y, predicted "
                                  f"{r['boneage_pred'] / 12:.1f} y", width="stretch")
            heat = gradcam_or_none(cid, split)
            if heat is not None:
                st.image(overlay(img, heat, alpha), caption="Grad-CAM (red = most attention)", width="stretch")

# -- average attention per age band ------------------------------------------------------------------
st.header("How attention moves with maturity")
st.markdown(
    f"Average Grad-CAM of up to {N_PER_BAND} well-read training radiographs per band of reference bone age "
    f"(half girls, half boys, nearest the band's middle), drawn on the average of those radiographs. Bone "
    "age is itself a measure of maturity, so both sexes belong together in a band.")
if not has_data:
    common.data_dir_notice("The average attention maps")
else:
    bands = band_samples(preds, None, n_per_band=N_PER_BAND)
    if bands.empty:
        st.info("No training cases with a reference age.")
    else:
        layer_label = precomputed.layer if precomputed is not None else None
        if layer_label is None:
            try:
                layer_label = next(iter(explain.gradcam_layers(common.predictor().model)))
            except Exception as exc:  # noqa: BLE001 - model missing: say so, keep the page
                st.warning(f"Grad-CAM unavailable: {exc}")
        if layer_label is not None:
            names = list(dict.fromkeys(bands["age_band"]))
            cols = st.columns(len(names))
            for c, band in zip(cols, names):
                g = bands[bands["age_band"] == band]
                ids, splits_ = tuple(g["id"].astype(str)), tuple(g["split"])
                heat = precomputed.band(band, ids) if precomputed is not None else None
                if heat is not None:
                    res = common.mean_image_of(ids, splits_)
                    res = None if res is None else (res[0], heat, res[1])
                else:
                    res = common.average_gradcam_of(ids, splits_, tuple(g["male"].astype(bool)))
                with c:
                    if res is None:
                        st.caption(f"{band}: images not found.")
                        continue
                    mean_img, heat, n = res
                    st.image(overlay(mean_img, heat, 0.5), caption=f"{band} (n = {n})", width="stretch")
                    st.image(overlay(mean_img, heat, 1.0), caption="heatmap alone", width="stretch")
            source = "" if precomputed is None else " (maps precomputed by `python -m pipelines.precompute --only atlas`)"
            st.caption(f"Grad-CAM layer: {layer_label}{source}. Hands differ in position and size, so the average "
                       "radiograph is blurred; read the maps as where attention concentrates on average (fingers and "
                       "their growth plates vs the wrist and carpal bones), not as exact anatomy.")
