"""Predicted adult height by Bayley-Pinneau from bone age, and the mid-parental target height.

Bayley-Pinneau (1952, tables in ``references/bayley_pinneau.csv`` with their provenance and checks in
``references/bayley_pinneau.json``): a child of skeletal age BA has reached a known percentage of adult
height, so ``adult height = height / percentage``. The table is chosen as the method prescribes, by bone age
against chronological age: *accelerated* when BA is one year or more ahead of CA, *retarded* when it is one
year or more behind, *average* otherwise (the tables' own titles say "one year or more"). The percentage is
interpolated linearly in bone age within the chosen table's range; outside it there is no prediction, and the
reason says so.

The interval (90 %) carries two errors, combined in quadrature on each side:

- the bone-age uncertainty: the model's 90 % interval for the bone age, read through the same table
  (a higher bone age means a larger part of adult height reached, so a shorter prediction); ends beyond the
  table are held at its edge, and the note says so;
- the method's own error: a 95 % half-width of 8 cm (Joss et al. 1992; see the provenance file), i.e.
  1.645 * 8 / 1.96 = 6.7 cm at 90 %.

Mid-parental target height (Tanner): ``(father + mother + 13) / 2`` for boys, ``(father + mother - 13) / 2``
for girls, with a range of +/- 8.5 cm.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from boneage.growth.reference import REFERENCE_DIR

AVERAGE, ACCELERATED, RETARDED = "average", "accelerated", "retarded"
TABLE_SHIFT_MONTHS = 12.0  # one year or more ahead / behind chooses the accelerated / retarded table
METHOD_HALF_WIDTH_95_CM = 8.0
Z90, Z95 = 1.6449, 1.96
MIDPARENTAL_SEX_CM = 13.0
MIDPARENTAL_RANGE_CM = 8.5
CHILD_HEIGHT_RANGE_CM = (40.0, 220.0)
PARENT_HEIGHT_RANGE_CM = (120.0, 230.0)


@dataclass(frozen=True)
class AdultHeightPrediction:
    """Bayley-Pinneau prediction (cm). ``adult_height_cm`` None with ``reason`` when the method does not apply."""
    method: str
    table: str | None = None
    percent_of_adult_height: float | None = None
    adult_height_cm: float | None = None
    lower_90_cm: float | None = None
    upper_90_cm: float | None = None
    reason: str = ""
    note: str = ""

    def text(self) -> str:
        if self.adult_height_cm is None:
            return f"No predicted adult height: {self.reason}."
        return (f"Predicted adult height {self.adult_height_cm:.1f} cm (90% interval {self.lower_90_cm:.1f}-"
                f"{self.upper_90_cm:.1f} cm; {self.method}, {self.table} table, "
                f"{self.percent_of_adult_height:.1f}% of adult height reached)" + (f"; {self.note}" if self.note else "") + ".")


@dataclass(frozen=True)
class TargetHeight:
    """Mid-parental target height (cm) and its range; ``target_cm`` None with ``reason`` when not computable."""
    target_cm: float | None = None
    lower_cm: float | None = None
    upper_cm: float | None = None
    reason: str = ""


@lru_cache(maxsize=1)
def bayley_pinneau_tables() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(sex "M"/"F", table) -> (bone ages in months, percent of adult height), ascending in bone age."""
    df = pd.read_csv(REFERENCE_DIR / "bayley_pinneau.csv")
    return {(str(s), str(t)): (g["bone_age_months"].to_numpy(float), g["percent_of_adult_height"].to_numpy(float))
            for (s, t), g in df.sort_values("bone_age_months").groupby(["sex", "table"])}


@lru_cache(maxsize=1)
def bayley_pinneau_provenance() -> dict:
    return json.loads((REFERENCE_DIR / "bayley_pinneau.json").read_text())


def choose_table(bone_age: float, chronological_age: float) -> str:
    """average / accelerated / retarded by the method's rule (module docstring)."""
    d = bone_age - chronological_age
    return ACCELERATED if d >= TABLE_SHIFT_MONTHS else RETARDED if d <= -TABLE_SHIFT_MONTHS else AVERAGE


def check_height(value: float | None, what: str, bounds: tuple[float, float]) -> str:
    """Why a height (cm) cannot be used ('' when it can, or when it is not given)."""
    if value is None:
        return ""
    if not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
        return (f"{what} {value:g} cm is not plausible (expected {bounds[0]:.0f}-{bounds[1]:.0f} cm; give it in "
                "centimetres)")
    return ""


def _percent(ages: np.ndarray, pct: np.ndarray, bone_age: float) -> float:
    return float(np.interp(bone_age, ages, pct))


def predict_adult_height(height_cm: float, bone_age: float, chronological_age: float, male: bool,
                         interval: tuple[float, float] | None = None) -> AdultHeightPrediction:
    """Bayley-Pinneau adult height (rule and interval in the module docstring). ``interval``: the model's
    90 % interval for the bone age (months); without it only the method's error widens the interval."""
    method = "Bayley-Pinneau (1952)"
    if problem := check_height(height_cm, "height", CHILD_HEIGHT_RANGE_CM):
        return AdultHeightPrediction(method, reason=problem)
    table = choose_table(bone_age, chronological_age)
    key = ("M" if male else "F", table)
    sex = "boys" if male else "girls"
    if key not in bayley_pinneau_tables():
        return AdultHeightPrediction(method, table, reason=f"no Bayley-Pinneau {table} table for {sex}")
    ages, pct = bayley_pinneau_tables()[key]
    if not ages[0] <= bone_age <= ages[-1]:
        return AdultHeightPrediction(
            method, table, reason=(f"bone age {bone_age:.1f} months is outside the Bayley-Pinneau {table} table for "
                                   f"{sex} ({ages[0]:.0f}-{ages[-1]:.0f} months)"))
    p = _percent(ages, pct, bone_age)
    ah = height_cm / (p / 100)
    method_half = Z90 * METHOD_HALF_WIDTH_95_CM / Z95
    down = up = 0.0
    note = ""
    if interval is not None:
        lo_ba, hi_ba = sorted((float(interval[0]), float(interval[1])))
        if lo_ba < ages[0] or hi_ba > ages[-1]:
            note = "the bone-age interval reaches beyond the table and is held at its edge"
        ah_short = height_cm / (_percent(ages, pct, hi_ba) / 100)  # older bones: more of adult height reached
        ah_tall = height_cm / (_percent(ages, pct, lo_ba) / 100)
        down, up = max(ah - ah_short, 0.0), max(ah_tall - ah, 0.0)
    else:
        note = "without the model's interval only the method's error is included"
    return AdultHeightPrediction(method, table, p, float(ah), float(ah - math.hypot(down, method_half)),
                                 float(ah + math.hypot(up, method_half)), note=note)


def midparental_height(father_cm: float | None, mother_cm: float | None, male: bool) -> TargetHeight:
    """Tanner's mid-parental target height and range (module docstring); empty with a reason when a parent's
    height is missing or not plausible."""
    if father_cm is None or mother_cm is None:
        return TargetHeight(reason="both parents' heights are needed for the target height")
    for v, who in ((father_cm, "father's height"), (mother_cm, "mother's height")):
        if problem := check_height(v, who, PARENT_HEIGHT_RANGE_CM):
            return TargetHeight(reason=problem)
    t = (father_cm + mother_cm + (MIDPARENTAL_SEX_CM if male else -MIDPARENTAL_SEX_CM)) / 2
    return TargetHeight(t, t - MIDPARENTAL_RANGE_CM, t + MIDPARENTAL_RANGE_CM)


__all__ = ["ACCELERATED", "AVERAGE", "AdultHeightPrediction", "RETARDED", "TargetHeight", "bayley_pinneau_provenance",
           "bayley_pinneau_tables", "check_height", "choose_table", "midparental_height", "predict_adult_height"]
