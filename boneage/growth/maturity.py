"""Comparing a predicted bone age with the child's chronological age: delayed, normal or advanced.

The rule (decision support, not a diagnosis): bone age is called *delayed* when the chronological age
lies above the upper end of the model's 95% prediction interval for the bone age, *advanced* when it lies
below the lower end, and *within the normal range* otherwise. The 95% interval is roughly the prediction
+/- 2 standard deviations of the model's error for this image, so the rule reads "bone age differs from
chronological age by more than about 2 SD of what the model can resolve". Normal biological variation
(about 1 year at most ages in the Greulich-Pyle atlas) is added on top as ``min_gap_months``: a
difference smaller than that is never called abnormal, however narrow the interval.

When no conformal interval is available the interval is the Laplace 95% range of the model's own scale
(prediction +/- ln(20) * scale, ~ 3 scales).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DELAYED, NORMAL, ADVANCED = "delayed", "normal", "advanced"
LAPLACE_95 = math.log(20.0)  # half-width of the central 95% of a Laplace distribution, in scales


@dataclass
class MaturityAssessment:
    status: str  # delayed / normal / advanced
    difference_months: float  # bone age - chronological age (negative = behind)
    lower: float  # the interval used
    upper: float
    rule: str

    @property
    def label(self) -> str:
        return {DELAYED: "Delayed", NORMAL: "Within normal range", ADVANCED: "Advanced"}[self.status]


def maturity_status(bone_age: float, chronological_age: float, interval: tuple[float, float] | None = None,
                    scale: float | None = None, min_gap_months: float = 12.0) -> MaturityAssessment:
    """Delayed / normal / advanced by the rule in the module docstring (all ages in months)."""
    if interval is not None:
        lo, hi = float(interval[0]), float(interval[1])
        rule = "chronological age outside the 95% prediction interval of bone age"
    elif scale is not None:
        lo, hi = bone_age - LAPLACE_95 * scale, bone_age + LAPLACE_95 * scale
        rule = "chronological age outside bone age +/- 3 model scales (Laplace 95%)"
    else:
        raise ValueError("maturity_status needs an interval or a scale")
    lo, hi = min(lo, bone_age - min_gap_months), max(hi, bone_age + min_gap_months)
    diff = float(bone_age - chronological_age)
    status = DELAYED if chronological_age > hi else ADVANCED if chronological_age < lo else NORMAL
    return MaturityAssessment(status, diff, lo, hi, rule + f" (and a difference of more than {min_gap_months:g} months)")
