"""What a DICOM header says about the patient and the study: sex, age, ids and dates.

One reader shared by every door that takes DICOM (:func:`boneage.inference.assess.assess`, the HTTP service, the
DICOM node): when a caller gives no sex or chronological age, they are read from the header, and the
assessment says where they came from.

Age: from ``PatientBirthDate`` and ``StudyDate`` (falling back to ``AcquisitionDate``, ``ContentDate``,
``SeriesDate``) when both dates are there, because dates give the age to the day; else from ``PatientAge``
(``nnnD/W/M/Y``, often whole years only). Values that cannot be a child's age (zero: ``000D``, ``000Y`` or a
birth date equal to the study date, which PACS write as placeholders; negative, above :data:`MAX_AGE_MONTHS`,
unparseable) give no age and a note saying why, never a guessed one (issue #31: ``000D`` gave "advanced by
175.8 months"). An age that contradicts the film itself is judged in :mod:`boneage.inference.assess`.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from boneage.io.imaging import dicom_header

DAYS_PER_MONTH = 365.25 / 12
MAX_AGE_MONTHS = 300.0  # 25 years: beyond any bone-age reading
_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_UNIT_MONTHS = {"D": 1 / DAYS_PER_MONTH, "W": 7 / DAYS_PER_MONTH, "M": 1.0, "Y": 12.0}
STUDY_DATE_TAGS = ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate")


@dataclass(frozen=True)
class PatientInfo:
    """The header's patient and study facts (empty strings / None where the header has none).

    ``sex`` is ``"M"``, ``"F"`` or ``""`` (``O``, missing or anything else); ``age_months`` the chronological
    age at the study and ``age_source`` how it was found (e.g. ``"PatientBirthDate and StudyDate"``);
    ``notes`` say what was present but unusable."""
    patient_id: str = ""
    sex: str = ""
    birth_date: dt.date | None = None
    study_date: dt.date | None = None
    age_months: float | None = None
    age_source: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    sop_instance_uid: str = ""
    notes: tuple[str, ...] = ()

    @property
    def male(self) -> bool | None:
        return {"M": True, "F": False}.get(self.sex)


def parse_dicom_date(value: Any) -> dt.date | None:
    """A DICOM DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` too) as a date, None when empty or invalid."""
    s = str(value or "").strip().replace(".", "").replace("-", "")
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def parse_patient_age(value: Any) -> float | None:
    """A DICOM AS value (``010Y``, ``018M``, ``052W``, ``120D``) in months; None when empty or malformed."""
    m = _AGE_RE.match(str(value or ""))
    if not m:
        return None
    return int(m.group(1)) * _UNIT_MONTHS[m.group(2).upper()]


def age_between(birth: dt.date, on: dt.date) -> float:
    """Age in months on a date (days / mean month length)."""
    return (on - birth).days / DAYS_PER_MONTH


def patient_info(header: Any) -> PatientInfo:
    """Read :class:`PatientInfo` from a pydicom Dataset (the header alone is enough; None gives an empty one)."""
    if header is None:
        return PatientInfo()

    def text(tag: str) -> str:
        return str(header.get(tag, "") or "").strip()

    notes: list[str] = []
    sex = text("PatientSex").upper()
    if sex not in ("M", "F"):
        if sex:
            notes.append(f"DICOM PatientSex is {sex!r}, neither M nor F: sex not taken from the header")
        sex = ""
    birth = parse_dicom_date(header.get("PatientBirthDate"))
    study, study_tag = None, ""
    for tag in STUDY_DATE_TAGS:
        if (study := parse_dicom_date(header.get(tag))) is not None:
            study_tag = tag
            break
    age, source = None, ""
    if birth is not None and study is not None:
        months = age_between(birth, study)
        if months == 0:
            notes.append(f"DICOM PatientBirthDate and {study_tag} are the same day ({birth}), a placeholder, not a "
                         "child's age: age not taken from the dates")
        elif 0 < months <= MAX_AGE_MONTHS:
            age, source = months, f"PatientBirthDate and {study_tag}"
        else:
            notes.append(f"DICOM PatientBirthDate {birth} and {study_tag} {study} give an age of {months:.0f} months, "
                         "which cannot be right: age not taken from the dates")
    if age is None and text("PatientAge"):
        months = parse_patient_age(text("PatientAge"))
        if months == 0:
            notes.append(f"DICOM PatientAge {text('PatientAge')!r} is zero, a placeholder, not a child's age: age not "
                         "taken from it")
        elif months is not None and 0 < months <= MAX_AGE_MONTHS:
            age, source = months, f"PatientAge {text('PatientAge')}"
        else:
            notes.append(f"DICOM PatientAge {text('PatientAge')!r} is not a usable age (nnnD/W/M/Y up to "
                         f"{MAX_AGE_MONTHS / 12:.0f} years): age not taken from it")
    return PatientInfo(patient_id=text("PatientID"), sex=sex, birth_date=birth, study_date=study, age_months=age,
                       age_source=source, accession_number=text("AccessionNumber"),
                       study_instance_uid=text("StudyInstanceUID"), sop_instance_uid=text("SOPInstanceUID"),
                       notes=tuple(notes))


def read_patient_info(data: bytes, name: str = "upload") -> PatientInfo:
    """:class:`PatientInfo` of DICOM bytes (pixel data not decoded); raises
    :class:`boneage.io.imaging.ImageLoadError` when the bytes are not a readable DICOM."""
    return patient_info(dicom_header(data, name))


__all__ = ["PatientInfo", "age_between", "parse_dicom_date", "parse_patient_age", "patient_info",
           "read_patient_info"]
