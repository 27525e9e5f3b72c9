"""Uncertainty: do the prediction intervals cover what they promise, is the stage classifier calibrated,
and does the model know when it is unsure?"""
from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from boneage.evaluation.conformal import LEVELS, coverage_frame
from boneage.evaluation.site_calibration import EVALUATION_METRICS, evaluation_frame
from boneage.evaluation.uncertainty import (UNCERTAINTY_MEASURES, error_by_uncertainty, least_certain,
                                 rank_correlation, stage_outcome, with_measures)
from dashboard import common

VARIANTS = {"mondrian": "Mondrian (per sex x age band)", "global": "Global (one calibration)"}
VARIANT_COLOURS = {"mondrian": "#4c78a8", "global": "#f58518"}

st.markdown(
    "Every prediction comes with a **conformal prediction interval** (80, 90 and 95%), calibrated on the "
    "calibration split: a 90% interval should contain the reference bone age in 90% of cases. The *Mondrian* "
    "variant (the one shipped) is calibrated separately for each sex x age band: every candidate age is "
    "tested against the errors of its own band, so the promise holds within each group of boys or girls of "
    "a given true age (age bands with too few calibration cases share a group with their neighbour, listed "
    "below; each band's errors are first centred on the model's typical error for that band on the training "
    "split, so a rare band the model gets systematically wrong, such as mature girls, is not judged by its "
    "neighbour's errors); the *global* one only on average. The stage classifier gives probabilities, and the age "
    "head a Laplace scale (the absolute error it expects).")

preds = common.artifact_or_none(common.predictions)
coverage = common.artifact_or_none(common.artifact_json, "coverage.json")

split_options = []
if coverage is not None:
    split_options = [s for s in common.SPLIT_LABELS if any(s in v for v in coverage.values())]
elif preds is not None:
    split_options = [s for s in ("test", "official_test", "calib") if s in set(preds["split"])]
if not split_options:
    st.stop()
split = st.segmented_control("Split", split_options, default=split_options[0], format_func=common.split_label,
                             required=True, key="unc_split")
if split == "calib":
    st.caption("The calibration split is the one the intervals were calibrated on: coverage here is in-sample "
               "and close to nominal by construction. Judge the intervals on the test sets.")

# -- coverage ----------------------------------------------------------------------------------------
st.header("Interval coverage")
if coverage is not None:
    cov = coverage_frame(coverage, split)
    overall = cov[cov["group"] == "all"]
    if overall.empty:
        st.info(f"coverage.json has no entry for {common.split_label(split)}.")
    else:
        n_cases = int(overall["n"].max())
        st.markdown(f"On **{n_cases}** cases of the {common.split_label(split).lower()} with a reference age:")
        cols = st.columns(len(LEVELS) * 2)
        i = 0
        for lvl in LEVELS:
            for variant in ("mondrian", "global"):
                row = overall[(overall["level"] == lvl) & (overall["variant"] == variant)]
                if row.empty:
                    continue
                r = row.iloc[0]
                cols[i].metric(
                    f"{lvl}% interval, {variant}", f"{r['coverage']:.1%}" if pd.notna(r["coverage"]) else "–",
                    delta=f"{100 * (r['coverage'] - r['nominal']):+.1f} pts vs {lvl}%" if pd.notna(r["coverage"]) else None,
                    delta_color="off", help=f"{VARIANTS[variant]}. Mean width {r['mean_width']:.1f} months, n = {r['n']}.")
                i += 1

        fig = go.Figure()
        fig.add_trace(go.Scatter(x=[0.75, 1.0], y=[0.75, 1.0], mode="lines", line=dict(color="grey", dash="dot"),
                                 name="nominal", hoverinfo="skip"))
        for variant, g in overall.groupby("variant"):
            fig.add_trace(go.Scatter(x=g["nominal"], y=g["coverage"], mode="lines+markers", name=VARIANTS[variant],
                                     marker=dict(size=10, color=VARIANT_COLOURS.get(variant)),
                                     customdata=g[["mean_width", "n"]],
                                     hovertemplate="nominal %{x:.0%}<br>achieved %{y:.1%}<br>mean width "
                                                   "%{customdata[0]:.1f} mo<br>n %{customdata[1]}<extra></extra>"))
        fig.update_layout(height=330, xaxis_title="nominal coverage", yaxis_title="achieved coverage",
                          xaxis_tickformat=".0%", yaxis_tickformat=".0%", margin=dict(l=10, r=10, t=20, b=10),
                          legend=dict(orientation="h", y=-0.25))
        c1, c2 = st.columns(2)
        c1.plotly_chart(fig, key="unc_cov_overall")
        wfig = px.bar(overall, x="level", y="mean_width", color="variant", barmode="group",
                      color_discrete_map=VARIANT_COLOURS, text=overall["mean_width"].round(1),
                      labels={"level": "interval level (%)", "mean_width": "mean width (months)"})
        wfig.update_layout(height=330, margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.25))
        c2.plotly_chart(wfig, key="unc_width_overall")
        st.caption("Left: achieved vs promised coverage (on the dotted line = as promised). Right: the price, the "
                   "mean interval width. A narrower interval at the same coverage is better.")

        st.subheader("By sex and age band")
        lvl = st.segmented_control("Level", LEVELS, default="90", format_func=lambda x: f"{x}%", required=True,
                                   key="unc_level")
        groups = cov[(cov["level"] == lvl) & (cov["group"] != "all")]
        if groups.empty:
            st.info("No per-group coverage in coverage.json for this split.")
        else:
            order = list(dict.fromkeys(groups["group"]))
            c1, c2 = st.columns(2)
            gfig = px.bar(groups, x="group", y="coverage", color="variant", barmode="group",
                          color_discrete_map=VARIANT_COLOURS, hover_data={"n": True, "mean_width": ":.1f"},
                          category_orders={"group": order}, labels={"group": "reference sex / age band"})
            gfig.add_hline(y=float(lvl) / 100, line_dash="dash", line_color="black",
                           annotation_text=f"nominal {lvl}%", annotation_position="bottom right")
            gfig.update_layout(height=380, yaxis_tickformat=".0%", yaxis_range=[0, 1.05],
                               margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.35))
            c1.plotly_chart(gfig, key="unc_cov_groups")
            wg = px.bar(groups, x="group", y="mean_width", color="variant", barmode="group",
                        color_discrete_map=VARIANT_COLOURS, hover_data={"n": True, "coverage": ":.1%"},
                        category_orders={"group": order},
                        labels={"group": "reference sex / age band", "mean_width": "mean width (months)"})
            wg.update_layout(height=380, margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.35))
            c2.plotly_chart(wg, key="unc_width_groups")
            small = groups.loc[groups["n"] < 30, "group"].unique()
            st.caption("Groups are the *reference* sex and age band: the groups the Mondrian variant is calibrated "
                       "on, so it promises the level in each (on average over calibration draws; one test split "
                       "scatters around it). "
                       + (f"Groups with fewer than 30 cases ({', '.join(small)}) give noisy coverage estimates."
                          if len(small) else ""))
            with st.expander("Table"):
                st.dataframe(groups.drop(columns=["sex", "age_band", "nominal"]), hide_index=True,
                             column_config={"coverage": st.column_config.NumberColumn(format="%.3f"),
                                            "mean_width": st.column_config.NumberColumn("mean width (mo)", format="%.1f")})
            conformal = common.artifact_or_none(common.artifact_json, "model/conformal.json")
            cal_groups = (conformal or {}).get("groups", {}).get(lvl)
            if cal_groups:
                with st.expander("Calibration groups of the Mondrian variant"):
                    st.markdown("Calibration cases and accepted error range (in units of the model's own scale) "
                                f"per group at {lvl}%. Age bands with too few calibration cases for this level are "
                                "merged with their inner neighbour (ages in months; the last group runs to the "
                                "top of the range). `band_offsets`: each band's median training-split error "
                                "(same units), added to the accepted range for candidate ages in that band.")
                    st.dataframe(pd.DataFrame(cal_groups), hide_index=True,
                                 column_config={"score_lo": st.column_config.NumberColumn(format="%.2f"),
                                                "score_hi": st.column_config.NumberColumn(format="%.2f")})

# -- precision ---------------------------------------------------------------------------------------
st.header("Does the same hand get the same reading?")
prec = common.artifact_or_none(common.artifact_json, "precision.json")
if prec is None:
    st.info("No precision benchmark in this artifact set: `python -m pipelines.precision` makes it.")
else:
    st.markdown(
        "Each radiograph is read again after a change that imitates how two acquisitions of one hand differ "
        "(JPEG, lower resolution, exposure, rotation, tighter or looser framing, a mirrored film), and the new "
        "reading is compared with the original's. No labels are needed. The **test-retest SD** is "
        "sqrt(mean(d^2)/2), the within-hand SD of two readings; commercial systems quote about 2 months. "
        f"Targets: mean |change| <= {prec['targets']['mean_abs_months']:g} and 95th percentile <= "
        f"{prec['targets']['p95_abs_months']:g} months for every change. Model input: `{prec['geometry']}` "
        f"(base size-fit-framing-margin), native films read as the mean of {prec.get('phases', 1)}x"
        f"{prec.get('phases', 1)} phase-shifted squeezes, mirror-invariant: {'yes' if prec['mirror_invariant'] else 'no'}.")
    for set_name, rows in prec["sets"].items():
        st.subheader(f"{common.split_label(set_name)} ({prec['sample'][set_name]}); test-retest SD over all changes "
                     f"{prec['test_retest_sd'][set_name]:.2f} months")
        table = pd.DataFrame(rows)[["description", "mean_abs", "p95_abs", "mean_signed", "test_retest_sd", "meets_target"]]
        st.dataframe(table, hide_index=True, column_config={
            "description": "change to the radiograph",
            "mean_abs": st.column_config.NumberColumn("mean |change| (months)", format="%.2f"),
            "p95_abs": st.column_config.NumberColumn("95th pct |change|", format="%.2f"),
            "mean_signed": st.column_config.NumberColumn("mean shift", format="%+.2f"),
            "test_retest_sd": st.column_config.NumberColumn("test-retest SD", format="%.2f"),
            "meets_target": st.column_config.CheckboxColumn("target met")})
        if diag := prec.get("diagnostics", {}).get(set_name):
            st.caption("The floor (diagnostics, not targets): the hand unchanged, only its pixels resampled or "
                       "re-encoded. A change above that moves the reading no more than these does so by its "
                       "resampling, not by what it does to the hand.")
            st.dataframe(pd.DataFrame(diag)[["description", "mean_abs", "p95_abs", "mean_signed"]], hide_index=True,
                         column_config={
                             "description": "resampling or re-encoding only",
                             "mean_abs": st.column_config.NumberColumn("mean |change| (months)", format="%.2f"),
                             "p95_abs": st.column_config.NumberColumn("95th pct |change|", format="%.2f"),
                             "mean_signed": st.column_config.NumberColumn("mean shift", format="%+.2f")})
    if not prec.get("all_targets_met"):
        st.warning("Not every change meets the precision target: a follow-up reading of the same child can move "
                   "by more than the table's 95th percentiles for reasons that are not growth.", icon=":material/warning:")

# -- site calibration ---------------------------------------------------------------------------------
st.header("Site calibration")
sites = common.site_names()
if not sites:
    st.info("No site profile in this artifact set. A hospital makes one from its own labelled radiographs with "
            "`python -m pipelines.calibrate_site` (docs/operations.md, *Site calibration*).")
else:
    site = st.selectbox("Site profile", sites, key="unc_site")
    prof = common.artifact_or_none(common.artifact_json, f"sites/{site}.json")
    if prof is not None:
        ev = prof.get("evaluation", {})
        if prof.get("model_sha256") != common.model_fingerprint():
            st.warning(f"Profile {site} was fitted for other model weights: predictions refuse it. Refit it with "
                       "`python -m pipelines.calibrate_site` (docs/operations.md, Site calibration).", icon=":material/warning:")
        st.markdown(f"**{prof['n_cases']}** labelled cases of the site ({prof['n_male']} boys), fitted "
                    f"{prof['created'][:10]}. Numbers are **{ev.get('k_folds')}-fold cross-validated**: in each fold the "
                    "correction and the intervals are fitted on the other folds and judged on the held-out one; "
                    "*before* is the model as shipped, with its own intervals. 95% bootstrap CIs over cases.")
        gain, promise = ev.get("expected_mae_change"), prof.get("promise")
        if gain:
            st.markdown(f"Expected MAE change on new patients with the correction (nested cross-validation): "
                        f"**{gain['value']:+.2f} months** (95% CI {gain['ci_low']:+.2f} to {gain['ci_high']:+.2f}); "
                        f"correction {'applied' if ev.get('correction_applied') else 'not applied'}.")
        if promise:
            st.caption(promise["text"])
        for note in prof.get("notes", []):
            st.warning(note, icon=":material/warning:")
        cols = st.columns(4)
        for col, key, fmt in zip(cols, ("coverage", "width", "mae", "bias"), ("{:.1%}", "{:.1f} mo", "{:.2f} mo", "{:+.2f} mo")):
            b, a = ev["before"][key], ev["after"][key]
            col.metric(EVALUATION_METRICS[key], fmt.format(a["value"]), delta=f"before {fmt.format(b['value'])}",
                       delta_color="off", help=f"after: 95% CI {fmt.format(a['ci_low'])} to {fmt.format(a['ci_high'])}; "
                                               f"before: {fmt.format(b['ci_low'])} to {fmt.format(b['ci_high'])}")
        long = pd.DataFrame([{"metric": key, "when": when, "value": ev[when][key]["value"],
                              "lo": ev[when][key]["ci_low"], "hi": ev[when][key]["ci_high"]}
                             for key in ("coverage", "width") for when in ("before", "after")])
        c1, c2 = st.columns(2)
        for col, key, title in ((c1, "coverage", "90% coverage"), (c2, "width", "90% mean width (months)")):
            g = long[long["metric"] == key]
            fig = go.Figure(go.Bar(x=g["when"], y=g["value"], marker_color=["#9d9d9d", "#4c78a8"],
                                   error_y=dict(type="data", symmetric=False, array=g["hi"] - g["value"],
                                                arrayminus=g["value"] - g["lo"])))
            if key == "coverage":
                fig.add_hline(y=0.9, line_dash="dash", annotation_text="nominal 90%", annotation_position="bottom right")
                fig.update_layout(yaxis_tickformat=".0%", yaxis_range=[0, 1.05])
            fig.update_layout(height=300, yaxis_title=title, margin=dict(l=10, r=10, t=20, b=10))
            col.plotly_chart(fig, key=f"unc_site_{key}")
        w = ev.get("width_change_relative")
        if w:
            st.caption(f"Mean 90% width {w['value']:+.1%} (95% CI {w['ci_low']:+.1%} to {w['ci_high']:+.1%}) with the "
                       "profile. The site's intervals promise coverage on average over patients like its calibration "
                       "cases, not for each child or age band.")
        with st.expander("Before / after table and the correction"):
            st.dataframe(evaluation_frame(ev), hide_index=True)
            for sex in ("F", "M"):
                c = prof["correction"][sex]
                st.markdown(f"- **{'Girls' if sex == 'F' else 'Boys'}** ({c['n']} cases): {c['reason']}")

# -- stage classifier calibration --------------------------------------------------------------------
st.header("Is the stage classifier calibrated?")
report = None
if preds is not None and (preds.loc[preds["split"] == split, "stage_true"] >= 0).any():
    report, from_artifact = common.artifact_or_none(common.stage_report, split) or (None, False)
if report is None:
    st.info(f"No cases with a known stage in the {common.split_label(split).lower()}.")
else:
    c = st.columns(4)
    c[0].metric("Cases", f"{report['n']}")
    c[1].metric("Stage accuracy", f"{report['accuracy']:.1%}" if report.get("accuracy") is not None else "–")
    c[2].metric("ECE", f"{report['ece']:.3f}" if report.get("ece") is not None else "–",
                help="Expected calibration error: count-weighted mean |confidence - accuracy| over 10 bins of the "
                     "top-class probability. 0 = perfectly calibrated.")
    c[3].metric("Brier score", f"{report['brier']:.3f}" if report.get("brier") is not None else "–",
                help="Multiclass Brier score (0 best, 2 worst).")
    rel = pd.DataFrame(report["reliability"])
    rel = rel[rel["count"] > 0]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="grey", dash="dot"),
                             name="perfect calibration", hoverinfo="skip"))
    fig.add_trace(go.Bar(x=(rel["bin_lower"] + rel["bin_upper"]) / 2, y=rel["accuracy"], width=0.09,
                         name="accuracy in bin", marker_color="#4c78a8", opacity=0.8,
                         customdata=rel[["count", "confidence"]],
                         hovertemplate="accuracy %{y:.1%}<br>mean confidence %{customdata[1]:.1%}<br>"
                                       "cases %{customdata[0]}<extra></extra>"))
    fig.add_trace(go.Scatter(x=rel["confidence"], y=rel["accuracy"], mode="markers+lines", name="(confidence, accuracy)",
                             marker=dict(size=(rel["count"] / rel["count"].max() * 18 + 5).tolist(), color="#e45756"),
                             hoverinfo="skip"))
    fig.update_layout(height=380, xaxis_title="top-class probability (confidence)", yaxis_title="accuracy",
                      xaxis_range=[0, 1.02], yaxis_range=[0, 1.05], margin=dict(l=10, r=10, t=20, b=10),
                      legend=dict(orientation="h", y=-0.25))
    c1, c2 = st.columns(2)
    c1.plotly_chart(fig, key="unc_reliability")
    c1.caption("Reliability diagram: bars below the diagonal = overconfident (the stated probability is higher than "
               "the accuracy). Red markers sized by the number of cases." + ("" if from_artifact else
               " (Computed from the predictions table: stage_calibration.json has no entry for this split.)"))
    d = preds[preds["split"] == split]
    ent = d.assign(stage=stage_outcome(d))
    efig = px.histogram(ent, x="entropy", color="stage", nbins=30, barmode="overlay", opacity=0.65,
                        color_discrete_map={"correct": "#59a14f", "wrong": "#e15759", "unknown": "#9d9d9d"},
                        labels={"entropy": "entropy of the stage probabilities (nats)", "stage": "predicted stage"})
    efig.add_vline(x=math.log(3), line_dash="dash", annotation_text="maximum (1/3 each)", annotation_position="top left")
    efig.update_layout(height=380, margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.25))
    c2.plotly_chart(efig, key="unc_entropy")
    me_c, me_w = report.get("mean_entropy_correct"), report.get("mean_entropy_wrong")
    c2.caption("Entropy distribution: 0 = the model is certain of one stage. "
               + (f"Mean entropy {me_c:.3f} when right vs {me_w:.3f} when wrong."
                  if me_c is not None and me_w is not None else ""))

# -- error against uncertainty -----------------------------------------------------------------------
st.header("Does the model know when it is wrong?")
if preds is not None:
    d = preds[(preds["split"] == split)]
    measure = st.selectbox("Uncertainty measure", list(UNCERTAINTY_MEASURES), format_func=UNCERTAINTY_MEASURES.get,
                           key="unc_measure")
    bins = error_by_uncertainty(d, n_bins=10, by=measure)
    corr = rank_correlation(d, by=measure)
    if bins.empty:
        st.info("No cases with a reference age in this split.")
    else:
        labelled = with_measures(d[d["boneage"].notna()])
        c1, c2 = st.columns(2)
        sfig = px.scatter(labelled, x=measure, y="abs_error", color="sex", opacity=0.5, render_mode="webgl",
                          color_discrete_map={"F": "#d62728", "M": "#1f77b4"}, custom_data=["id", "split"],
                          hover_data={"id": True, "boneage": ":.0f", "boneage_pred": ":.1f"},
                          labels={measure: UNCERTAINTY_MEASURES[measure], "abs_error": "|error| (months)"})
        sfig.update_traces(marker_size=5)
        sfig.update_layout(height=380, margin=dict(l=10, r=10, t=20, b=10), legend=dict(orientation="h", y=-0.25))
        ev = c1.plotly_chart(sfig, key=f"unc_scatter_{measure}_{split}", on_select="rerun", selection_mode="points")
        bfig = go.Figure()
        if measure == "uncertainty":
            top = float(max(bins["measure_max"].max(), bins["mae_hi"].max()))
            bfig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line=dict(color="grey", dash="dot"),
                                      name="expected: mean |error| = scale", hoverinfo="skip"))
        bfig.add_trace(go.Scatter(
            x=bins["measure_mean"], y=bins["mae"], mode="lines+markers", name="mean |error| per decile",
            error_y=dict(type="data", symmetric=False, array=bins["mae_hi"] - bins["mae"],
                         arrayminus=bins["mae"] - bins["mae_lo"]),
            customdata=bins[["bin", "n", "measure_min", "measure_max"]],
            hovertemplate="decile %{customdata[0]} (n %{customdata[1]})<br>measure %{customdata[2]:.2f} to "
                          "%{customdata[3]:.2f}<br>mean |error| %{y:.1f} mo<extra></extra>"))
        bfig.update_layout(height=380, xaxis_title=f"{UNCERTAINTY_MEASURES[measure]}, decile mean",
                           yaxis_title="mean |error| (months)", margin=dict(l=10, r=10, t=20, b=10),
                           legend=dict(orientation="h", y=-0.25))
        c2.plotly_chart(bfig, key="unc_binned")
        rho = corr["rho"]
        st.caption(f"Spearman correlation of the measure with |error|: ρ = {rho:.3f} "
                   f"(p = {common.format_p(corr['p_value'])}, n = {corr['n']})." if pd.notna(rho)
                   else "Too few cases for a rank correlation.")
        st.caption("Right: cases split into 10 equal-count bins of the measure; error bars are 95% CIs of the mean. "
                   + ("For a Laplace scale the expected absolute error equals the scale, so well-calibrated deciles "
                      "lie on the dotted line; above it the model is overconfident." if measure == "uncertainty" else ""))
        pts = ev.selection.points if ev and ev.selection else []
        if pts and len(pts[0].get("customdata") or []) >= 2:
            common.try_open_case(str(pts[0]["customdata"][0]), str(pts[0]["customdata"][1]))

    st.subheader("The cases the model is least sure about")
    k = st.slider("How many", 5, 50, 15, key="unc_k")
    worst = least_certain(d, by=measure, k=k)
    common.case_table(worst, key="unc_least_table")
    st.caption(f"Sorted by {UNCERTAINTY_MEASURES[measure].lower()}, highest first; cases without a reference age "
               "are included. Select a row (or click a point above) to open the case in the Error browser.")
    common.case_thumbnails(worst.head(8), lambda r: f"{r['id']} · ±{r['uncertainty']:.0f} mo", per_row=8,
                           what="Thumbnails of these cases")
