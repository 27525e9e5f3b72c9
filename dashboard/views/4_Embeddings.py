"""Embeddings: t-SNE / UMAP maps of what the network has learned, its outliers, and the layer-wise view."""
from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from boneage.evaluation.embeddings import MAP_METHODS, layer_quality_table, map_columns, most_unusual
from dashboard import common

st.markdown(
    "Each point is one radiograph, placed by the network's **penultimate-layer features** (the fused image + "
    "sex representation the age and stage heads read) after a 2-D or 3-D projection. Cases the network sees "
    "as similar sit together. If the features encode maturity, colour by age should change smoothly across "
    "the map. **Click a point** to open that case in the Error browser.")

# Colour options: label -> (column, continuous?)
COLOURS = {
    "Reference bone age (years)": ("ref_years", True),
    "Predicted bone age (years)": ("pred_years", True),
    "Sex": ("sex", False),
    "Absolute error (months)": ("abs_error", True),
    "Outlier score (LOF)": ("outlier_score", True),
    "Split": ("split_label", False),
}


def load_map(rel: str):
    """A map joined with its cases, or None with the reason shown (missing, or from another predictions run)."""
    try:
        return common.artifact_or_none(common.embedding_map, rel)
    except ValueError as exc:  # stale map: ids not in the predictions table
        st.error(str(exc))
        return None


maps = load_map("embeddings/maps_penultimate.parquet")
outliers_info = common.artifact_or_none(common.artifact_json, "outliers.json")

# -- the map -------------------------------------------------------------------------------------------
if maps is not None:
    maps = maps.assign(ref_years=maps["boneage"] / 12, pred_years=maps["boneage_pred"] / 12,
                       split_label=maps["split"].map(common.split_label))
    c1, c2, c3, c4 = st.columns([1, 1, 1.4, 2.6])
    method = c1.radio("Projection", list(MAP_METHODS), format_func=MAP_METHODS.get, key="emb_method")
    dims = c2.radio("Dimensions", (2, 3), format_func=lambda d: f"{d}-D", key="emb_dims")
    colour = c3.selectbox("Colour by", list(COLOURS), key="emb_colour")
    present = [s for s in common.SPLIT_LABELS if s in set(maps["split"])]
    splits = c4.multiselect("Splits", present, default=present, format_func=common.split_label, key="emb_splits")
    d = maps[maps["split"].isin(splits)]
    if d.empty:
        st.info("Choose at least one split.")
    else:
        col, continuous = COLOURS[colour]
        xyz = map_columns(method, dims)
        n_before = len(d)
        d = d.dropna(subset=xyz)  # the 3-D t-SNE covers a subsample (precompute keeps to its time budget)
        if len(d) < n_before:
            st.caption(f"This map covers {len(d):,} of {n_before:,} cases: 3-D t-SNE is computed for every "
                       "non-training case and a random share of the training split.")
        # graph_objects rather than plotly.express: about 8x faster to build for ~13,000 points.
        def text(series, fmt):
            return [("–" if v != v else format(v, fmt)) for v in series.astype(float)]  # v != v: NaN

        custom = np.column_stack([d["id"].astype(str), d["split"], d["split_label"], d["sex"],
                                  text(d["boneage"], ".0f"), text(d["boneage_pred"], ".1f"),
                                  text(d["abs_error"], ".1f"), text(d["outlier_score"], ".3f")])
        hover = ("case %{customdata[0]} (%{customdata[2]}), %{customdata[3]}<br>reference %{customdata[4]} mo, "
                 "predicted %{customdata[5]} mo<br>|error| %{customdata[6]} mo, LOF %{customdata[7]}<extra></extra>")
        Trace = go.Scattergl if dims == 2 else go.Scatter3d
        size = 5 if dims == 2 else 2.5

        def coords(mask=None):
            sub = d if mask is None else d[mask]
            return {axis: sub[c].to_numpy() for axis, c in zip("xyz", xyz)}

        fig = go.Figure()
        if continuous:
            values = d[col].astype(float)
            cmax = float(np.nanpercentile(values, 98)) if col in ("abs_error", "outlier_score") and values.notna().any() \
                else float(np.nanmax(values)) if values.notna().any() else 1.0  # a few extremes would wash out the rest
            cmin = float(np.nanmin(values)) if values.notna().any() else 0.0
            known = values.notna()
            if not known.all():
                fig.add_trace(Trace(**coords(~known), mode="markers", name="no reference age",
                                    customdata=custom[~known.to_numpy()],
                                    hovertemplate=hover, marker=dict(size=size, opacity=0.5, color="#b0b0b0")))
            fig.add_trace(Trace(**coords(known), mode="markers", name=colour, customdata=custom[known.to_numpy()],
                                hovertemplate=hover, showlegend=False, marker=dict(
                size=size, opacity=0.8, color=values[known].to_numpy(), cmin=cmin, cmax=cmax,
                colorscale="Viridis" if col.endswith("years") else "Inferno_r", colorbar=dict(title=colour, len=0.8))))
        else:
            palette = {"F": "#d62728", "M": "#1f77b4"}
            for k, name in enumerate(sorted(d[col].dropna().unique())):
                mask = d[col] == name
                colour_k = palette.get(name, px.colors.qualitative.Plotly[k % 10])
                fig.add_trace(Trace(**coords(mask), mode="markers", name=str(name), customdata=custom[mask.to_numpy()],
                                    hovertemplate=hover, marker=dict(size=size, opacity=0.8, color=colour_k)))
        if dims == 2:
            fig.update_xaxes(showticklabels=False, title=None)
            fig.update_yaxes(showticklabels=False, title=None)
        else:
            fig.update_scenes(xaxis_showticklabels=False, yaxis_showticklabels=False, zaxis_showticklabels=False,
                              xaxis_title="", yaxis_title="", zaxis_title="")
        fig.update_layout(height=620, margin=dict(l=10, r=10, t=30, b=10), legend_title_text=colour,
                          legend=dict(orientation="h", y=-0.02))
        event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"emb_map_{method}{dims}")
        st.caption(f"{len(d):,} cases. {MAP_METHODS[method]} of standardised penultimate features (PCA to 50 "
                   "dimensions first). Distances between far-apart clusters mean little in either projection; "
                   "neighbourhoods do.")
        points = event.selection.points if event and event.selection else []
        if points:
            custom = points[0].get("customdata") or []
            if len(custom) >= 2:
                common.try_open_case(str(custom[0]), str(custom[1]))

# -- outliers ------------------------------------------------------------------------------------------
st.header("Unusual radiographs (Local Outlier Factor)")
preds = common.artifact_or_none(common.predictions)
if preds is not None and outliers_info is not None:
    thr = float(outliers_info["threshold"])
    st.markdown(
        f"LOF compares each case's feature-space density with that of its 20 nearest training neighbours "
        f"(about 1 for typical cases). A case is **flagged** above **{thr:.3f}**, the 99th percentile of the "
        "training cases' own scores, so about 1% of training images are flagged by construction. Flagged "
        "radiographs are often unusual images (rotated, cropped, unusual exposure or a non-hand film) and "
        "their predictions deserve less trust.")
    flagged = outliers_info.get("flagged_by_split", {})
    if flagged:
        cols = st.columns(len(flagged))
        for c, (split, share) in zip(cols, sorted(flagged.items(), key=lambda kv: list(common.SPLIT_LABELS).index(kv[0])
                                                  if kv[0] in common.SPLIT_LABELS else 99)):
            n_flag = int(preds.loc[preds["split"] == split, "is_outlier"].sum())
            c.metric(f"Flagged, {common.split_label(split)}", f"{100 * share:.1f}%", help=f"{n_flag} cases")
    o_splits = st.multiselect("Splits", [s for s in common.SPLIT_LABELS if s in set(preds["split"])],
                              default=[s for s in ("test", "official_test") if s in set(preds["split"])],
                              format_func=common.split_label, key="emb_outlier_splits")
    table = most_unusual(preds[preds["split"].isin(o_splits)], k=12)
    n_flagged = int(table["is_outlier"].sum())
    if n_flagged == 0:
        st.info(f"No case in the chosen splits scores above the threshold {thr:.3f}; the 12 highest scores are listed.")
    show = table[["id", "split", "sex", "boneage", "boneage_pred", "abs_error", "uncertainty", "outlier_score",
                  "is_outlier"]]
    common.case_table(show, key="emb_outlier_table")
    st.caption(f"{n_flagged} flagged case(s) listed, highest score first. Select a row to open it in the Error browser.")
    common.case_thumbnails(table.head(12), lambda r: f"{r['id']} · LOF {r['outlier_score']:.2f}"
                           + (" · flagged" if r["is_outlier"] else ""), per_row=6,
                           what="Thumbnails of the unusual radiographs")

# -- layer-wise --------------------------------------------------------------------------------------
st.header("Layer by layer: where does age appear?")
quality = common.artifact_or_none(common.artifact_json, "embeddings/layer_quality.json")
if quality is not None:
    q = layer_quality_table(quality)
    st.markdown(
        "Early layers encode texture and exposure (where hospitals and scanners differ); deeper layers should "
        "encode maturity. The score below asks how well cases of similar age are neighbours in each layer's "
        f"globally pooled features: {quality.get('metric', '')} on a subsample of "
        f"{quality.get('subsample', '?')} cases (lower MAE / higher R² = age is more readable from that layer).")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("kNN age MAE (months, lower is better)",
                                                        "kNN age R² (higher is better)"))
    fig.add_trace(go.Bar(x=q["layer"], y=q["knn_mae"], text=q["knn_mae"].round(1), textposition="outside",
                         marker_color="#4c78a8", hovertext=q["description"], name="MAE"), row=1, col=1)
    fig.add_trace(go.Bar(x=q["layer"], y=q["knn_r2"], text=q["knn_r2"].round(3), textposition="outside",
                         marker_color="#59a14f", hovertext=q["description"], name="R²"), row=1, col=2)
    fig.update_layout(height=340, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
    fig.update_yaxes(rangemode="tozero")
    st.plotly_chart(fig, key="emb_layer_bars")
    st.dataframe(q, hide_index=True, column_config={
        "knn_mae": st.column_config.NumberColumn("kNN MAE (mo)", format="%.2f"),
        "knn_r2": st.column_config.NumberColumn("kNN R²", format="%.3f"),
        "n": st.column_config.NumberColumn("cases"), "dims": st.column_config.NumberColumn("feature dims")})

layer_maps = load_map("embeddings/maps_layers.parquet")
if layer_maps is not None:
    lm_method = st.radio("Projection of the layer maps", list(MAP_METHODS), format_func=MAP_METHODS.get,
                         horizontal=True, key="emb_layer_method")
    x, y = map_columns(lm_method, 2)
    layer_maps = layer_maps.assign(ref_years=layer_maps["boneage"] / 12)
    order = q["layer"] if quality is not None else layer_maps["layer"].unique()
    names = [n for n in order if n in set(layer_maps["layer"])]
    cols = st.columns(max(1, len(names)))
    vmax = float(np.nanmax(layer_maps["ref_years"])) if layer_maps["ref_years"].notna().any() else 1.0
    for c, name in zip(cols, names):
        g = layer_maps[layer_maps["layer"] == name]
        f = go.Figure(go.Scattergl(
            x=g[x], y=g[y], mode="markers", customdata=g["id"], hovertemplate="case %{customdata}<extra></extra>",
            marker=dict(size=3, color=g["ref_years"], cmin=0, cmax=vmax, colorscale="Viridis")))
        f.update_layout(height=280, margin=dict(l=5, r=5, t=35, b=5), title=name)
        f.update_xaxes(showticklabels=False, title=None)
        f.update_yaxes(showticklabels=False, title=None)
        c.plotly_chart(f, key=f"emb_layer_map_{name}")
    st.caption(f"{MAP_METHODS[lm_method]} maps of each layer's features for the same {g['id'].nunique()} cases, "
               "coloured by reference bone age (yellow = older). A smooth colour gradient means the layer "
               "orders cases by maturity.")
