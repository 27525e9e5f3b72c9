"""Follow-up of one child: bone age against chronological age across films, and how fast bone age advances.

Films of one patient are ordered by study date (by chronological age where a date is missing). Between
consecutive films the velocity is ``dBA / dCA`` (bone-age months per month of life; 1.0 = maturing at the
usual pace); over the whole series it is the least-squares slope of bone age on chronological age.

The 90 % interval comes from the model's measured test-retest precision ``sd`` (months; the within-hand SD of
two readings of the same hand, ``artifacts/precision.json``, :mod:`boneage.evidence.precision`): each
reading carries an independent error of SD ``sd``, so a step's velocity has SD ``sqrt(2) * sd / dCA`` and the
series' slope ``sd / sqrt(sum((CA - mean CA)^2))``. The interval narrows as the films move apart. It says how
much the *reading* can be trusted to have moved; it leaves out the model's error common to all films of one
child (that part cancels in a difference) and the biology.

Checks, each a note on the series (the velocities are still given where they can be computed):

- *too close*: a step whose 90 % half-width exceeds :data:`TOO_CLOSE_HALF_WIDTH` (1.0: the precision cannot
  tell a bone age that stood still from one that advanced twice as fast as the child);
- *duplicate dates*: two films on the same study date (no velocity between them);
- *reads younger*: a later film whose bone age is lower than the earlier one's by more than the 90 %
  test-retest range of a difference (``1.645 * sqrt(2) * sd``): check that both films are this child's;
- *sex* or *laterality* changing within the patient: check the films belong to one child and one hand.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

Z90 = 1.6449
TOO_CLOSE_HALF_WIDTH = 1.0


@dataclass(frozen=True)
class Film:
    """One reading in a series. Ages in months; ``laterality`` "left"/"right" or "" when unknown."""
    id: str
    patient_id: str
    bone_age_months: float
    chronological_age_months: float | None
    male: bool | None = None
    study_date: dt.date | None = None
    laterality: str = ""


@dataclass(frozen=True)
class Step:
    """Between two consecutive films: the change and the velocity with its 90 % interval (None when the
    films share a date or an age is missing)."""
    from_id: str
    to_id: str
    months_between: float | None
    bone_age_change: float
    velocity: float | None = None
    lower_90: float | None = None
    upper_90: float | None = None
    note: str = ""


@dataclass
class FollowUp:
    """A patient's series: films in order, steps between them, the whole-series velocity and the notes."""
    patient_id: str
    films: list[Film]
    steps: list[Step] = field(default_factory=list)
    velocity: float | None = None
    lower_90: float | None = None
    upper_90: float | None = None
    retest_sd: float = math.nan
    notes: list[str] = field(default_factory=list)

    @property
    def first_study_date(self) -> dt.date | None:
        return self.films[0].study_date if self.films else None

    @property
    def last_study_date(self) -> dt.date | None:
        return self.films[-1].study_date if self.films else None

    def as_row(self) -> dict:
        """The follow-up command's row: patient_id, films, first/last study date (ISO), velocity with its
        90 % interval, note."""
        def iso(d):
            return None if d is None else d.isoformat()

        def r(v):
            return None if v is None else round(v, 3)

        return {"patient_id": self.patient_id, "films": len(self.films), "first_study_date": iso(self.first_study_date),
                "last_study_date": iso(self.last_study_date), "ba_velocity": r(self.velocity),
                "ba_velocity_lower_90": r(self.lower_90), "ba_velocity_upper_90": r(self.upper_90),
                "note": " | ".join(self.notes) or None}


FOLLOWUP_COLUMNS = ["patient_id", "films", "first_study_date", "last_study_date", "ba_velocity",
                    "ba_velocity_lower_90", "ba_velocity_upper_90", "note"]


def step_interval(months_between: float, sd: float) -> float:
    """The 90 % half-width of a velocity between two readings ``months_between`` apart."""
    return Z90 * math.sqrt(2) * sd / months_between


def _order_key(f: Film) -> tuple:
    return (f.study_date or dt.date.max, f.chronological_age_months if f.chronological_age_months is not None else math.inf)


def follow_up(films: Sequence[Film], retest_sd: float) -> FollowUp:
    """The series of one patient (all ``films`` share ``patient_id``); see the module docstring."""
    if not films:
        raise ValueError("follow_up needs at least one film")
    if not (math.isfinite(retest_sd) and retest_sd > 0):
        raise ValueError(f"the test-retest SD must be a positive number of months, not {retest_sd!r}")
    ordered = sorted(films, key=_order_key)
    out = FollowUp(patient_id=ordered[0].patient_id, films=ordered, retest_sd=float(retest_sd))
    sexes = {f.male for f in ordered if f.male is not None}
    if len(sexes) > 1:
        out.notes.append("sex changes within this patient (" + ", ".join(
            f"{f.id}: {'M' if f.male else 'F'}" for f in ordered if f.male is not None)
            + "): check that the films belong to one child")
    sides = {f.laterality for f in ordered if f.laterality}
    if len(sides) > 1:
        out.notes.append("laterality changes within this patient (" + ", ".join(
            f"{f.id}: {f.laterality}" for f in ordered if f.laterality) + "): compare films of the same hand")
    missing = [f.id for f in ordered if f.chronological_age_months is None]
    if missing:
        out.notes.append(f"no chronological age for {', '.join(missing)}: left out of the velocities")
    drop = Z90 * math.sqrt(2) * retest_sd
    timed = [f for f in ordered if f.chronological_age_months is not None]
    for a, b in zip(timed, timed[1:]):
        dba = b.bone_age_months - a.bone_age_months
        if a.study_date is not None and a.study_date == b.study_date:
            out.steps.append(Step(a.id, b.id, 0.0, dba, note="same study date"))
            out.notes.append(f"{a.id} and {b.id} have the same study date {a.study_date.isoformat()}: no velocity "
                             "between them")
            continue
        dca = b.chronological_age_months - a.chronological_age_months
        if dca <= 0:
            out.steps.append(Step(a.id, b.id, dca, dba, note="no time between the films"))
            out.notes.append(f"{a.id} and {b.id} are not apart in chronological age: no velocity between them")
            continue
        v, half = dba / dca, step_interval(dca, retest_sd)
        note = ""
        if half > TOO_CLOSE_HALF_WIDTH:
            note = (f"{a.id} -> {b.id} only {dca:.1f} months apart: too close for the precision (test-retest SD "
                    f"{retest_sd:.1f} months) to tell anything (velocity +/- {half:.1f})")
            out.notes.append(note)
        if dba < -drop:
            out.notes.append(f"{b.id} reads {-dba:.1f} months younger than the earlier {a.id}, more than the "
                             f"precision explains ({drop:.1f}): check that both films are this child's")
        out.steps.append(Step(a.id, b.id, dca, dba, v, v - half, v + half, note))
    dated = [f for f in timed]
    x = np.array([f.chronological_age_months for f in dated], float)
    y = np.array([f.bone_age_months for f in dated], float)
    sxx = float(np.sum((x - x.mean()) ** 2)) if len(x) else 0.0
    if len(x) >= 2 and sxx > 0:
        slope = float(np.sum((x - x.mean()) * (y - y.mean())) / sxx)
        half = Z90 * retest_sd / math.sqrt(sxx)
        out.velocity, out.lower_90, out.upper_90 = slope, slope - half, slope + half
    elif len(ordered) >= 2:
        out.notes.append("the films are not apart in time: no velocity over the series")
    return out


def group_films(films: Sequence[Film]) -> dict[str, list[Film]]:
    """Films by ``patient_id`` (in first-seen order); films without a patient id are left out."""
    groups: dict[str, list[Film]] = {}
    for f in films:
        if f.patient_id:
            groups.setdefault(f.patient_id, []).append(f)
    return groups


__all__ = ["FOLLOWUP_COLUMNS", "Film", "FollowUp", "Step", "TOO_CLOSE_HALF_WIDTH", "follow_up", "group_films",
           "step_interval"]
