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


__all__ = ["FollowUpBatch", "PRECISION_SET", "film_of", "follow_up_assessments", "follow_up_cases",
           "measured_retest_sd"]
