"""Home: what the tool is, the model card, headline metrics with confidence intervals, training curves."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import common

st.markdown(
    "This dashboard estimates **bone age** (skeletal maturity, in months) from a left-hand radiograph and the "
    "child's sex, with a **prediction interval**, a **developmental stage** (Child / Adolescent / Adult) and "
    "the evidence behind it: where the model looks, how it errs, for whom it works less well, and when an "
    "image looks unlike anything it was trained on. Model: an EfficientNet-Lite network trained on the RSNA "
    "Pediatric Bone Age 2017 data.")

st.warning(
    "**Decision support only.** The estimate is meant to assist, not replace, a radiologist's reading "
    "(Greulich-Pyle or Tanner-Whitehouse). The model was trained on radiographs **downsized to "
    f"{common.base_label()} pixels**, so fine details of the growth plates are not visible to it; its errors are larger than an "
    "expert's, and it has only been validated on the RSNA data (mostly North American children). Always read "
    "the interval, not just the number.", icon=":material/medical_information:")

# -- headline metrics ------------------------------------------------------------------------------
st.header("How accurate is it?")
metrics = common.artifact_or_none(common.metrics)
preds = common.artifact_or_none(common.predictions)
if metrics is not None:
    for key, split, label in (("internal_test", "test", "Internal test set (held out from the RSNA training data)"),
                              ("official_test", "official_test", "Official RSNA test set (labelled cases)")):
        block = metrics.get(key)
        if not block or "overall" not in block:
            st.info(f"No metrics for the {label.lower()} in metrics.json.")
            continue
        ov = block["overall"]
        ci = None
        if preds is not None:
            tab = common.mae_ci(split)
            if len(tab):
                ci = (float(tab["mae_lo"].iloc[0]), float(tab["mae_hi"].iloc[0]))
        st.subheader(label)
        c = st.columns(5)
        c[0].metric("MAE (months)", f"{ov['mae']:.2f}",
                    help="Mean absolute error: mean |predicted - reference| bone age. The 95% CI is a bootstrap over cases "
                         "(1,000 resamples of predictions.parquet).")
        if ci:
            c[0].caption(f"95% CI {ci[0]:.2f} to {ci[1]:.2f} months")
        c[1].metric("RMSE (months)", f"{ov['rmse']:.2f}")
        c[2].metric("Within 12 months", f"{100 * ov['within_12']:.1f}%")
        c[3].metric("Stage accuracy", f"{100 * ov['stage_accuracy']:.1f}%",
                    help="Child < 8 y, Adolescent 8-15 y, Adult >= 15 y of reference bone age.")
        c[4].metric("Cases", f"{ov['n']:,}")
        bias = ov.get("bias")
        extra = f"Bias (mean predicted - reference) {bias:+.2f} months; R^2 {ov['r2']:.3f}." if bias is not None else ""
        by_sex = block.get("by_sex") or {}
        if by_sex:
            extra += " MAE by sex: " + ", ".join(f"{'female' if s == 'F' else 'male'} {m['mae']:.2f} (n={m['n']})"
                                                  for s, m in sorted(by_sex.items())) + "."
        st.caption(extra + " Details on the Overview and Fairness pages.")

# -- training curves -------------------------------------------------------------------------------
st.header("Training")
hist = common.artifact_or_none(common.history)
cfg = common.artifact_or_none(common.model_config)
if hist is not None and len(hist):
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Mean absolute error (months)", "Loss"))
    mode = "lines+markers"
    fig.add_trace(go.Scatter(x=hist["epoch"], y=hist["train_mae"], name="train MAE", mode=mode), 1, 1)
    fig.add_trace(go.Scatter(x=hist["epoch"], y=hist["val_mae"], name="validation MAE", mode=mode), 1, 1)
    if "val_mae_ema" in hist.columns:  # weight-averaged (EMA) copy, validated beside the raw weights
        fig.add_trace(go.Scatter(x=hist["epoch"], y=hist["val_mae_ema"], name="validation MAE (EMA weights)",
                                 mode=mode), 1, 1)
    fig.add_trace(go.Scatter(x=hist["epoch"], y=hist["train_loss"], name="train loss", mode=mode), 1, 2)
    fig.add_trace(go.Scatter(x=hist["epoch"], y=hist["val_nll"], name="validation NLL", mode=mode), 1, 2)
    if cfg and cfg.get("best_epoch"):
        fig.add_vline(x=cfg["best_epoch"], line_dash="dot", line_color="gray", row=1, col=1)
        fig.add_vline(x=cfg["best_epoch"], line_dash="dot", line_color="gray", row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(height=360, margin=dict(t=40, b=10, l=10, r=10), legend=dict(orientation="h", y=-0.2))
    st.plotly_chart(fig, key="history")
if cfg:
    facts = {
        "Backbone": cfg.get("model", {}).get("backbone"),
        "Input": f"{cfg.get('model', {}).get('base_size')} px images, resized to {cfg.get('model', {}).get('input_size')} px",
        "Training cases": cfg.get("n_train"),
        "Best epoch": cfg.get("best_epoch"),
        "Best validation MAE": f"{cfg['best_val_mae']:.2f} months" if cfg.get("best_val_mae") is not None else None,
        "Hardware": cfg.get("hardware"),
        "Training time": f"{cfg['train_seconds'] / 60:.0f} min" if cfg.get("train_seconds") else None,
    }
    st.markdown("\n".join(f"- **{k}:** {v}" for k, v in facts.items() if v is not None))

# -- model card ------------------------------------------------------------------------------------
st.header("Model card")
card = common.artifact_or_none(common.model_card)
if card:
    with st.expander("MODEL_CARD.md", expanded=True, icon=":material/description:"):
        st.markdown(card)

st.divider()
st.markdown(
    "**Pages:** *Overview* (accuracy plots) - *Error browser* (every case, filterable) - *Explain* (attribution "
    "maps) - *Embeddings* - *Uncertainty* - *Fairness* - *Predict* (your own radiographs) - *Maturation atlas*.")
if common.data_dir() is None:
    common.data_dir_notice()
