"""Bone age SDS against a named reference, and the clinical call: delayed / normal / advanced / indeterminate.

``SDS = (bone age - reference mean at the chronological age) / reference SD at that age``, the mean and SD
interpolated linearly in age (:mod:`boneage.growth.reference`; the Brush Foundation table behind Greulich &
Pyle by default).

The rule (decision support, not a diagnosis), with thresholds at -2 and +2 SDS:

- *delayed*: SDS below -2; *advanced*: SDS above +2; *normal*: between them;
- *indeterminate*: the model's own prediction interval for this film (the conformal 90 % interval the
  predictor gives, :data:`INTERVAL_LEVEL`), converted to SDS the same way, contains -2 or +2: the reading
  cannot tell on which side of the threshold the child is. A call of delayed / advanced is made only when
  the whole interval lies beyond the threshold, and normal only when it lies between them.
- Without an interval the call is made on the SDS alone and ``rule`` says so.

Outside the reference's age range (boys 3-204 months, girls 3-192 months for Brush) there is no SDS:
``sds`` is None and ``reason`` says why; the bone-age reading itself is untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

from boneage.growth.reference import BoneAgeReference, load_reference

DELAYED, NORMAL, ADVANCED, INDETERMINATE = "delayed", "normal", "advanced", "indeterminate"
THRESHOLD_SDS = 2.0
INTERVAL_LEVEL = "90"  # the conformal level whose interval decides "indeterminate"


@dataclass(frozen=True)
class BoneAgeSDS:
    """Bone age against the reference at the child's age. ``sds``/``status`` None with ``reason`` when the
    age is outside the reference; ``sds_lower``/``sds_upper`` the model's interval in SDS (None without one)."""
    reference: str  # the reference's name, shown with every number
    chronological_age_months: float
    bone_age_months: float
    reference_mean_months: float | None = None
    reference_sd_months: float | None = None
    sds: float | None = None
    sds_lower: float | None = None
    sds_upper: float | None = None
    status: str | None = None
    rule: str = ""
    reason: str = ""

    @property
    def label(self) -> str:
        return {DELAYED: "Delayed", NORMAL: "Normal", ADVANCED: "Advanced", INDETERMINATE: "Indeterminate",
                None: "No SDS"}[self.status]

    def text(self) -> str:
        """One sentence for people: 'Bone age SDS -2.4 (reference mean 125.7, SD 9.8 months at 120 months,
        Brush Foundation (Greulich & Pyle)): delayed.' or the reason there is none."""
        if self.sds is None:
            return f"No bone age SDS: {self.reason}."
        iv = ("" if self.sds_lower is None else
              f", {INTERVAL_LEVEL}% interval {self.sds_lower:+.1f} to {self.sds_upper:+.1f}")
        return (f"Bone age SDS {self.sds:+.2f}{iv} (reference mean {self.reference_mean_months:.1f}, SD "
                f"{self.reference_sd_months:.1f} months at {self.chronological_age_months:.0f} months; "
                f"{self.reference}): {self.status}.")


def sds_status(sds: float, lower: float | None = None, upper: float | None = None,
               threshold: float = THRESHOLD_SDS) -> tuple[str, str]:
    """(status, rule) by the rule in the module docstring, from the SDS and the interval's ends in SDS."""
    if lower is None or upper is None:
        status = DELAYED if sds < -threshold else ADVANCED if sds > threshold else NORMAL
        return status, f"SDS against -{threshold:g} / +{threshold:g} (no model interval: the SDS alone)"
    lo, hi = min(lower, upper), max(lower, upper)
    rule = (f"SDS against -{threshold:g} / +{threshold:g}; indeterminate when the model's {INTERVAL_LEVEL}% "
            "interval crosses a threshold")
    if hi < -threshold:
        return DELAYED, rule
    if lo > threshold:
        return ADVANCED, rule
    if lo >= -threshold and hi <= threshold:
        return NORMAL, rule
    return INDETERMINATE, rule


def bone_age_sds(bone_age: float, chronological_age: float, male: bool,
                 interval: tuple[float, float] | None = None,
                 reference: BoneAgeReference | str | None = None) -> BoneAgeSDS:
    """The SDS of ``bone_age`` at ``chronological_age`` (months) against ``reference`` (default the shipped
    one), with the status; ``interval``: the model's prediction interval for the bone age (months)."""
    ref = reference if isinstance(reference, BoneAgeReference) else load_reference(reference)
    base = dict(reference=ref.name, chronological_age_months=float(chronological_age), bone_age_months=float(bone_age))
    at = ref.at(male, chronological_age)
    if at is None:
        return BoneAgeSDS(**base, reason=ref.out_of_range(male, chronological_age))
    mean, sd = at
    sds = (bone_age - mean) / sd
    lo = hi = None
    if interval is not None:
        lo, hi = (interval[0] - mean) / sd, (interval[1] - mean) / sd
    status, rule = sds_status(sds, lo, hi)
    return BoneAgeSDS(**base, reference_mean_months=mean, reference_sd_months=sd, sds=float(sds),
                      sds_lower=None if lo is None else float(lo), sds_upper=None if hi is None else float(hi),
                      status=status, rule=rule)


__all__ = ["ADVANCED", "BoneAgeSDS", "DELAYED", "INDETERMINATE", "INTERVAL_LEVEL", "NORMAL", "THRESHOLD_SDS",
           "bone_age_sds", "sds_status"]
