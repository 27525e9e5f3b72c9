"""Explanation audit: do the heatmaps tell the truth? Attention on the hand, faithfulness against random,
and the randomisation sanity check, from ``artifacts/explanation_audit.json`` (rules: boneage/evidence/explanation_audit.py)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from boneage.evidence.explanation_audit import (AUDIT_COMMAND, AUDIT_FILE, CASES_FILE, REGION_LABELS,
                                       SANITY_THRESHOLD)
from boneage.training.splits import AGE_BAND_LABELS
from dashboard import common


audit = common.artifact_or_none(common.artifact_json, AUDIT_FILE)
if audit is None:
    st.info(f"The explanation audit has not been run for this artifact set: `{AUDIT_COMMAND}` (a few minutes).")
    st.stop()
cases = common.artifact_or_none(common.artifact_table, CASES_FILE)
if common.model_sha256() not in (None, audit.get("model_sha256")):
    st.warning(f"This audit was computed for a different model than the one in use: rerun `{AUDIT_COMMAND}`.",
               icon=":material/warning:")

methods = audit["methods"]
labels = {m: e["label"] for m, e in methods.items()}
sets = list(audit["sets"])
SET_LABEL = {s: common.SPLIT_LABELS.get(s, s) for s in sets}
default = audit["default_method"]["method"]

sample = " and ".join(f"{audit['sets'][s]['n_cases']} {SET_LABEL[s].lower()} radiographs" for s in sets)
st.markdown(f"{sample}, a seeded sample; maps as the Explain page computes them ({audit['runtime_seconds']:.0f} s "
            f"to compute with `{AUDIT_COMMAND}`).")
verdict = audit["verdict"]
(st.warning if verdict["relies_on_context"] else st.success)(verdict["text"])
st.markdown(f"**Default method: {labels[default]}.** Why: {audit['default_method']['why']}")

# -- summary table ------------------------------------------------------------------------------------------
rows = []
for m, e in methods.items():
    r = {"method": e["label"], "sanity rho (top half random)": e["sanity"]["rho_top_half"],
         "sanity": "passes" if e["sanity"]["passes"] else "FAILS: barely changes"}
    for s in sets:
        v = e["sets"][s]
        tag = "int." if s == "test" else "off."
        d, i = v["deletion"]["difference"], v["insertion"]["difference"]
        r[f"{tag} share on hand"] = v["share_on_hand"]["median"]
        r[f"{tag} off hand"] = f"{v['off_hand_cases']}/{v['n']}"
        r[f"{tag} deletion vs random"] = f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"
        r[f"{tag} insertion vs random"] = f"{i['mean']:+.2f} [{i['ci'][0]:+.2f}, {i['ci'][1]:+.2f}]"
    r["infidelity (median)"] = e["infidelity"]["median"]
    rows.append(r)
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns
                            if "share on hand" in c or c.startswith("sanity rho")}
             | {"infidelity (median)": st.column_config.NumberColumn(format="%.3g")})
st.caption("Share on hand: median share of the map's mass inside the hand mask (int. = internal test, off. = official "
           "test). Deletion / insertion vs random: mean per-case gain over a random pixel order in months of "
           "predicted-age change (deletion: map minus random, insertion: random minus map; > 0 = the map finds the "
           "pixels the prediction depends on), 95% bootstrap CI. Sanity rho: median Spearman correlation of the maps "
           f"with the trained network's once the top half of the network is randomised; below {SANITY_THRESHOLD} "
           "passes. Infidelity: Captum's, lower is better. Rules: " + audit["rules"]["curves"] + ".")
failing = [labels[m] for m, e in methods.items() if not e["sanity"]["passes"]]
if failing:
    st.error(f"{', '.join(failing)}: the maps barely change when the network's top half is replaced by noise, so "
             "they show the image's structure more than what this model computed. Read them with care.",
             icon=":material/report:")

# -- attention on the anatomy --------------------------------------------------------------------------------
st.subheader("Where the maps put their mass")
if cases is not None:
    fig = go.Figure()
    for s in sets:
        d = cases[cases["set"] == s]
        fig.add_trace(go.Box(x=d["method"].map(labels), y=d["hand"], name=SET_LABEL[s], boxmean=False))
    area = float(cases.drop_duplicates(["id", "set"])["hand_area"].median())
    fig.add_hline(y=area, line_dash="dot", annotation_text=f"hand area (median {area:.2f}): chance level")
    fig.add_hline(y=0.5, line_dash="dash", line_color="red", annotation_text="half the mass")
    fig.update_layout(boxmode="group", height=380, yaxis=dict(title="share of the map on the hand", range=[0, 1]),
                      margin=dict(t=30, b=10))
    st.plotly_chart(fig, key="audit_share_box")

    c1, c2 = st.columns([1, 3])
    m_sel = c1.selectbox("Method", list(methods), index=list(methods).index(default), format_func=labels.get,
                         key="audit_method")
    by = c1.radio("Group by", ["age band", "sex"], key="audit_by")
    d = cases[cases["method"] == m_sel]
    col = "age_band" if by == "age band" else "sex"
    g = d.groupby(["set", col], dropna=False)["hand"].agg(["median", "size"]).reset_index()
    fig = go.Figure()
    for s in sets:
        gs = g[g["set"] == s]
        if col == "age_band":
            gs = gs.set_index(col).reindex([b for b in AGE_BAND_LABELS if b in set(gs[col])]).reset_index()
        fig.add_trace(go.Bar(x=gs[col].astype(str), y=gs["median"], name=SET_LABEL[s],
                             text=[f"n={n}" for n in gs["size"]], textposition="outside"))
    fig.add_hline(y=0.5, line_dash="dash", line_color="red")
    fig.update_layout(barmode="group", height=330, margin=dict(t=30, b=10),
                      yaxis=dict(title=f"median share on hand ({labels[m_sel]})", range=[0, 1.1]))
    c2.plotly_chart(fig, key="audit_share_groups")
    st.caption("Age band of the explained network's predicted bone age (half the official radiographs have no "
               "reference).")
    reg = []
    for s in sets:
        v = methods[m_sel]["sets"][s]
        for r, lab in REGION_LABELS.items():
            reg.append({"set": SET_LABEL[s], "region": lab, "share of the map": v["regions"][r]["share"]["median"],
                        "share of the image": v["regions"][r]["area"]["median"], "cases": v["region_cases"]})
    st.dataframe(pd.DataFrame(reg), hide_index=True, width="content",
                 column_config={c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("share of the map", "share of the image")})
    st.caption("Medians over the cases whose hand stands fingers up (" + audit["rules"]["regions"] + "). A region "
               "whose share of the map exceeds its share of the image draws more attention than chance.")

# -- faithfulness -------------------------------------------------------------------------------------------
st.subheader("Deletion and insertion against a random order")
fr = audit["curves"]["fractions"]
s_sel = st.segmented_control("Set", sets, default=sets[0], required=True, format_func=SET_LABEL.get, key="audit_set")
cols = st.columns(2)
for col, kind in zip(cols, ("deletion", "insertion")):
    fig = go.Figure()
    for name, cv in audit["curves"][s_sel].items():
        fig.add_trace(go.Scatter(x=fr, y=cv[kind], mode="lines+markers", name=labels.get(name, "random order"),
                                 line=dict(dash="dash", color="black") if name == "random" else None))
    fig.update_layout(height=340, margin=dict(t=40, b=10), title=dict(text=kind.capitalize(), font=dict(size=14)),
                      xaxis=dict(title="fraction of pixels " + ("removed" if kind == "deletion" else "revealed")),
                      yaxis=dict(title="|change of predicted age| (months)"))
    col.plotly_chart(fig, key=f"audit_{kind}")
st.caption("Mean over the set's cases. Deletion: the most attributed pixels are set to the baseline first; a faithful "
           "map moves the prediction sooner than random (higher curve). Insertion: they are revealed on the "
           "baseline first; a faithful map brings the prediction back sooner (lower curve).")

# -- sanity ---------------------------------------------------------------------------------------------------
st.subheader("Sanity check: randomising the network from the top down")
steps = audit["sanity_steps"]
fig = go.Figure()
for m, e in methods.items():
    fig.add_trace(go.Scatter(x=steps, y=e["sanity"]["median_rho"], mode="lines+markers", name=e["label"]))
fig.add_hline(y=SANITY_THRESHOLD, line_dash="dash", line_color="red", annotation_text=f"{SANITY_THRESHOLD}")
fig.add_vline(x=audit["sanity_top_half_step"], line_dash="dot", annotation_text="top half randomised")
fig.update_layout(height=360, margin=dict(t=30, b=10), yaxis=dict(title="rank correlation with the trained maps",
                                                                 range=[-0.3, 1.05]),
                  xaxis=dict(title="randomised down to (cumulative)"))
st.plotly_chart(fig, key="audit_sanity")
st.caption(audit["rules"]["sanity"] + f". Medians over {methods[default]['sanity']['n']} cases.")
