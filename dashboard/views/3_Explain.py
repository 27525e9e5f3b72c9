"""Explain: where the network looks for one radiograph (a dataset case or an upload), and why."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from boneage.evidence import explain
from boneage.evidence.render import activation_mosaic, draw_outline, overlay
from dashboard import common


df = common.artifact_or_stop(common.predictions)
names = common.stage_names()


def enlarge(img: np.ndarray, k: int | None = None) -> np.ndarray:
    """Nearest-neighbour enlargement for display: the base-size pixels the model sees, kept sharp
    (about 300 px wide; a base image of 300 px or more is shown as it is). ``img`` is (H, W) or (H, W, 3)."""
    k = k or max(1, round(300 / max(img.shape[0], img.shape[1], 1)))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


# -- which image ---------------------------------------------------------------------------------------------
source = st.segmented_control("Radiograph", ["case", "upload"], default="case", required=True, key="ex_source",
                              format_func={"case": "A case from the data set", "upload": "Upload a radiograph"}.get)
img = male = pred_text = feature = exclude = views = None
case_id = split = None
if source == "case":
    chosen = common.selected_case()
    if chosen is None:  # a typical internal test case: the one with the median error
        t = df[(df["split"] == "test") & df["boneage"].notna()].sort_values("abs_error")
        chosen = (str(t["id"].iloc[len(t) // 2]), "test") if len(t) else (str(df["id"].iloc[0]), str(df["split"].iloc[0]))
    splits = [s for s in ("test", "official_test", "val", "calib", "train") if s in set(df["split"])]
    c1, c2, _ = st.columns([1, 1, 2])
    split = c1.selectbox("Split", splits, index=splits.index(chosen[1]) if chosen[1] in splits else 0,
                         format_func=lambda s: common.SPLIT_LABELS.get(s, s))
    case_id = c2.text_input("Case id", value=chosen[0]).strip()
    row = common.case_row_in(case_id, split)
    if row is None:
        st.error(f"No case with id {case_id!r} in the {common.SPLIT_LABELS.get(split, split).lower()} split.")
        st.stop()
    if (case_id, split) != common.selected_case():
        common.open_case(case_id, split, page=None)
    male = bool(row["male"])
    if common.data_dir() is None:
        common.data_dir_notice("Attribution maps of data-set cases")
        st.caption("You can still upload a radiograph of your own (switch to *Upload a radiograph* above).")
        st.stop()
    img = common.case_image(case_id, split)
    if img is None:
        st.error(f"The radiograph of case {case_id} could not be read from {common.image_dir_for(split)}.")
        st.stop()
    ref = f"reference {row['boneage']:.1f} months" if pd.notna(row["boneage"]) else "no reference age"
    pred_text = (f"Case **{case_id}** ({'male' if male else 'female'}): predicted **{row['boneage_pred']:.1f} months**, "
                 f"90% interval {row['lower_90']:.0f}-{row['upper_90']:.0f}, {ref}; stage {row['stage_pred']}.")
    feature = common.case_feature(case_id, split)
    views = common.case_views(case_id, split)
    exclude = case_id
else:
    c1, c2 = st.columns([2, 1])
    up = c1.file_uploader("Radiograph (PNG, JPEG or DICOM)", type=["png", "jpg", "jpeg", "dcm", "dicom"], key="ex_upload")
    male = c2.radio("Sex", ["female", "male"], horizontal=True, key="ex_sex") == "male"
    if up is None:
        st.info("Upload a left-hand radiograph to see what the model looks at.", icon=":material/upload:")
        st.stop()
    try:  # the reading every door gives (phase views averaged in); the maps explain its model input
        a = common.assess_upload(up.getvalue(), up.name, male)
    except common.ImageLoadError as exc:
        st.error(common.md_escape(exc))
        st.stop()
    img, feature, views = a.image, a.feature, a.extra_views
    iv = a.intervals.get("90")
    pred_text = (f"**{common.md_escape(up.name)}** ({'male' if male else 'female'}): predicted **{a.boneage_months:.1f} months**"
                 + (f", 90% interval {iv[0]:.0f}-{iv[1]:.0f}" if iv else "") + f"; stage {a.stage}.")


def heatmap(method: str, layer: str | None = None, progress=None) -> np.ndarray:
    if source == "case":
        return common.case_attribution(case_id, split, method, layer, _progress=progress)
    return common.image_attribution(img, male, method, layer, _progress=progress)


st.markdown(pred_text)

# -- attribution maps ---------------------------------------------------------------------------------------
methods = dict(explain.METHODS)
layers = explain.gradcam_layers(common.predictor().model)
with st.container(border=True):
    c = st.columns([1, 1, 1, 1, 1])
    m_a = c[0].selectbox("Left map", list(methods), index=0, format_func=methods.get, key="ex_m_a")
    m_b = c[1].selectbox("Right map", list(methods), index=list(methods).index("saliency"), format_func=methods.get,
                         key="ex_m_b")
    layer = c[2].selectbox("Grad-CAM layer", list(layers), index=0, key="ex_layer",
                           help="Deeper layers are more abstract but coarser (4x4 at the last stages).")
    alpha = c[3].slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="ex_alpha")
    cmap = c[4].selectbox("Colour map", ["jet", "inferno", "gray"], key="ex_cmap")

hand = common.hand_outline(img)  # the outline the shares on the hand are measured with
cols = st.columns(3)
with cols[0]:
    st.image(enlarge(img), caption=f"Model input ({common.base_label()} pixels)", width="stretch")
for col, method in zip(cols[1:], (m_a, m_b)):
    with col:
        lay = layer if method == "gradcam" else None
        if method in ("integrated_gradients", "occlusion"):  # the slow ones, with steps to report
            bar = st.progress(0.0, text=f"{methods[method]}...")
            h = heatmap(method, lay, progress=lambda f, bar=bar, name=methods[method]: bar.progress(
                min(1.0, float(f)), text=f"{name}: {float(f):.0%}"))
            bar.empty()
        else:
            with st.spinner(f"Computing {methods[method]}...", show_time=method == "smoothgrad"):
                h = heatmap(method, lay)
        st.image(draw_outline(enlarge(overlay(img, h, alpha, cmap)), hand), width="stretch",
                 caption=methods[method] + (f" ({layer})" if lay else "") + "; green: the hand's outline")
        note, off_hand = common.attention_note(img, h, methods[method])
        (st.warning if off_hand else st.caption)(note + common.audit_method_note(method))
st.caption("Grad-CAM: regions whose features push the predicted age **up**. Saliency / SmoothGrad / integrated "
           "gradients / occlusion: how much each pixel matters, in either direction. Integrated gradients start "
           "from a black image; occlusion slides a black square. Maps are scaled to their own maximum."
           + (f" The predicted age averages {common.tta_description()} (test-time augmentation); "
              "the maps explain the plain image." if common.predictor().tta else "")
           + (f" The predicted age also averages {len(common.predictor().members)} more separately trained "
              "network(s) (an ensemble); the maps and layers shown are those of the first network."
              if common.predictor().members else ""))

# -- what if the sex were the other one -------------------------------------------------------------------------
st.subheader("What if the sex were the other one?")
flip = common.image_sex_flip(img, male, views)
c = st.columns(3)
c[0].metric(f"As given ({'male' if male else 'female'})", f"{flip['age_as_given']:.1f} months")
c[1].metric(f"As {'female' if male else 'male'}", f"{flip['age_flipped']:.1f} months",
            delta=f"{flip['difference']:+.1f} months", delta_color="off")
c[2].caption("Same image, only the sex input changed. Girls mature earlier, so the same hand is usually read "
             "as an older bone age for a boy; a large difference means the sex input drives the estimate "
             "rather than the image.")

# -- activations ------------------------------------------------------------------------------------------------
st.subheader("Layer activations")
act_layers = explain.activation_layers(common.predictor().model)
labels = list(act_layers)
a_layer = st.selectbox("Layer", labels, index=labels.index("Stage 3") if "Stage 3" in labels else 0, key="ex_act_layer",
                       help="Early layers: edges and texture at fine resolution; late layers: coarse, abstract maps.")
maps = common.image_activations(img, male, a_layer, 32)
st.image(activation_mosaic(maps, cols=8), width="stretch",
         caption=f"{len(maps)} most active channels of {a_layer} ({maps.shape[1]}x{maps.shape[2]} each), "
                 "each scaled to its own range.")

# -- similar training cases -------------------------------------------------------------------------------------
st.subheader("Most similar training cases")
if feature is None:
    st.info("No feature vector for this case.")
else:
    sim = common.similar_cases_index().query(feature, k=6, exclude_id=exclude)
    if common.data_dir() is not None:
        cols = st.columns(len(sim))
        for col, (_, r) in zip(cols, sim.iterrows()):
            with col:
                im = common.case_image(str(r["id"]), "train")
                if im is not None:
                    st.image(enlarge(im, 2), width="stretch")
                st.caption(f"id {r['id']} ({r['sex']}): {r['boneage']:.0f} months (pred. {r['boneage_pred']:.0f})")
    else:
        common.data_dir_notice("Radiographs of similar cases")
    st.dataframe(sim.rename(columns={"boneage": "reference (months)", "boneage_pred": "predicted (months)",
                                     "distance": "cosine distance"}).drop(columns=["male"]),
                 hide_index=True, width="content",
                 column_config={"predicted (months)": st.column_config.NumberColumn(format="%.1f"),
                                "reference (months)": st.column_config.NumberColumn(format="%.1f"),
                                "cosine distance": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Nearest neighbours of this image in the network's penultimate feature space (training split). "
               f"Their mean reference age is {sim['boneage'].mean():.1f} months.")
