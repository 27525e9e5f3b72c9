"""Predict: bone age, intervals, stage and evidence for uploaded radiographs; results as CSV."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from boneage.inference.assess import error_row, row_columns
from boneage.io.csv_safety import to_csv_safe
from boneage.evidence.render import overlay
from boneage.clinic.report import render_report, report_name
from boneage.evaluation.site_calibration import SiteProfileError
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
                                      help="Compares bone age with age: delayed / normal / advanced. Left empty, "
                                           "a DICOM's own age (birth and study dates, or PatientAge) is used.")
        male = sex == "male"
        try:
            a = common.assess_upload(f.getvalue(), f.name, male, site)
            if chrono is not None:
                a = a.with_chronological_age(chrono)
        except common.ImageLoadError as exc:
            st.error(common.md_escape(exc), icon=":material/broken_image:")
            rows.append(error_row(f.name, male, str(exc), common.stage_names()))
            continue
        except Exception as exc:  # never let one odd file take the page down
            st.error(common.md_escape(f"{f.name}: could not be processed ({type(exc).__name__}: {exc})."),
                     icon=":material/error:")
            rows.append(error_row(f.name, male, f"{type(exc).__name__}: {exc}", common.stage_names()))
            continue
        for caution in a.cautions():
            if a.unlike_training_data and "unlike the training" in caution:
                st.warning(common.md_escape(caution), icon=":material/warning:")
            else:
                st.info(common.md_escape(caution), icon=":material/invert_colors:" if "negative" in caution
                        else ":material/info:")

        c_img, c_num, c_sim = st.columns([1.2, 1.3, 1.5])
        with c_img:
            heat = common.image_attribution(a.image, male, "gradcam")
            st.image(np.hstack([np.repeat(a.image[..., None], 3, axis=2), overlay(a.image, heat, 0.45)]),
                     caption=f"Model input ({common.base_label()}) and Grad-CAM", width="stretch")
            st.download_button("Report (PDF)", render_report(a, heat), file_name=report_name(f.name),
                               mime="application/pdf", icon=":material/picture_as_pdf:", key=f"pr_report_{key}",
                               help="One printable page: patient, bone age with its 90% interval, stage, maturity "
                                    "status, out-of-distribution note, model and site, disclaimer.")
        with c_num:
            st.metric("Bone age", f"{a.boneage_months:.1f} months", help=common.months_to_text(a.boneage_months))
            st.caption(f"= {a.boneage_months / 12:.1f} years; model scale (typical error it expects) {a.scale_months:.1f} months")
            if a.intervals:
                st.dataframe(pd.DataFrame([{"level": f"{lvl}%", "from (months)": round(lo, 1), "to (months)": round(hi, 1)}
                                           for lvl, (lo, hi) in a.intervals.items()]),
                             hide_index=True, width="content")
            probs = ", ".join(f"{k} {v:.0%}" for k, v in a.stage_probs.items())
            st.markdown(f"**Stage:** {a.stage} ({probs})")
            if a.maturity is not None:
                label, rest = a.maturity_text().split(": ", 1)
                (st.warning if a.maturity.status != "normal" else st.success)(f"**{label}**: {rest}")
                source = "" if a.chronological_age_source == "given" else \
                    f" Chronological age from the {common.md_escape(a.chronological_age_source)}."
                st.caption(f"Rule: {a.maturity.rule}.{source}")
        with c_sim:
            try:
                sim = common.similar_cases_index().query(a.feature, k=4)
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
        rows.append(a.as_row())

st.subheader("Results")
res = pd.DataFrame(rows, columns=row_columns(common.stage_names()))  # the schema every door writes
n_ok = int((res["error"] == "").sum())
st.caption(f"{n_ok} of {len(res)} uploads processed" + (f"; {len(res) - n_ok} failed (see the error column)."
                                                         if n_ok < len(res) else "."))
st.dataframe(res, hide_index=True)
st.download_button("Download results (CSV)", to_csv_safe(res).encode(), file_name="bone_age_predictions.csv",
                   mime="text/csv", icon=":material/download:")
