"""CSV cells that a spreadsheet would run as formulas, neutralised: one helper for every CSV the product
writes for people (the prediction CLI's output, the dashboard's downloads).

Why: ids and upload names come from users; a cell such as ``=HYPERLINK("http://...")`` or ``@SUM(1+1)``
opened in Excel or LibreOffice is executed as a formula (CSV injection, OWASP). Text cells starting with
``= + - @``, a tab or a carriage return get a leading apostrophe, which spreadsheets show as text and hide.
Numbers (including negative ones) are left as numbers: only text cells are touched.
"""
from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value):
    """``value`` with a leading apostrophe when it is text that a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells (and column names) cannot start a formula."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def to_csv_safe(df: pd.DataFrame, path_or_buf=None, **kw):
    """``df.to_csv`` after :func:`neutralise_frame` (same arguments, ``index=False`` by default)."""
    kw.setdefault("index", False)
    return neutralise_frame(df).to_csv(path_or_buf, **kw)
