"""Bone-age references: the mean bone age and its SD for a sex and chronological age, as data with provenance.

A reference is a CSV (``sex, chronological_age_months, mean_bone_age_months, sd_months``) beside a JSON file
of provenance (``name``, ``citation``, ``source``, ``licence``, ``ages``, ``checked``) in
``boneage/growth/references/``. The shipped one is the Brush Foundation table behind Greulich & Pyle
(:data:`DEFAULT_REFERENCE`); a modern or national reference is added by dropping another pair of files there
(or by passing a folder to :func:`load_reference`): no code changes. Every result that uses a reference carries
its ``name``, so a report always says which one was used.

Between the tabulated ages the mean and the SD are interpolated linearly in age; outside the sex's tabulated
range there is no value (:meth:`BoneAgeReference.at` returns None and :meth:`BoneAgeReference.out_of_range`
says why): the table is never extrapolated.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE_DIR = Path(__file__).parent / "references"
DEFAULT_REFERENCE = "brush_foundation"


class ReferenceError(ValueError):
    """A reference is missing or malformed; the message names the file and what is wrong."""


@dataclass(frozen=True)
class BoneAgeReference:
    """Mean bone age and SD by sex over chronological age (months), with where the numbers come from."""
    key: str
    name: str
    citation: str
    source: str
    licence: str
    checked: tuple[str, ...]
    ages: dict[str, np.ndarray] = field(repr=False)  # "M"/"F" -> chronological ages (ascending)
    means: dict[str, np.ndarray] = field(repr=False)
    sds: dict[str, np.ndarray] = field(repr=False)

    def age_range(self, male: bool) -> tuple[float, float]:
        a = self.ages["M" if male else "F"]
        return float(a[0]), float(a[-1])

    def out_of_range(self, male: bool, chronological_age: float) -> str:
        """Why there is no reference value at this age ('' when there is one)."""
        lo, hi = self.age_range(male)
        if lo <= chronological_age <= hi:
            return ""
        sex = "boys" if male else "girls"
        return (f"chronological age {chronological_age:.1f} months is outside the {self.name} reference for {sex} "
                f"({lo:.0f}-{hi:.0f} months): no SDS")

    def at(self, male: bool, chronological_age: float) -> tuple[float, float] | None:
        """(mean bone age, SD) in months at this chronological age, interpolated linearly; None outside the
        table."""
        if self.out_of_range(male, chronological_age):
            return None
        s = "M" if male else "F"
        return (float(np.interp(chronological_age, self.ages[s], self.means[s])),
                float(np.interp(chronological_age, self.ages[s], self.sds[s])))

    def band(self, male: bool, z: float = 2.0) -> pd.DataFrame:
        """The chart's band: chronological age, mean, mean - z SD, mean + z SD at the tabulated ages."""
        s = "M" if male else "F"
        return pd.DataFrame({"chronological_age_months": self.ages[s], "mean": self.means[s],
                             "lower": self.means[s] - z * self.sds[s], "upper": self.means[s] + z * self.sds[s]})


def _reference_files(folder: Path) -> dict[str, Path]:
    """key -> provenance file of every bone-age reference in ``folder``."""
    out = {}
    for p in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("kind") == "bone_age_sds":
            out[meta.get("key", p.stem)] = p
    return out


def available_references(folder: Path | None = None) -> list[str]:
    """The keys of the references in ``folder`` (default: the shipped ones)."""
    return list(_reference_files(Path(folder or REFERENCE_DIR)))


@lru_cache(maxsize=8)
def _load(path: Path) -> BoneAgeReference:
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceError(f"reference provenance {meta_path} is unreadable: {exc}") from None
    csv_path = meta_path.parent / meta.get("file", path.with_suffix(".csv").name)
    try:
        df = pd.read_csv(csv_path)
    except (OSError, pd.errors.ParserError) as exc:
        raise ReferenceError(f"reference table {csv_path} is unreadable: {exc}") from None
    need = {"sex", "chronological_age_months", "mean_bone_age_months", "sd_months"}
    if not need <= set(df.columns):
        raise ReferenceError(f"reference table {csv_path} needs the columns {sorted(need)}; found {list(df.columns)}")
    ages, means, sds = {}, {}, {}
    for s in ("M", "F"):
        part = df[df["sex"].str.upper() == s].sort_values("chronological_age_months")
        if len(part) < 2:
            raise ReferenceError(f"reference table {csv_path} has fewer than two rows for sex {s}")
        if (part["sd_months"] <= 0).any():
            raise ReferenceError(f"reference table {csv_path} has an SD that is not positive for sex {s}")
        ages[s] = part["chronological_age_months"].to_numpy(float)
        means[s] = part["mean_bone_age_months"].to_numpy(float)
        sds[s] = part["sd_months"].to_numpy(float)
    for k in ("name", "citation", "source", "licence"):
        if not meta.get(k):
            raise ReferenceError(f"reference provenance {meta_path} lacks '{k}': a reference must say what it is")
    return BoneAgeReference(key=meta.get("key", path.stem), name=meta["name"], citation=meta["citation"],
                            source=meta["source"], licence=meta["licence"], checked=tuple(meta.get("checked", ())),
                            ages=ages, means=means, sds=sds)


def load_reference(key: str | None = None, folder: Path | None = None) -> BoneAgeReference:
    """The reference ``key`` (a file stem in ``folder``, default the shipped folder; None: the default
    reference). Raises :class:`ReferenceError` naming the available ones when it is unknown."""
    folder = Path(folder or REFERENCE_DIR)
    key = key or DEFAULT_REFERENCE
    files = _reference_files(folder)
    if key not in files:
        raise ReferenceError(f"unknown bone-age reference {key!r}; available: {', '.join(files) or 'none'} "
                             f"(in {folder})")
    return _load(files[key])

__all__ = ["BoneAgeReference", "DEFAULT_REFERENCE", "REFERENCE_DIR", "ReferenceError", "available_references",
           "load_reference"]
