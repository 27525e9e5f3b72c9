"""Case tables (CSV) in the layouts real users have, normalised to ``id`` (str), ``male`` (bool),
``boneage`` (float months, NaN when unknown).

Accepted: ``male`` as True/False, true/false, 1/0, yes/no; or ``sex`` / ``gender`` as M/F, male/female;
ids as ``1377`` or ``1377.png``; bone age column ``boneage`` / ``bone_age`` / ``Bone Age (months)``.
Rows that cannot be parsed are returned separately with the reason, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .imaging import IMAGE_EXTENSIONS

_TRUE = {"true", "1", "yes", "y", "m", "male", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "female", "0.0"}
_ID_COLS = ("id", "case id", "case_id", "image id", "image_id")
_AGE_COLS = ("boneage", "bone_age", "bone age", "bone age (months)", "boneage_months")
_SEX_COLS = ("sex", "gender")


@dataclass
class CaseTable:
    cases: pd.DataFrame
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (row id or line, reason)


def parse_male(value) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    return None


def normalize_id(value) -> str:
    s = str(value).strip()
    for ext in IMAGE_EXTENSIONS:
        if s.lower().endswith(ext):
            s = s[: -len(ext)]
            break
    if s.endswith(".0") and s[:-2].isdigit():  # 1377.0 from a float column
        s = s[:-2]
    return s


def _find(columns: dict[str, str], names) -> str | None:
    for n in names:
        if n in columns:
            return columns[n]
    return None


def parse_cases(df: pd.DataFrame, require_age: bool = False) -> CaseTable:
    cols = {c.strip().lower(): c for c in df.columns}
    id_col = _find(cols, _ID_COLS)
    if id_col is None:
        raise ValueError(f"case table needs an 'id' column; found {list(df.columns)}")
    male_col = cols.get("male")
    sex_col = _find(cols, _SEX_COLS)
    if male_col is None and sex_col is None:
        raise ValueError(f"case table needs a 'male' (True/False, 1/0) or 'sex' (M/F) column; found {list(df.columns)}")
    age_col = _find(cols, _AGE_COLS)
    if require_age and age_col is None:
        raise ValueError(f"case table needs a 'boneage' column (months); found {list(df.columns)}")

    rows, rejected = [], []
    for i, rec in enumerate(df.to_dict("records")):
        raw_id = rec.get(id_col)
        if raw_id is None or (isinstance(raw_id, float) and np.isnan(raw_id)) or not str(raw_id).strip():
            rejected.append((f"row {i + 2}", "missing id"))
            continue
        cid = normalize_id(raw_id)
        male = parse_male(rec.get(male_col if male_col is not None else sex_col))
        if male is None:
            rejected.append((cid, f"sex not understood: {rec.get(male_col or sex_col)!r} (use True/False, 1/0 or M/F)"))
            continue
        age = np.nan
        if age_col is not None:
            raw_age = rec.get(age_col)
            if raw_age is not None and str(raw_age).strip() not in ("", "nan", "NaN"):
                try:
                    age = float(raw_age)
                except (TypeError, ValueError):
                    rejected.append((cid, f"bone age not a number: {raw_age!r}"))
                    continue
                if not (0 <= age <= 300):
                    rejected.append((cid, f"bone age {age} months out of range 0-300"))
                    continue
        if require_age and np.isnan(age):
            rejected.append((cid, "missing bone age"))
            continue
        rows.append({"id": cid, "male": male, "boneage": age})
    cases = pd.DataFrame(rows, columns=["id", "male", "boneage"])
    dup = cases["id"].duplicated(keep="first")
    for cid in cases.loc[dup, "id"]:
        rejected.append((cid, "duplicate id; first row kept"))
    cases = cases.loc[~dup].reset_index(drop=True)
    cases["male"] = cases["male"].astype(bool)
    cases["boneage"] = cases["boneage"].astype(float)
    return CaseTable(cases, rejected)


def read_cases(path: str | Path, require_age: bool = False) -> CaseTable:
    """Read and normalise a case CSV; see the module docstring for the accepted layouts."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return parse_cases(df, require_age=require_age)
