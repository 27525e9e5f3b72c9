"""One child's films read and followed: assessments -> :mod:`boneage.growth.followup` series, and the
model's measured test-retest precision that sets their intervals.

:func:`follow_up_cases` is the batch every door shares (the ``followup`` command, the HTTP service's
follow-up endpoint, the dashboard's Patient page): the case table is read through
:func:`boneage.inference.assess.assess_cases` (so each film also gets its own row, with its SDS), films are
grouped by patient id (CSV ``patient_id``, else DICOM ``PatientID``) and each patient with two or more
readable films gets a series.

:func:`measured_retest_sd` reads the precision benchmark's pooled test-retest SD
(``artifacts/precision.json``, ``pipelines.precision``) of the official test radiographs: native-size films
as a clinic sends them (1.99 months for the shipped model), rather than the internal test split's
pre-shrunk images.
"""
from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from boneage.growth.followup import FOLLOWUP_COLUMNS, Film, FollowUp, follow_up, group_films
from boneage.inference.assess import Assessment, assess_cases
from boneage.inference.predictor import BoneAgePredictor
from boneage.store.artifacts import ArtifactStore

PRECISION_SET = "official_test"


def measured_retest_sd(store: ArtifactStore | None = None, set_name: str = PRECISION_SET) -> float:
    """The shipped model's test-retest SD in months (module docstring). Raises
    :class:`boneage.store.artifacts.ArtifactMissingError` when the benchmark was not run, ValueError when it
    has no usable value."""
    store = store or ArtifactStore.default()
    prec = store.json("precision.json")
    try:
        sd = float(prec["test_retest_sd"][set_name])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"artifacts/precision.json has no test_retest_sd for {set_name!r}; rerun "
                         "`boneage precision`") from None
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"artifacts/precision.json's test_retest_sd for {set_name!r} is {sd!r}; rerun `boneage precision`")
    return sd


def film_of(a: Assessment) -> Film:
    """The series entry of one assessment (laterality: "right" when the film was read mirrored)."""
    return Film(id=a.id, patient_id=a.patient_id, bone_age_months=a.boneage_months,
                chronological_age_months=a.chronological_age_months, male=a.male, study_date=a.study_date,
                laterality="right" if a.read_mirrored else "left")


def follow_up_assessments(assessments: Sequence[Assessment], retest_sd: float) -> list[FollowUp]:
    """A series per patient with two or more of these assessments, in first-seen order."""
    groups = group_films([film_of(a) for a in assessments])
    return [follow_up(films, retest_sd) for films in groups.values() if len(films) >= 2]


DEMO_NOTE = ("DEMONSTRATION: radiographs of different children from the RSNA test split, arranged as if they "
             "were one child's visits a year apart (made-up dates; chronological age = each film's reference bone "
             "age). Not a real follow-up.")


def demo_series(predictions: pd.DataFrame, male: bool, start_months: float = 96.0, visits: int = 4,
                step_months: float = 12.0, birth: dt.date = dt.date(2012, 3, 1)) -> pd.DataFrame:
    """A demonstration series (:data:`DEMO_NOTE`) from the artifact set's predictions table: for each visit,
    the internal-test film of this sex whose reference bone age is closest to the visit's age (lowest id on
    ties). Columns: id, patient_id ("DEMO"), study_date, chronological_age_months, boneage_pred, lower_90,
    upper_90, male."""
    pool = predictions[(predictions["split"] == "test") & (predictions["male"] == male)].sort_values("id")
    if pool.empty:
        raise ValueError("the predictions table has no internal-test films of this sex for a demonstration")
    rows, used = [], set()
    for k in range(visits):
        ca = start_months + k * step_months
        cand = pool[~pool["id"].astype(str).isin(used)]
        best = cand.iloc[int((cand["boneage"] - ca).abs().to_numpy().argmin())]
        used.add(str(best["id"]))
        rows.append({"id": str(best["id"]), "patient_id": "DEMO",
                     "study_date": birth + dt.timedelta(days=round(float(best["boneage"]) * 365.25 / 12)),
                     "chronological_age_months": float(best["boneage"]), "boneage_pred": float(best["boneage_pred"]),
                     "lower_90": float(best["lower_90"]), "upper_90": float(best["upper_90"]), "male": bool(male)})
    return pd.DataFrame(rows)


def films_of_rows(rows: pd.DataFrame) -> list[Film]:
    """Series entries from rows with id, patient_id, boneage_pred, chronological_age_months, male, study_date."""
    return [Film(id=str(r["id"]), patient_id=str(r["patient_id"]), bone_age_months=float(r["boneage_pred"]),
                 chronological_age_months=None if pd.isna(r["chronological_age_months"])
                 else float(r["chronological_age_months"]), male=bool(r["male"]),
                 study_date=r["study_date"] if isinstance(r["study_date"], dt.date) else None)
            for _, r in rows.iterrows()]


@dataclass
class FollowUpBatch:
    """What :func:`follow_up_cases` found: each film's row, each series, and why patients got none."""
    film_rows: pd.DataFrame
    series: list[FollowUp]
    skipped: list[str] = field(default_factory=list)  # "patient: reason"

    def table(self) -> pd.DataFrame:
        """One row per series, the follow-up command's columns."""
        return pd.DataFrame([s.as_row() for s in self.series], columns=FOLLOWUP_COLUMNS)


def follow_up_cases(cases: pd.DataFrame, image_dir: str | os.PathLike, retest_sd: float,
                    predictor: BoneAgePredictor | None = None) -> FollowUpBatch:
    """Read every film of ``cases`` (needs ``id``, ``male`` and a ``patient_id`` column or DICOM PatientID)
    and follow each patient (module docstring)."""
    assessments: list[Assessment] = []
    rows = assess_cases(cases, image_dir, predictor, on_assessment=assessments.append)
    series = follow_up_assessments(assessments, retest_sd)
    have = {s.patient_id for s in series}
    skipped = []
    read = {}
    for a in assessments:
        read.setdefault(a.patient_id, []).append(a.id)
    no_pid = read.pop("", [])
    if no_pid:
        skipped.append(f"{', '.join(no_pid)}: no patient id (give a patient_id column, or DICOM PatientID)")
    for pid, ids in read.items():
        if pid not in have:
            skipped.append(f"patient {pid}: only one readable film ({ids[0]})")
    failed = rows[rows["error"] != ""]
    for pid in sorted(set(failed["patient_id"].dropna()) - have - set(read)):
        skipped.append(f"patient {pid}: no readable film")
    return FollowUpBatch(rows, series, skipped)


__all__ = ["DEMO_NOTE", "FollowUpBatch", "PRECISION_SET", "demo_series", "film_of", "films_of_rows", "follow_up_assessments", "follow_up_cases",
           "measured_retest_sd"]
