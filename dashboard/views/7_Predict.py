"""Predict: bone age, intervals, stage and evidence for uploaded radiographs; results as CSV."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from boneage.assessment import maturity_status
from boneage.csv_safety import to_csv_safe
from boneage.render import overlay
from boneage.site_calibration import SiteProfileError
from dashboard import common

st.markdown("Upload one or more left-hand radiographs (PNG, JPEG or DICOM). Each gets a bone-age estimate with "
            "80/90/95% prediction intervals, a developmental stage, a Grad-CAM map and the most similar training "
            f"cases. *Decision support only; the model sees the image at {common.base_label()} pixels.*")

try:
    predictor = common.predictor()
except FileNotFoundError as exc:  # ModelNotFoundError
    st.error(str(exc))
    st.stop()

c1, c2 = st.columns([3, 1])
files = c1.file_uploader("Radiographs", type=["png", "jpg", "jpeg", "dcm", "dicom"], accept_multiple_files=True,
                         key="pr_files")
default_sex = c2.radio("Sex (default for all uploads)", ["female", "male"], horizontal=True, key="pr_sex",
                       help="Change it per file below when the uploads are of different children.")
site = None
if sites := common.site_names():
    choice = c2.selectbox("Site calibration", ["none", *sites], key="pr_site",
                          help="A site profile (python -m pipelines.calibrate_site) corrects the age for a hospital's "
                               "own readings and replaces the intervals by ones calibrated on its cases. "
                               "'none': the model as shipped.")
    site = None if choice == "none" else choice
if site:
    try:
        profile = common.site_predictor(site).site
    except SiteProfileError as exc:  # made for another model, or damaged
        st.error(str(exc), icon=":material/error:")
        st.stop()
    st.caption(f"Site **{site}**: age corrected and intervals calibrated on {profile.n_cases} of its labelled cases "
               f"({profile.created[:10]}); they promise coverage on average over patients like those, not per child.")
if not files:
    st.info("No radiograph uploaded yet.", icon=":material/upload:")
    st.stop()

if predictor.conformal is None and not site:
    st.warning(predictor.conformal_problem or "No conformal calibration (model/conformal.json) found: intervals "
               "are not available. Make it with `python -m pipelines.precompute --only predictions`.")
detector = None
try:
    detector = common.outlier_detector()
except common.ArtifactMissingError as exc:
    st.caption(f"Out-of-distribution check unavailable: {exc}")

SEXES = ["female", "male"]
rows = []
for i, f in enumerate(files):
    key = f"{i}_{f.name}"
    with st.container(border=True):
        head, sex_col, age_col = st.columns([2, 1, 1])
        head.text(f.name)  # plain text: an upload's name is never rendered as markdown
        sex = sex_col.selectbox("Sex", SEXES, index=SEXES.index(default_sex), key=f"pr_sex_{key}")
        chrono = age_col.number_input("Chronological age (months, optional)", min_value=0.0, max_value=300.0,
                                      value=None, step=1.0, key=f"pr_age_{key}",
                                      help="Compares bone age with age: delayed / normal / advanced.")
        male = sex == "male"
        row = {"file": f.name, "sex": "M" if male else "F"}
        try:
            img, negative, notes = common.read_upload_gated(f.getvalue(), f.name)
            pred, feature = common.image_prediction(img, male, site)
        except common.ImageLoadError as exc:
            st.error(common.md_escape(exc), icon=":material/broken_image:")
            rows.append({**row, "error": str(exc)})
            continue
        except Exception as exc:  # never let one odd file take the page down
            st.error(common.md_escape(f"{f.name}: could not be processed ({type(exc).__name__}: {exc})."),
                     icon=":material/error:")
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"})
            continue
        row.update(pred.as_row())
        if site:
            row["site"] = site
        row["inverted_negative"] = negative
        for note in notes:
            st.info(common.md_escape(note), icon=":material/info:")
        if negative:
            st.info("This image looks like a negative (bone dark on a bright background), so it was inverted "
                    "before prediction. Check the model input below: bone should be bright.",
                    icon=":material/invert_colors:")

        c_img, c_num, c_sim = st.columns([1.2, 1.3, 1.5])
        with c_img:
            heat = common.image_attribution(img, male, "gradcam")
            st.image(np.hstack([np.repeat(img[..., None], 3, axis=2), overlay(img, heat, 0.45)]),
                     caption=f"Model input ({common.base_label()}) and Grad-CAM", width="stretch")
        with c_num:
            st.metric("Bone age", f"{pred.boneage_months:.1f} months", help=common.months_to_text(pred.boneage_months))
            st.caption(f"= {pred.boneage_months / 12:.1f} years; model scale (typical error it expects) {pred.scale_months:.1f} months")
            if pred.intervals:
                st.dataframe(pd.DataFrame([{"level": f"{lvl}%", "from (months)": round(lo, 1), "to (months)": round(hi, 1)}
                                           for lvl, (lo, hi) in pred.intervals.items()]),
                             hide_index=True, width="content")
            probs = ", ".join(f"{k} {v:.0%}" for k, v in pred.stage_probs.items())
            st.markdown(f"**Stage:** {pred.stage} ({probs})")
            if chrono is not None:
                ma = maturity_status(pred.boneage_months, chrono, interval=pred.intervals.get("95"),
                                     scale=pred.scale_months)
                rel = "behind" if ma.difference_months < 0 else "ahead of"
                text = (f"**{ma.label}**: bone age is {abs(ma.difference_months):.1f} months {rel} the chronological "
                        f"age ({chrono:.0f} months).")
                (st.warning if ma.status != "normal" else st.success)(text)
                st.caption(f"Rule: {ma.rule}.")
                row.update(chronological_age=chrono, difference_months=round(ma.difference_months, 1),
                           maturity=ma.status)
            if detector is not None:
                score = float(detector.score(feature[None])[0])
                flagged = bool(detector.flag(feature[None])[0])
                row.update(outlier_score=round(score, 3), unlike_training_data=flagged)
                if flagged:
                    st.warning(f"This image looks unlike the training radiographs (LOF score {score:.2f} > "
                               f"{detector.threshold:.2f}): treat the estimate with extra caution.",
                               icon=":material/warning:")
        with c_sim:
            try:
                sim = common.similar_cases_index().query(feature, k=4)
            except common.ArtifactMissingError as exc:
                st.caption(f"Similar cases unavailable: {exc}")
            else:
                st.markdown("**Most similar training cases**")
                if common.data_dir() is not None:
                    cols = st.columns(len(sim))
                    for col, (_, r) in zip(cols, sim.iterrows()):
                        im = common.case_image(str(r["id"]), "train")
                        if im is not None:
                            col.image(im, width="stretch")
                        col.caption(f"{r['sex']}, {r['boneage']:.0f} mo")
                else:
                    st.dataframe(sim[["id", "sex", "boneage"]].rename(columns={"boneage": "bone age (months)"}),
                                 hide_index=True, width="content")
                    st.caption("Radiographs of similar cases are shown where the data folder is configured.")
        rows.append({**row, "error": ""})

st.subheader("Results")
res = pd.DataFrame(rows)
cols = [c for c in res.columns if c != "error"] + ["error"]
res = res[cols]
n_ok = int((res["error"] == "").sum())
st.caption(f"{n_ok} of {len(res)} uploads processed" + (f"; {len(res) - n_ok} failed (see the error column)."
                                                         if n_ok < len(res) else "."))
st.dataframe(res, hide_index=True)
st.download_button("Download results (CSV)", to_csv_safe(res).encode(), file_name="bone_age_predictions.csv",
                   mime="text/csv", icon=":material/download:")
