"""Patient: one child's series of films, on the reference chart, with the bone-age velocity between visits."""
from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from boneage.growth.followup import follow_up
from boneage.growth.sds import bone_age_sds
from boneage.inference.series import DEMO_NOTE, demo_series, films_of_rows, measured_retest_sd
from dashboard import common

st.markdown("One child's radiographs over time: bone age against chronological age on the reference chart "
            "(mean and +/-2 SD), and how fast bone age advanced between visits (bone-age months per month of "
            "life), with a 90 % interval from the model's measured test-retest precision. *Decision support only.*")

try:
    sd = measured_retest_sd(common.store())
except (common.ArtifactMissingError, ValueError) as exc:
    st.error(f"The model's test-retest precision is needed for the velocity's interval: {exc}")
    st.stop()

source = st.radio("Films", ["Uploads of one child", "Demonstration series from the data set"], horizontal=True,
                  key="pt_source")
rows = pd.DataFrame()
if source.startswith("Demonstration"):
    sex = st.radio("Sex of the demonstration child", ["female", "male"], horizontal=True, key="pt_demo_sex")
    st.warning(DEMO_NOTE, icon=":material/science:")
    rows = demo_series(common.predictions(), sex == "male")
    rows["label"] = [f"{i} (test split)" for i in rows["id"]]
else:
    c1, c2, c3 = st.columns([3, 1, 1])
    files = c1.file_uploader("Radiographs of one child (PNG, JPEG or DICOM)", type=["png", "jpg", "jpeg", "dcm", "dicom"],
                             accept_multiple_files=True, key="pt_files")
    sex = c2.radio("Sex (required)", ["female", "male"], index=None, key="pt_sex")
    birth = c3.date_input("Birth date", value=None, key="pt_birth", min_value=date(1990, 1, 1), max_value=date.today())
    if not files:
        st.info("Upload two or more radiographs of the same child, or choose the demonstration series.",
                icon=":material/upload:")
        st.stop()
    if sex is None or birth is None:
        st.warning("Give the child's sex and birth date: bone age depends on sex, and the velocity on the dates.",
                   icon=":material/wc:")
        st.stop()
    assessments = []
    for i, f in enumerate(files):
        header = common.upload_patient(f.getvalue(), f.name)
        study = st.date_input(f"Study date of {f.name}", value=header.study_date if header is not None else None,
                              key=f"pt_study_{i}_{f.name}", min_value=date(1990, 1, 1), max_value=date.today())
        if study is None:
            st.warning(common.md_escape(f"{f.name}: give its study date (a DICOM's StudyDate fills it)."))
            continue
        try:
            a = common.assess_upload(f.getvalue(), f.name, sex == "male")
        except common.ImageLoadError as exc:
            st.error(common.md_escape(exc), icon=":material/broken_image:")
            continue
        assessments.append(a.with_clinical({"patient_id": "this child", "birth_date": birth, "study_date": study}))
    for a in assessments:
        for p in a.clinical.problems:
            st.warning(common.md_escape(f"{a.id}: {p}"))
    rows = pd.DataFrame([{"id": a.id, "patient_id": "this child", "study_date": a.study_date,
                          "chronological_age_months": a.chronological_age_months, "boneage_pred": a.boneage_months,
                          "lower_90": a.intervals.get("90", (None, None))[0],
                          "upper_90": a.intervals.get("90", (None, None))[1], "male": a.male, "label": a.id}
                         for a in assessments if a.chronological_age_months is not None])

if len(rows) < 2:
    st.info("A series needs two or more readable films with a date.", icon=":material/timeline:")
    st.stop()

male = bool(rows["male"].iloc[0])
rows["bone_age_sds"] = [bone_age_sds(b, c, male, interval=(lo, hi)).sds
                        for b, c, lo, hi in rows[["boneage_pred", "chronological_age_months", "lower_90", "upper_90"]]
                        .itertuples(index=False)]
rows["sds_status"] = [bone_age_sds(b, c, male, interval=(lo, hi)).status
                      for b, c, lo, hi in rows[["boneage_pred", "chronological_age_months", "lower_90", "upper_90"]]
                      .itertuples(index=False)]
series = follow_up(films_of_rows(rows), sd)
st.plotly_chart(common.growth_chart(male, rows.sort_values("chronological_age_months")), key="pt_chart")
if series.velocity is not None:
    st.metric("Bone-age velocity over the series", f"{series.velocity:.2f}",
              help="bone-age months per month of life (least squares); 1.00 = maturing at the usual pace")
    st.caption(f"90 % interval {series.lower_90:.2f} to {series.upper_90:.2f}, from the model's test-retest SD "
               f"{sd:.2f} months (artifacts/precision.json, official test). It covers how far the readings can "
               "move on their own, not the biology.")
for n in series.notes:
    st.warning(common.md_escape(n), icon=":material/warning:")
st.subheader("Films")
st.dataframe(rows.drop(columns=["label", "male"]).sort_values("chronological_age_months"), hide_index=True)
st.subheader("Between visits")
st.dataframe(pd.DataFrame([{"from": s.from_id, "to": s.to_id, "months apart": s.months_between,
                            "bone age change": round(s.bone_age_change, 1), "velocity": s.velocity,
                            "lower 90": s.lower_90, "upper 90": s.upper_90, "note": s.note or None}
                           for s in series.steps]), hide_index=True)
