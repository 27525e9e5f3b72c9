"""The clinical facts around a film, as a door receives them: patient id, dates, heights.

:func:`parse_clinical` turns what a CSV row, a form or a request gives (``patient_id``, ``birth_date`` and
``study_date`` as ISO dates, or ``chronological_age_months``; ``height_cm``, ``father_height_cm``,
``mother_height_cm``, all optional) into :class:`ClinicalInput`. Nothing here raises on bad values: each
unusable value is left out and ``problems`` says why (a study before birth or in the future, an unparseable
date, an implausible height ...), so a batch keeps the reading and reports the reason in the row's notes.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Mapping

from boneage.growth.adult_height import CHILD_HEIGHT_RANGE_CM, PARENT_HEIGHT_RANGE_CM, check_height
from boneage.io.dicom_patient import MAX_AGE_MONTHS, age_between
from boneage.io.tables import CLINICAL_COLUMNS


@dataclass(frozen=True)
class ClinicalInput:
    """Usable clinical facts (None where not given or not usable) and the problems with the rest."""
    patient_id: str = ""
    birth_date: dt.date | None = None
    study_date: dt.date | None = None
    chronological_age_months: float | None = None
    age_source: str = ""
    height_cm: float | None = None
    father_height_cm: float | None = None
    mother_height_cm: float | None = None
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self == ClinicalInput()


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def parse_date(value: Any, what: str) -> tuple[dt.date | None, str]:
    """(date, problem) from an ISO date (``2020-03-31``; a datetime's date part is accepted)."""
    if _blank(value):
        return None, ""
    if isinstance(value, dt.datetime):
        return value.date(), ""
    if isinstance(value, dt.date):
        return value, ""
    s = str(value).strip()
    try:
        return dt.date.fromisoformat(s[:10]), ""
    except ValueError:
        return None, f"{what} {s!r} is not a date; give it as YYYY-MM-DD"


def _number(value: Any, what: str) -> tuple[float | None, str]:
    if _blank(value):
        return None, ""
    try:
        v = float(str(value).strip().replace(",", "."))
    except ValueError:
        return None, f"{what} {value!r} is not a number"
    return (v, "") if math.isfinite(v) else (None, f"{what} {value!r} is not a number")


def parse_clinical(raw: Mapping[str, Any], today: dt.date | None = None) -> ClinicalInput:
    """:class:`ClinicalInput` from the fields in :data:`CLINICAL_COLUMNS` (others ignored); see the module
    docstring. ``today`` (default: the system date) bounds study dates."""
    today = today or dt.date.today()
    problems: list[str] = []

    def keep(pair):
        value, problem = pair
        if problem:
            problems.append(problem)
        return value

    pid = "" if _blank(raw.get("patient_id")) else str(raw.get("patient_id")).strip()
    birth = keep(parse_date(raw.get("birth_date"), "birth_date"))
    study = keep(parse_date(raw.get("study_date"), "study_date"))
    if study is not None and study > today:
        problems.append(f"study_date {study.isoformat()} is in the future")
        study = None
    if birth is not None and birth > today:
        problems.append(f"birth_date {birth.isoformat()} is in the future")
        birth = None
    age, source = None, ""
    if birth is not None and study is not None:
        months = age_between(birth, study)
        if months < 0:
            problems.append(f"study_date {study.isoformat()} is before birth_date {birth.isoformat()}")
        elif months > MAX_AGE_MONTHS:
            problems.append(f"birth_date {birth.isoformat()} and study_date {study.isoformat()} give an age of "
                            f"{months:.0f} months, beyond any bone-age reading")
        else:
            age, source = months, "birth_date and study_date"
    given_age = keep(_number(raw.get("chronological_age_months"), "chronological_age_months"))
    if given_age is not None:
        if not 0 <= given_age <= MAX_AGE_MONTHS:
            problems.append(f"chronological_age_months {given_age:g} is outside 0-{MAX_AGE_MONTHS:.0f}")
        elif age is None:
            age, source = given_age, "chronological_age_months"
        elif abs(given_age - age) > 1:
            problems.append(f"chronological_age_months {given_age:g} disagrees with the dates ({age:.1f}); the dates "
                            "were used")
    heights = {}
    for col, what, bounds in (("height_cm", "height", CHILD_HEIGHT_RANGE_CM),
                              ("father_height_cm", "father's height", PARENT_HEIGHT_RANGE_CM),
                              ("mother_height_cm", "mother's height", PARENT_HEIGHT_RANGE_CM)):
        v = keep(_number(raw.get(col), col))
        if v is not None and (problem := check_height(v, what, bounds)):
            problems.append(problem)
            v = None
        heights[col] = v
    return ClinicalInput(patient_id=pid, birth_date=birth, study_date=study, chronological_age_months=age,
                         age_source=source, height_cm=heights["height_cm"], father_height_cm=heights["father_height_cm"],
                         mother_height_cm=heights["mother_height_cm"], problems=tuple(problems))


__all__ = ["CLINICAL_COLUMNS", "ClinicalInput", "parse_clinical", "parse_date"]
