"""Overview: accuracy of the bone-age regression and of the stage classifier on a test set."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from dashboard import common

SPLITS = {"test": "Internal test", "official_test": "Official test"}
split = st.segmented_control("Test set", list(SPLITS), format_func=SPLITS.get, default="test", required=True,
                             key="overview_split")
preds = common.artifact_or_stop(common.predictions)
rows = common.split_rows(split)
d = rows[rows["boneage"].notna()]
n_unlab = len(rows) - len(d)
st.markdown(f"**{len(d):,} labelled cases** in the {SPLITS[split].lower()} set"
            + (f" ({n_unlab:,} without a reference bone age are left out)." if n_unlab else "."))
if d.empty:
    st.info("No labelled cases in this split.")
    st.stop()

SEX = {"F": "female", "M": "male"}
COLORS = {"female": "#d6604d", "male": "#4393c3"}
d = d.assign(sex=d["sex"].map(SEX))
lo_ax, hi_ax = 0, float(np.nanmax([d["boneage"].max(), d["boneage_pred"].max()])) + 10

# -- predicted vs reference ---------------------------------------------------------------------------
c1, c2 = st.columns(2)
with c1:
    st.subheader("Predicted vs reference")
    fig = px.scatter(d, x="boneage", y="boneage_pred", color="sex", color_discrete_map=COLORS,
                     custom_data=["id"], hover_data={"id": True, "abs_error": ":.1f", "sex": True},
                     labels={"boneage": "reference bone age (months)", "boneage_pred": "predicted (months)"},
                     opacity=0.6)
    fig.add_trace(go.Scatter(x=[lo_ax, hi_ax], y=[lo_ax, hi_ax], mode="lines", name="identity",
                             line=dict(color="gray", dash="dash"), hoverinfo="skip"))
    fig.update_layout(height=420, margin=dict(t=10, b=10, l=10, r=10), legend_title_text="")
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"scatter_{split}")
    st.caption("Click a point to open the case in the Error browser.")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if points:
        cd = points[0].get("customdata")
        cid = cd[0] if isinstance(cd, (list, tuple)) else cd
        if cid is not None:
            common.open_case(str(cid), split)
with c2:
    st.subheader("Residuals vs reference")
    fig = px.scatter(d, x="boneage", y="residual", color="sex", color_discrete_map=COLORS, opacity=0.6,
                     hover_data={"id": True}, labels={"boneage": "reference bone age (months)",
                                                      "residual": "predicted - reference (months)"})
    fig.add_hline(y=0, line_dash="dash", line_color="gray")
    fig.update_layout(height=420, margin=dict(t=10, b=10, l=10, r=10), legend_title_text="")
    st.plotly_chart(fig, key=f"residuals_{split}")

# -- Bland-Altman and error histogram ----------------------------------------------------------------
c1, c2 = st.columns(2)
with c1:
    st.subheader("Bland-Altman")
    pts, s = common.bland_altman(split)
    pts = pts.assign(sex=pts["sex"].map(SEX)) if "sex" in pts else pts
    fig = px.scatter(pts, x="mean", y="diff", color="sex" if "sex" in pts else None, color_discrete_map=COLORS,
                     opacity=0.6, hover_data=[c for c in ("id", "age_band") if c in pts],
                     labels={"mean": "mean of predicted and reference (months)", "diff": "predicted - reference (months)"})
    if s["n"] >= 2:
        for y, name, dash in ((s["bias"], f"bias {s['bias']:+.1f}", "solid"),
                              (s["loa_lower"], f"-1.96 SD {s['loa_lower']:.1f}", "dash"),
                              (s["loa_upper"], f"+1.96 SD {s['loa_upper']:.1f}", "dash")):
            fig.add_hline(y=y, line_dash=dash, line_color="black", annotation_text=name, annotation_position="right")
    fig.update_layout(height=400, margin=dict(t=10, b=10, l=10, r=90), legend_title_text="",
                      legend=dict(orientation="h", y=-0.2))
    st.plotly_chart(fig, key=f"ba_{split}")
    if s["n"] >= 2:
        st.caption(f"Bias {s['bias']:+.2f} months (95% CI {s['bias_ci'][0]:+.2f} to {s['bias_ci'][1]:+.2f}); "
                   f"limits of agreement {s['loa_lower']:.1f} to {s['loa_upper']:.1f} months. "
                   + (f"Slope of difference on mean {s['slope']:+.3f} (p = {s['slope_p']:.2g}): "
                      "a negative slope means the model pulls ages towards the middle." if np.isfinite(s["slope"]) else ""))
with c2:
    st.subheader("Error distribution")
    fig = px.histogram(d, x="residual", color="sex", color_discrete_map=COLORS, nbins=40, barmode="overlay",
                       opacity=0.6, labels={"residual": "predicted - reference (months)"})
    fig.update_layout(height=400, margin=dict(t=10, b=10, l=10, r=10), legend_title_text="", yaxis_title="cases")
    st.plotly_chart(fig, key=f"hist_{split}")
    err = d["abs_error"]
    st.caption(f"Median absolute error {err.median():.1f} months; {100 * (err <= 12).mean():.0f}% within 12 months, "
               f"{100 * (err <= 24).mean():.0f}% within 24 months.")

# -- MAE by age band and sex ---------------------------------------------------------------------------
st.subheader("Mean absolute error by age band and sex")
tab = common.mae_ci(split, ("age_band", "sex"))
overall = common.mae_ci(split)
fig = go.Figure()
for sex in ("F", "M"):
    t = tab[tab["sex"] == sex]
    fig.add_trace(go.Bar(x=t["age_band"], y=t["mae"], name=SEX[sex], marker_color=COLORS[SEX[sex]],
                         error_y=dict(type="data", symmetric=False, array=t["mae_hi"] - t["mae"],
                                      arrayminus=t["mae"] - t["mae_lo"]),
                         customdata=t[["n", "mae_lo", "mae_hi"]].to_numpy(),
                         hovertemplate="%{x}: MAE %{y:.1f} (95% CI %{customdata[1]:.1f}-%{customdata[2]:.1f}), "
                                       "n=%{customdata[0]}<extra></extra>"))
if len(overall):
    fig.add_hline(y=float(overall["mae"].iloc[0]), line_dash="dot", line_color="gray",
                  annotation_text=f"overall {overall['mae'].iloc[0]:.1f}")
fig.update_layout(barmode="group", height=380, margin=dict(t=10, b=10, l=10, r=10), yaxis_title="MAE (months)",
                  xaxis_title="reference age band")
st.plotly_chart(fig, key=f"mae_band_{split}")
st.caption("Error bars: 95% bootstrap confidence intervals (1,000 resamples of the cases in each group). "
           "Small groups have wide intervals.")

# -- stage classifier ---------------------------------------------------------------------------------------
st.subheader("Developmental stage classifier")
rep, from_artifact = common.stage_report(split)
if not rep or not rep.get("n"):
    st.info("No cases with a known stage in this split.")
else:
    c1, c2 = st.columns(2)
    labels = rep["confusion"]["labels"]
    cm = np.asarray(rep["confusion"]["matrix"], dtype=float)
    with c1:
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        text = [[f"{int(cm[i, j])}<br>{100 * share[i, j]:.0f}%" for j in range(len(labels))] for i in range(len(labels))]
        fig = go.Figure(go.Heatmap(z=share, x=labels, y=labels, text=text, texttemplate="%{text}",
                                   colorscale="Blues", zmin=0, zmax=1, showscale=False,
                                   hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
        fig.update_layout(height=380, margin=dict(t=30, b=10, l=10, r=10), xaxis_title="predicted stage",
                          yaxis_title="true stage", yaxis_autorange="reversed", title="Confusion matrix (row %)")
        st.plotly_chart(fig, key=f"cm_{split}")
        st.caption(f"Accuracy {100 * rep['accuracy']:.1f}% on {rep['n']:,} cases.")
    with c2:
        fig = go.Figure()
        for name, curve in (rep.get("roc_curves") or {}).items():
            auc = (rep.get("roc_auc") or {}).get(name)
            fig.add_trace(go.Scatter(x=curve["fpr"], y=curve["tpr"], mode="lines",
                                     name=f"{name} (AUC {auc:.3f})" if auc is not None else name))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dash", color="gray"),
                                 showlegend=False, hoverinfo="skip"))
        fig.update_layout(height=380, margin=dict(t=30, b=10, l=10, r=10), title="One-vs-rest ROC",
                          xaxis_title="false positive rate", yaxis_title="true positive rate",
                          legend=dict(x=0.45, y=0.05))
        st.plotly_chart(fig, key=f"roc_{split}")
        missing = [k for k, v in (rep.get("roc_auc") or {}).items() if v is None]
        if missing:
            st.caption(f"No ROC curve for {', '.join(missing)}: only one class present among these cases.")
    if not from_artifact:
        st.caption("Computed from predictions.parquet (stage_calibration.json is not there yet; "
                   "`python -m pipelines.precompute --only calibration` makes it).")
