"""Error browser: every case with its prediction, filterable and sortable; one case in detail."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from boneage.evidence.render import overlay
from dashboard import common

df = common.artifact_or_stop(common.predictions)
chosen = common.selected_case()  # from another page (Overview scatter, Embeddings ...)

# -- filters -----------------------------------------------------------------------------------------------
SPLITS = [s for s in ("test", "official_test", "val", "calib", "train") if s in set(df["split"])]
with st.sidebar:
    st.header("Filters")
    default_split = [chosen[1]] if chosen and chosen[1] in SPLITS else [SPLITS[0]]
    splits = st.multiselect("Split", SPLITS, default=default_split, format_func=lambda s: common.SPLIT_LABELS.get(s, s),
                            key="eb_split")
    sexes = st.multiselect("Sex", ["F", "M"], default=["F", "M"], format_func={"F": "female", "M": "male"}.get,
                           key="eb_sex")
    ages = df["boneage"].dropna()
    amax = int(ages.max()) + 1 if len(ages) else 240
    age_rng = st.slider("Reference bone age (months)", 0, amax, (0, amax), key="eb_age")
    keep_unlabelled = st.checkbox("Include cases without a reference age", value=False, key="eb_unlab",
                                  help="Most official test cases have no public reference; their error is unknown.")
    emax = float(df["abs_error"].max()) if df["abs_error"].notna().any() else 100.0
    err_min = st.slider("Absolute error at least (months)", 0.0, float(round(emax + 1)), 0.0, step=1.0, key="eb_err")
    outl = st.radio("Outlier flag (unlike the training images)", ["all", "flagged only", "not flagged"],
                    key="eb_outlier", horizontal=True)

m = df["split"].isin(splits) & df["sex"].isin(sexes)
lab = df["boneage"].notna()
in_age = lab & df["boneage"].between(*age_rng)
m &= in_age | (~lab if keep_unlabelled else False)
if err_min > 0:
    m &= df["abs_error"] >= err_min
if outl == "flagged only":
    m &= df["is_outlier"]
elif outl == "not flagged":
    m &= ~df["is_outlier"]
view = df.loc[m, ["id", "split", "sex", "boneage", "boneage_pred", "residual", "abs_error", "lower_90", "upper_90",
                  "stage_true", "stage_pred", "uncertainty", "outlier_score", "is_outlier"]].copy()
names = common.stage_names()
view["stage_true"] = view["stage_true"].map(lambda k: names[k] if 0 <= k < len(names) else "")
view["split"] = view["split"].map(lambda s: common.SPLIT_LABELS.get(s, s))
view = view.sort_values("abs_error", ascending=False, na_position="last").reset_index(drop=True)

st.markdown(f"**{len(view):,} cases** match the filters (of {len(df):,}). Sorted by absolute error; click a "
            "column header to sort, a row to see the case.")
if len(view):
    mae = view["abs_error"].mean()
    st.caption(f"MAE of the matching labelled cases: {mae:.2f} months." if pd.notna(mae) else "")
r = common.case_table(view, key="eb_table", open_selected=False, height=360)
if r is not None:
    split_key = {v: k for k, v in common.SPLIT_LABELS.items()}.get(r["split"], r["split"])
    common.open_case(r["id"], split_key, page=None)
    chosen = (str(r["id"]), split_key)

# -- the chosen case -------------------------------------------------------------------------------------
st.divider()
if chosen is None:
    st.info("Select a row above (or click a point on the Overview page) to see the case.", icon=":material/touch_app:")
    st.stop()
case_id, split = chosen
row = common.case_row_in(case_id, split)
if row is None:
    st.warning(f"Case {case_id} ({split}) is not in the predictions table.")
    st.stop()
st.subheader(f"Case {case_id} - {common.SPLIT_LABELS.get(split, split)}, {'male' if row['male'] else 'female'}")
if not m[(df["id"] == case_id) & (df["split"] == split)].any():
    st.caption("This case does not match the current filters.")

c_img, c_cam, c_num = st.columns([1, 1, 1.3])
with c_num:
    a, b = st.columns(2)
    a.metric("Predicted bone age", f"{row['boneage_pred']:.1f} mo", help=common.months_to_text(row["boneage_pred"]))
    if pd.notna(row["boneage"]):
        b.metric("Reference", f"{row['boneage']:.1f} mo", delta=f"{row['residual']:+.1f} mo error",
                 delta_color="off")
    else:
        b.metric("Reference", "unknown")
    st.markdown(f"**90% prediction interval:** {row['lower_90']:.0f} to {row['upper_90']:.0f} months "
                f"(80%: {row['lower_80']:.0f}-{row['upper_80']:.0f}, 95%: {row['lower_95']:.0f}-{row['upper_95']:.0f})")
    if pd.notna(row["boneage"]):
        inside = row["lower_90"] <= row["boneage"] <= row["upper_90"]
        st.caption("The reference lies inside the 90% interval." if inside else
                   "The reference lies **outside** the 90% interval.")
    probs = [float(row[f"p_{n.lower()}"]) for n in names]
    true_stage = names[int(row["stage_true"])] if row["stage_true"] >= 0 else None
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", text=[f"{p:.0%}" for p in probs], textposition="auto",
                           marker_color=["#2b8cbe" if n == row["stage_pred"] else "#bdc9e1" for n in names]))
    fig.update_layout(height=170, margin=dict(t=25, b=5, l=5, r=25), xaxis=dict(range=[0, 1], tickformat=".0%"),
                      title=dict(text="Stage probabilities" + (f" (true: {true_stage})" if true_stage else ""),
                                 font=dict(size=13)))
    st.plotly_chart(fig, key="eb_stage")
    flag = " - **flagged as unlike the training images**" if row["is_outlier"] else ""
    st.caption(f"Model scale (expected typical error) {row['uncertainty']:.1f} months; LOF outlier score "
               f"{row['outlier_score']:.2f}{flag}.")
    if st.button("Explain this case", icon=":material/insights:"):
        common.open_case(case_id, split, page=common.EXPLAIN)

if common.data_dir() is None:
    with c_img:
        common.data_dir_notice()
else:
    with c_img:
        common.show_radiograph_or_notice(case_id, split, caption="Radiograph as stored")
    with c_cam:
        img = common.case_image(case_id, split)
        if img is not None:
            try:
                heat = common.case_attribution(case_id, split, "gradcam")
                st.image(overlay(img, heat, 0.45), caption=f"Grad-CAM: where the model looks ({common.base_label()} input)",
                         width="stretch")
                note, off_hand = common.attention_note(img, heat, "Grad-CAM")
                (st.warning if off_hand else st.caption)(note)
            except ImportError:
                st.info("Grad-CAM needs boneage/evidence/explain.py, which is not available.")
