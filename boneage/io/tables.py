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

from boneage.io.imaging import IMAGE_EXTENSIONS

# Reference bone ages accepted in a case table (months): every door that reads labels, and the site
# calibration's refusals and help, state this one range.
REFERENCE_RANGE = (0.0, 240.0)
_TRUE = {"true", "1", "yes", "y", "m", "male", "t", "1.0"}
_FALSE = {"false", "0", "no", "n", "f", "female", "0.0"}
_ID_COLS = ("id", "case id", "case_id", "image id", "image_id")
_AGE_COLS = ("boneage", "bone_age", "bone age", "bone age (months)", "boneage_months")
_SEX_COLS = ("sex", "gender")
# Optional clinical columns, passed through as text to every row (parsed by boneage.growth.clinical)
CLINICAL_COLUMNS = ("patient_id", "birth_date", "study_date", "chronological_age_months", "height_cm",
                    "father_height_cm", "mother_height_cm")


class CasesFileError(ValueError):
    """The case table as a whole cannot be used (empty, no id or sex column ...); the message says how to fix it."""


@dataclass
class CaseTable:
    cases: pd.DataFrame
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (row id or line, reason)
    # Every input row in input order: id, male (True/False, or None when not understood) and error ("" for
    # rows in ``cases``, the reason for rejected rows). A batch writes one output row for each of these.
    all_rows: pd.DataFrame | None = None


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
        raise CasesFileError(f"case table needs an 'id' column; found {list(df.columns)}")
    male_col = cols.get("male")
    sex_col = _find(cols, _SEX_COLS)
    if male_col is None and sex_col is None:
        raise CasesFileError(f"case table needs a 'male' (True/False, 1/0) or 'sex' (M/F) column; found "
                             f"{list(df.columns)}")
    age_col = _find(cols, _AGE_COLS)
    if require_age and age_col is None:
        raise CasesFileError(f"case table needs a 'boneage' column (months); found {list(df.columns)}")

    rows, rejected, every, seen = [], [], [], set()
    clinical = {c: cols[c] for c in CLINICAL_COLUMNS if c in cols}

    def reject(cid: str, male, reason: str) -> None:
        rejected.append((cid, reason))
        every.append({"id": cid, "male": male, "error": reason, **extra})

    for i, rec in enumerate(df.to_dict("records")):
        extra = {c: rec.get(src) for c, src in clinical.items()}
        raw_id = rec.get(id_col)
        if raw_id is None or (isinstance(raw_id, float) and np.isnan(raw_id)) or not str(raw_id).strip():
            reject(f"row {i + 2}", None, "missing id")
            continue
        cid = normalize_id(raw_id)
        male = parse_male(rec.get(male_col if male_col is not None else sex_col))
        if male is None:
            reject(cid, None, f"sex not understood: {rec.get(male_col or sex_col)!r} (use True/False, 1/0 or M/F)")
            continue
        age = np.nan
        if age_col is not None:
            raw_age = rec.get(age_col)
            if raw_age is not None and str(raw_age).strip() not in ("", "nan", "NaN"):
                try:
                    age = float(raw_age)
                except (TypeError, ValueError):
                    reject(cid, male, f"bone age not a number: {raw_age!r}")
                    continue
                if not (REFERENCE_RANGE[0] <= age <= REFERENCE_RANGE[1]):
                    reject(cid, male, f"bone age {age:g} months is outside {REFERENCE_RANGE[0]:.0f}-"
                                      f"{REFERENCE_RANGE[1]:.0f} months (out of range)")
                    continue
        if require_age and np.isnan(age):
            reject(cid, male, "missing bone age")
            continue
        if cid in seen:
            reject(cid, male, "duplicate id; first row kept")
            continue
        seen.add(cid)
        rows.append({"id": cid, "male": male, "boneage": age})
        every.append({"id": cid, "male": male, "error": "", **extra})
    cases = pd.DataFrame(rows, columns=["id", "male", "boneage"])
    cases["male"] = cases["male"].astype(bool)
    cases["boneage"] = cases["boneage"].astype(float)
    return CaseTable(cases, rejected, pd.DataFrame(every, columns=["id", "male", "error", *clinical]))


def read_cases(path: str | Path, require_age: bool = False) -> CaseTable:
    """Read and normalise a case CSV; see the module docstring for the accepted layouts. Comma, semicolon
    (spreadsheets in many European locales) and tab separated files are read. Raises
    :class:`CasesFileError` naming what is wrong with the file as a whole (missing, empty, no cases, no id or
    sex column); single bad rows are returned in ``rejected`` instead."""
    path = Path(path)
    if not path.is_file():
        raise CasesFileError(f"cases file {path} not found.")
    try:
        try:  # UTF-8 (with or without Excel's byte-order mark), else the Western Windows code page
            df, encoding = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig"), "utf-8-sig"
        except UnicodeDecodeError:
            df, encoding = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="cp1252"), "cp1252"
        if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in (";", "\t")):
            sep = ";" if ";" in str(df.columns[0]) else "\t"
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise CasesFileError(f"cases file {path} is empty: it needs a header line (id,sex) and one line per "
                             "case.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CasesFileError(f"cases file {path} is not a readable CSV table ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0]}).") from None
    table = parse_cases(df, require_age=require_age)
    if table.all_rows is not None and len(table.all_rows) == 0:
        raise CasesFileError(f"cases file {path} has a header ({', '.join(map(str, df.columns))}) but no cases.")
    return table
