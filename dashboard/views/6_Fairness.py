"""Fairness: error, bias, stage accuracy and interval coverage by sex and age band, with confidence
intervals, and the male-female gap test; the audit as CSV and as a self-contained HTML report."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from boneage.io.csv_safety import to_csv_safe
from boneage.training.splits import AGE_BAND_LABELS
from dashboard import common

# metric -> (label, unit/format, what "better" means)
METRIC_INFO = {
    "mae": ("Mean absolute error", "months", "lower is better"),
    "bias": ("Bias (predicted - reference)", "months", "0 is unbiased; > 0 = model says older"),
    "rmse": ("Root mean squared error", "months", "lower is better"),
    "within_12": ("Share within 12 months", "share", "higher is better"),
    "stage_accuracy": ("Stage accuracy", "share", "higher is better"),
    "coverage_90": ("90% interval coverage", "share", "should be about 90%"),
}
SHORT = {"mae": "MAE (months)", "bias": "Bias (months)", "rmse": "RMSE (months)", "within_12": "Within 12 months",
         "stage_accuracy": "Stage accuracy", "coverage_90": "90% coverage"}
SEX_COLOURS = {"F": "#d62728", "M": "#1f77b4", "all": "#555555"}
SEX_NAMES = {"F": "girls", "M": "boys", "all": "all"}

AUDIT_NOTES = (
    "Subgroup audit of the bone-age model on the {split} ({n} cases with a reference bone age). Metrics: mean "
    "absolute error, bias (predicted minus reference, months), RMSE, share of predictions within 12 months, "
    "accuracy of the developmental stage, and coverage of the 90% conformal interval, by sex, age band "
    "(reference bone age) and both.\n\n"
    "Each metric is the mean of a per-case value over the group; 95% confidence intervals from a percentile "
    "bootstrap with cases resampled within each group. The male-female gap test gives the difference (boys minus girls) "
    "with a bootstrap CI and a two-sided permutation p-value (sex labels shuffled); p_adj is the "
    "Benjamini-Hochberg adjustment over all gap tests in the table.")


def fmt(metric: str, v) -> str:
    if v is None or pd.isna(v):
        return "–"
    return f"{v:.1%}" if METRIC_INFO[metric][1] == "share" else f"{v:.2f}"


def fmt_ci(metric: str, lo, hi) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "95% CI –"
    return f"95% CI {fmt(metric, lo)} to {fmt(metric, hi)}"


def error_bars(table: pd.DataFrame, metric: str) -> dict:
    return dict(type="data", symmetric=False, array=(table[f"{metric}_hi"] - table[metric]).tolist(),
                arrayminus=(table[metric] - table[f"{metric}_lo"]).tolist(), thickness=1.5)


@st.cache_data(show_spinner=False)
def html_report(split: str) -> str:
    from boneage.evidence.fairness import audit_html

    tables = common.fairness_tables(split)
    n = int(tables["overall"]["n"].iloc[0]) if "overall" in tables and len(tables["overall"]) else 0
    return audit_html(tables, f"Bone-age model: fairness audit, {common.split_label(split)}",
                      AUDIT_NOTES.format(split=common.split_label(split).lower(), n=n))


@st.cache_data(show_spinner=False)
def all_tables_csv(split: str) -> str:
    tables = common.fairness_tables(split)
    return to_csv_safe(pd.concat([t.assign(table=name)[["table", *t.columns]] for name, t in tables.items()],
                                 ignore_index=True))


st.markdown(
    "Does the model work equally well for **girls and boys**, and across **ages**? Every number comes with a "
    "95% bootstrap confidence interval: with a few dozen cases in a group, differences of several months can "
    "be chance. Cases without a reference bone age are left out of every metric.")

splits = common.fairness_splits()
if not splits:
    common.artifact_or_stop(common.fairness_tables, "test")  # shows what is missing and how to make it
split = st.segmented_control("Split", splits, default=splits[0], format_func=common.split_label, required=True,
                             key="fair_split")
tables = common.artifact_or_stop(common.fairness_tables, split)
missing = [t for t in ("overall", "by_sex", "by_age_band", "by_sex_age_band", "sex_gaps") if t not in tables]
if missing:
    st.warning(f"The audit of this split lacks the table(s) {', '.join(missing)}: rerun "
               "`python -m pipelines.precompute --only fairness`.")

# -- overall -------------------------------------------------------------------------------------------
if "overall" in tables and len(tables["overall"]):
    o = tables["overall"].iloc[0]
    st.subheader(f"Overall ({int(o['n'])} cases)")
    cols = st.columns(len(METRIC_INFO))
    for c, m in zip(cols, METRIC_INFO):
        c.metric(SHORT[m], fmt(m, o[m]), help=f"{METRIC_INFO[m][0]} ({METRIC_INFO[m][2]}).")
        c.caption(fmt_ci(m, o[f"{m}_lo"], o[f"{m}_hi"]))

metric = st.radio("Metric", list(METRIC_INFO), format_func=lambda m: METRIC_INFO[m][0], horizontal=True,
                  key="fair_metric")
label, unit, better = METRIC_INFO[metric]
axis_title = f"{label} ({unit})" if unit != "share" else label
tickformat = ".0%" if unit == "share" else None

# -- by sex and by age band --------------------------------------------------------------------------
c1, c2 = st.columns([1, 2.2])
if "by_sex" in tables and len(tables["by_sex"]):
    t = tables["by_sex"]
    fig = go.Figure(go.Scatter(
        x=[SEX_NAMES.get(s, s) for s in t["sex"]], y=t[metric], mode="markers", error_y=error_bars(t, metric),
        marker=dict(size=14, color=[SEX_COLOURS.get(s, "#555") for s in t["sex"]]),
        customdata=t[["n", f"{metric}_lo", f"{metric}_hi"]],
        hovertemplate="%{x}: %{y:.3f}<br>95% CI %{customdata[1]:.3f} to %{customdata[2]:.3f}<br>n %{customdata[0]}"
                      "<extra></extra>"))
    if metric == "coverage_90":
        fig.add_hline(y=0.9, line_dash="dash", annotation_text="nominal 90%")
    if metric == "bias":
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(height=380, title=f"By sex ({better})", yaxis_title=axis_title, yaxis_tickformat=tickformat,
                      margin=dict(l=10, r=10, t=40, b=10))
    c1.plotly_chart(fig, key="fair_by_sex")
if "by_sex_age_band" in tables and len(tables["by_sex_age_band"]):
    t = tables["by_sex_age_band"]
    fig = go.Figure()
    if "by_age_band" in tables and len(tables["by_age_band"]):
        a = tables["by_age_band"]
        fig.add_trace(go.Scatter(x=a["age_band"], y=a[metric], mode="lines+markers", name="all",
                                 line=dict(color=SEX_COLOURS["all"], dash="dot"), error_y=error_bars(a, metric),
                                 customdata=a[["n"]],
                                 hovertemplate="all, %{x}: %{y:.3f} (n %{customdata[0]})<extra></extra>"))
    for sex, g in t.groupby("sex", sort=True):
        fig.add_trace(go.Scatter(x=g["age_band"], y=g[metric], mode="lines+markers", name=SEX_NAMES.get(sex, sex),
                                 line=dict(color=SEX_COLOURS.get(sex)), error_y=error_bars(g, metric),
                                 customdata=g[["n", f"{metric}_lo", f"{metric}_hi"]],
                                 hovertemplate=f"{SEX_NAMES.get(sex, sex)}, %{{x}}: %{{y:.3f}}<br>95% CI "
                                               "%{customdata[1]:.3f} to %{customdata[2]:.3f}<br>"
                                               "n %{customdata[0]}<extra></extra>"))
    if metric == "coverage_90":
        fig.add_hline(y=0.9, line_dash="dash", annotation_text="nominal 90%")
    if metric == "bias":
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
    present = [b for b in AGE_BAND_LABELS if b in set(t["age_band"])]
    fig.update_layout(height=380, title="By age band of the reference bone age", yaxis_title=axis_title,
                      yaxis_tickformat=tickformat, xaxis=dict(categoryorder="array", categoryarray=present),
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    c2.plotly_chart(fig, key="fair_by_band")
    small = t.loc[t["n"] < 20, "group"].tolist()
    if small:
        st.caption(f"Error bars are 95% bootstrap CIs. Small groups (n < 20: {', '.join(small)}) have wide or "
                   "degenerate intervals.")

# -- the gap test ------------------------------------------------------------------------------------
st.header("Is there a male-female gap?")
gaps = tables.get("sex_gaps")
if gaps is None or gaps.empty:
    st.info("No gap tests in the audit of this split.")
else:
    row = gaps[(gaps["scope"] == "all") & (gaps["metric"] == metric)]
    if not row.empty:
        g = row.iloc[0]
        c = st.columns(4)
        c[0].metric(f"Gap in {label.lower()} (boys - girls)", fmt(metric, g["gap"]) if unit != "share" else
                    (f"{100 * g['gap']:+.1f} pts" if pd.notna(g["gap"]) else "–"))
        c[1].metric("95% CI of the gap", "–" if pd.isna(g["ci_lo"]) else
                    (f"{g['ci_lo']:.2f} to {g['ci_hi']:.2f}" if unit != "share"
                     else f"{100 * g['ci_lo']:+.1f} to {100 * g['ci_hi']:+.1f} pts"))
        c[2].metric("p-value (permutation test)", common.format_p(g["p_value"]),
                    help=f"Two-sided, {int(g['n_perm'])} permutations of the sex labels.")
        c[3].metric("p adjusted (Benjamini-Hochberg)", common.format_p(g["p_adj"]),
                    help=f"Adjusted over all {len(gaps)} gap tests of this audit.")
        st.caption(f"{int(g['n_male'])} boys, {int(g['n_female'])} girls. "
                   + ("Too few cases of one sex for a CI or a test." if pd.isna(g["p_value"]) else
                      "A CI that includes 0 and a large p-value mean no evidence of a difference (not proof of none)."))
    band_gaps = gaps[(gaps["metric"] == metric)]
    if len(band_gaps):
        order = ["all"] + [b for b in AGE_BAND_LABELS if b in set(band_gaps["scope"])]
        bg = band_gaps.set_index("scope").reindex(order).reset_index()
        fig = go.Figure(go.Scatter(
            x=bg["scope"], y=bg["gap"], mode="markers",
            error_y=dict(type="data", symmetric=False, array=(bg["ci_hi"] - bg["gap"]).tolist(),
                         arrayminus=(bg["gap"] - bg["ci_lo"]).tolist()),
            marker=dict(size=11, color=["#555555"] + ["#4c78a8"] * (len(bg) - 1)),
            customdata=bg[["p_value", "p_adj", "n_male", "n_female"]],
            hovertemplate="%{x}: gap %{y:.3f}<br>p %{customdata[0]:.3f}, p_adj %{customdata[1]:.3f}<br>"
                          "boys %{customdata[2]}, girls %{customdata[3]}<extra></extra>"))
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
        fig.update_layout(height=330, title=f"Gap (boys - girls) in {label.lower()}, overall and within each age band",
                          yaxis_title=axis_title, yaxis_tickformat=tickformat, margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key="fair_gap_bands")
    with st.expander("All gap tests"):
        st.dataframe(gaps, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in ("male", "female", "gap", "ci_lo", "ci_hi",
                                                                      "p_value", "p_adj")})

# -- tables and downloads -------------------------------------------------------------------------
st.header("Audit tables")
if "sample" in tables:
    st.caption("Cases per sex, and how many have a reference age:")
    st.dataframe(tables["sample"], hide_index=True)
name = st.selectbox("Table", [t for t in tables if t != "sample"] + (["sample"] if "sample" in tables else []),
                    key="fair_table")
st.dataframe(tables[name], hide_index=True)
c1, c2, c3 = st.columns(3)
c1.download_button("This table (CSV)", to_csv_safe(tables[name]), file_name=f"fairness_{split}_{name}.csv",
                   mime="text/csv", icon=":material/download:", key="fair_dl_table")
c2.download_button("Whole audit (CSV, one table column)", all_tables_csv(split), file_name=f"fairness_{split}.csv",
                   mime="text/csv", icon=":material/download:", key="fair_dl_all")
c3.download_button("Audit report (HTML)", html_report(split), file_name=f"fairness_{split}.html",
                   mime="text/html", icon=":material/description:", key="fair_dl_html")
