"""Predict: bone age, intervals, stage and evidence for uploaded radiographs; results as CSV."""
from __future__ import annotations

from datetime import date

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
SEXES = ["female", "male"]


def _set_all_sexes() -> None:
    """The 'all uploads' choice sets every upload's own sex (but not one read from its DICOM header)."""
    for k in list(st.session_state.keys()):
        if str(k).startswith("pr_sex_") and k not in st.session_state.get("pr_dicom_sex", set()):
            st.session_state[k] = st.session_state["pr_sex"]


all_sex = c2.radio("Sex for all uploads", SEXES, index=None, horizontal=True, key="pr_sex", on_change=_set_all_sexes,
                   help="Sets the sex of every upload (a DICOM's own PatientSex is kept); change it per file below. "
                        "Bone age is read differently for boys and girls, so there is no default.")
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

rows = []
for i, f in enumerate(files):
    key = f"{i}_{f.name}"
    with st.container(border=True):
        head, sex_col, age_col = st.columns([2, 1, 1])
        head.text(f.name)  # plain text: an upload's name is never rendered as markdown
        header = common.upload_patient(f.getvalue(), f.name)
        dicom_sex = header.sex if header is not None and header.sex in ("M", "F") else ""
        sex_key = f"pr_sex_{key}"
        if sex_key not in st.session_state:  # first sight of this upload: its DICOM sex, else the 'all' choice
            if dicom_sex:
                st.session_state[sex_key] = "male" if dicom_sex == "M" else "female"
                st.session_state.setdefault("pr_dicom_sex", set()).add(sex_key)
            elif all_sex is not None:
                st.session_state[sex_key] = all_sex
        sex = sex_col.selectbox("Sex", SEXES, index=None, key=sex_key, placeholder="choose (required)")
        if dicom_sex:
            sex_col.caption(f"From the DICOM PatientSex ({dicom_sex}); change it if the header is wrong.")
        chrono = age_col.number_input("Chronological age (months, optional)", min_value=0.0, max_value=300.0,
                                      value=None, step=1.0, key=f"pr_age_{key}",
                                      help="Compares bone age with age: delayed / normal / advanced. Left empty, "
                                           "a DICOM's own age (birth and study dates, or PatientAge) is used.")
        with st.expander("Dates and heights (optional): SDS, adult height, target height"):
            d1, d2, h1, h2, h3 = st.columns(5)
            birth = d1.date_input("Birth date", value=None, key=f"pr_birth_{key}", min_value=date(1990, 1, 1),
                                  max_value=date.today())
            study = d2.date_input("Study date", value=header.study_date if header is not None else None,
                                  key=f"pr_study_{key}", min_value=date(1990, 1, 1), max_value=date.today(),
                                  help="A DICOM's StudyDate fills it.")
            height = h1.number_input("Height (cm)", min_value=0.0, max_value=250.0, value=None, key=f"pr_height_{key}",
                                     help="Adds the Bayley-Pinneau adult height.")
            father = h2.number_input("Father's height (cm)", min_value=0.0, max_value=250.0, value=None,
                                     key=f"pr_father_{key}")
            mother = h3.number_input("Mother's height (cm)", min_value=0.0, max_value=250.0, value=None,
                                     key=f"pr_mother_{key}", help="With the father's: the mid-parental target height.")
        clinical = {"birth_date": birth, "study_date": study, "height_cm": height, "father_height_cm": father,
                    "mother_height_cm": mother}
        if sex is None:
            try:  # a file that cannot be read is named now, before the sex is chosen
                common.check_upload(f.getvalue(), f.name)
            except common.ImageLoadError as exc:
                st.error(common.md_escape(exc), icon=":material/broken_image:")
                rows.append(error_row(f.name, None, str(exc), common.stage_names()))
                continue
            st.warning("Choose the sex of this child (above, or for all uploads): bone age is read differently for "
                       "boys and girls, so the page does not guess it.", icon=":material/wc:")
            rows.append(error_row(f.name, None, "sex not given: choose M or F", common.stage_names()))
            continue
        male = sex == "male"
        try:
            a = common.assess_upload(f.getvalue(), f.name, male, site)
            if chrono is not None:
                a = a.with_chronological_age(chrono)
            if any(v is not None for v in clinical.values()):
                a = a.with_clinical(clinical)
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
            if a.sds is not None:
                if a.sds.sds is None:
                    st.info(common.md_escape(a.sds.text()), icon=":material/info:")
                else:
                    (st.success if a.sds.status == "normal" else st.warning)(
                        f"**Bone age SDS {a.sds.sds:+.2f}: {a.sds.status}**")
                    st.caption(common.md_escape(f"{a.sds.text()} Rule: {a.sds.rule}."))
                    st.plotly_chart(common.growth_chart(a.male, pd.DataFrame([{
                        "chronological_age_months": a.chronological_age_months, "boneage_pred": a.boneage_months,
                        **({"lower_90": a.intervals["90"][0], "upper_90": a.intervals["90"][1]}
                           if "90" in a.intervals else {})}])), key=f"pr_chart_{key}")
            for line in a.growth_text()[1:] + [f"Not used: {p}" for p in a.clinical.problems]:
                st.caption(common.md_escape(line))
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
