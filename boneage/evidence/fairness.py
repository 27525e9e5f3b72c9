"""Subgroup audit of the bone-age model: error, bias, stage accuracy and interval coverage by sex and age band.

Works on the *predictions table* (one row per case; schema: :data:`boneage.evaluation.predictions_table.COLUMNS`).
Rows whose reference bone age is unknown (NaN) are dropped before anything is computed: a metric is never
filled in from a guessed reference.

Each metric is defined once, in :func:`row_values`: a per-row value whose mean over a group is the metric
(RMSE takes a square root after). Point estimates, the bootstrap CIs (:func:`boneage.evaluation.metrics.bootstrap`, cases
resampled *within* each group, so every replicate keeps the group's size) and the male-female gap all read
those values. The gap also gets a permutation test of the sex labels: the bootstrap says how precisely the gap
is known, the permutation test how surprising it would be if sex made no difference at all.
"""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from boneage.config import StageConfig
from boneage.evaluation.metrics import bootstrap, nanmean, percentile_ci
from boneage.evaluation.predictions_table import sex_labels, with_reference
from boneage.training.splits import AGE_BAND, AGE_BAND_LABELS

STAGE_PROB_COLUMNS = tuple(f"p_{n.lower()}" for n in StageConfig().names)
WITHIN_MONTHS = 12.0
METRICS = ("mae", "bias", "rmse", "within_12", "stage_accuracy", "coverage_90")
SEX_ORDER = ("F", "M")


# -- per-row quantities ------------------------------------------------------------------------------

def row_values(df: pd.DataFrame) -> pd.DataFrame:
    """One column per metric whose *mean* over a group is that metric (before the RMSE square root).

    ``stage_accuracy`` is NaN where the true stage is unknown (-1) and ``coverage_90`` where a bound is
    missing, so those rows drop out of that metric only.
    """
    ref = df["boneage"].to_numpy(float)
    err = df["boneage_pred"].to_numpy(float) - ref
    out = pd.DataFrame({"mae": np.abs(err), "bias": err, "rmse": err ** 2,
                        "within_12": (np.abs(err) <= WITHIN_MONTHS).astype(float)}, index=df.index)
    if set(STAGE_PROB_COLUMNS) <= set(df.columns) and "stage_true" in df.columns:
        true = df["stage_true"].to_numpy(float)
        pred = df[list(STAGE_PROB_COLUMNS)].to_numpy(float).argmax(1)
        out["stage_accuracy"] = np.where(true >= 0, (pred == true).astype(float), np.nan)
    else:
        out["stage_accuracy"] = np.nan
    if {"lower_90", "upper_90"} <= set(df.columns):
        lo, hi = df["lower_90"].to_numpy(float), df["upper_90"].to_numpy(float)
        covered = ((ref >= lo) & (ref <= hi)).astype(float)
        out["coverage_90"] = np.where(np.isnan(lo) | np.isnan(hi), np.nan, covered)
    else:
        out["coverage_90"] = np.nan
    return out


def _finish(metric: str, mean):
    """Turn the mean of :func:`row_values` into the metric (only RMSE needs a transform)."""
    return np.sqrt(mean) if metric == "rmse" else mean


# -- public API ------------------------------------------------------------------------------------------

def group_table(df: pd.DataFrame, by: Sequence[str] = ("sex",), n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Metrics per group with bootstrap 95% CIs; ``by=[]`` gives one row for all cases.

    Columns: the ``by`` columns, ``group`` (a readable label such as ``"M / 8-11y"``), ``n`` (cases with a
    reference), ``n_stage`` (of which with a known stage) and, for each of :data:`METRICS`, ``<m>``,
    ``<m>_lo``, ``<m>_hi``. Bias is predicted minus reference (positive = model says older).
    """
    by = list(by)
    d = with_reference(df)
    rows = row_values(d)
    if len(d) == 0:
        return pd.DataFrame(columns=[*by, "group", "n", "n_stage"]
                            + [c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")])
    rng = np.random.default_rng(seed)
    groups = d.groupby(by, sort=False).indices if by else {("all",): np.arange(len(d))}
    columns = {m: rows[m].to_numpy(float) for m in METRICS}
    records = []
    for key, idx in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        vals = rows.iloc[idx][list(METRICS)].to_numpy(float)
        boot = bootstrap(vals, nanmean, n_boot, rng)
        boot[:, METRICS.index("rmse")] = np.sqrt(boot[:, METRICS.index("rmse")])
        lo, hi = percentile_ci(boot)
        rec = {c: v for c, v in zip(by, key)}
        rec["group"] = " / ".join(str(k) for k in key)
        rec["n"] = int(len(idx))
        rec["n_stage"] = int(np.sum(~np.isnan(vals[:, METRICS.index("stage_accuracy")])))
        for j, m in enumerate(METRICS):
            rec[m] = float(_finish(m, nanmean(columns[m][idx])))
            rec[f"{m}_lo"], rec[f"{m}_hi"] = float(lo[j]), float(hi[j])
        records.append(rec)
    out = pd.DataFrame.from_records(records)
    if by:
        if "age_band" in by:
            out["age_band"] = out["age_band"].astype(AGE_BAND)
        out = out.sort_values(by, kind="stable").reset_index(drop=True)
    return out


def _is_male(df: pd.DataFrame) -> np.ndarray:
    return df["sex"].eq("M").to_numpy() if "sex" in df.columns else df["male"].astype(bool).to_numpy()


def sex_gap(df: pd.DataFrame, metric: str = "mae", n_boot: int = 2000, n_perm: int = 2000, seed: int = 0,
            min_n: int = 5, max_elems: int = 4_000_000) -> dict:
    """Male minus female difference in ``metric`` with a bootstrap 95% CI and a permutation p-value.

    The bootstrap resamples boys and girls separately (their counts stay fixed); the permutation test
    shuffles the sex labels among the cases that count for the metric and reports the two-sided
    ``(1 + #{|gap*| >= |gap|}) / (1 + n_perm)``. With fewer than ``min_n`` cases of either sex the point
    estimates are still given but CI and p-value are NaN (too few to say anything).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    d = with_reference(df)
    v = row_values(d)[metric].to_numpy(float)
    male = _is_male(d)
    ok = ~np.isnan(v)
    v, male = v[ok], male[ok]
    vm, vf = v[male], v[~male]
    m_val = float(_finish(metric, vm.mean())) if len(vm) else np.nan
    f_val = float(_finish(metric, vf.mean())) if len(vf) else np.nan
    out = {"metric": metric, "male": m_val, "female": f_val, "gap": m_val - f_val, "ci_lo": np.nan,
           "ci_hi": np.nan, "p_value": np.nan, "n_male": int(len(vm)), "n_female": int(len(vf)),
           "n_boot": int(n_boot), "n_perm": int(n_perm)}
    if len(vm) < min_n or len(vf) < min_n:
        return out
    rng = np.random.default_rng(seed)
    boot = _finish(metric, bootstrap(vm, np.mean, n_boot, rng)) - _finish(metric, bootstrap(vf, np.mean, n_boot, rng))
    lo, hi = percentile_ci(boot)
    out["ci_lo"], out["ci_hi"] = float(lo), float(hi)

    n, n_m = len(v), len(vm)
    total = v.sum()
    obs = abs(out["gap"])
    extreme = 0
    step = max(1, max_elems // n)
    base = np.zeros(n, bool)
    base[:n_m] = True
    for s in range(0, n_perm, step):
        b = min(step, n_perm - s)
        perm = rng.permuted(np.broadcast_to(base, (b, n)), axis=1)
        sum_m = perm.astype(float) @ v
        gaps = _finish(metric, sum_m / n_m) - _finish(metric, (total - sum_m) / (n - n_m))
        extreme += int(np.sum(np.abs(gaps) >= obs - 1e-9 * max(1.0, obs)))
    out["p_value"] = (1 + extreme) / (1 + n_perm)
    return out


def sex_gaps(df: pd.DataFrame, metrics: Sequence[str] = METRICS, n_boot: int = 2000, n_perm: int = 2000,
             seed: int = 0, min_n: int = 5) -> pd.DataFrame:
    """:func:`sex_gap` for every metric, over all cases (``scope='all'``) and within each age band.

    ``p_adj`` is the Benjamini-Hochberg adjustment over the whole table: with ~50 tests a few raw
    p-values below 0.05 are expected by chance alone.
    """
    d = with_reference(df)
    scopes: list[tuple[str, pd.DataFrame]] = [("all", d)]
    if "age_band" in d.columns:
        present = set(d["age_band"].dropna())
        scopes += [(b, d[d["age_band"] == b]) for b in AGE_BAND_LABELS if b in present]
    records = [{"scope": name, **sex_gap(g, m, n_boot=n_boot, n_perm=n_perm, seed=seed, min_n=min_n)}
               for name, g in scopes for m in metrics]
    out = pd.DataFrame.from_records(records)
    out["p_adj"] = np.nan
    if len(out):
        has_p = out["p_value"].notna().to_numpy()
        if has_p.any():
            out.loc[has_p, "p_adj"] = false_discovery_control(out.loc[has_p, "p_value"].to_numpy(float))
    cols = ["scope", "metric", "male", "female", "gap", "ci_lo", "ci_hi", "p_value", "p_adj", "n_male",
            "n_female", "n_boot", "n_perm"]
    return out.reindex(columns=cols)


def sample_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cases per split and sex, and how many have a reference age (the rest are left out of every metric)."""
    d = df.copy()
    if "sex" not in d.columns:
        d["sex"] = sex_labels(d["male"])
    d["has_reference"] = d["boneage"].notna()
    out = (d.groupby(["split", "sex"], sort=True)
           .agg(n_rows=("id", "size"), n_with_reference=("has_reference", "sum")).reset_index())
    out["n_with_reference"] = out["n_with_reference"].astype(int)
    out["n_without_reference"] = out["n_rows"] - out["n_with_reference"]
    return out


def audit(df: pd.DataFrame, split_names: str | Sequence[str], n_boot: int = 1000, n_perm: int = 2000,
          seed: int = 0) -> dict[str, pd.DataFrame]:
    """All audit tables for the cases in ``split_names``, each ready for ``to_parquet`` / ``to_csv``.

    Keys: ``sample`` (counts per split and sex), ``overall``, ``by_sex``, ``by_age_band``,
    ``by_sex_age_band`` (see :func:`group_table`) and ``sex_gaps`` (see :func:`sex_gaps`).
    """
    names = [split_names] if isinstance(split_names, str) else list(split_names)
    d = df[df["split"].isin(names)]
    if d.empty:
        raise ValueError(f"no rows in splits {names}; present: {sorted(df['split'].unique())}")
    return {"sample": sample_table(d),
            "overall": group_table(d, [], n_boot=n_boot, seed=seed),
            "by_sex": group_table(d, ["sex"], n_boot=n_boot, seed=seed),
            "by_age_band": group_table(d, ["age_band"], n_boot=n_boot, seed=seed),
            "by_sex_age_band": group_table(d, ["sex", "age_band"], n_boot=n_boot, seed=seed),
            "sex_gaps": sex_gaps(d, n_boot=max(n_boot, 1000), n_perm=n_perm, seed=seed)}


# -- HTML ----------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
p.notes{color:#444;line-height:1.45}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
td:first-child,th:first-child{text-align:left}
footer{margin-top:2em;color:#777;font-size:.8em}
"""


def _fmt(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if np.isnan(x):
            return "–"
        return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:.3g}"
    return str(x)


def _ci_columns(c: str, cols: list[str]) -> tuple[str, str] | None:
    if f"{c}_lo" in cols and f"{c}_hi" in cols:
        return f"{c}_lo", f"{c}_hi"
    if c == "gap" and "ci_lo" in cols and "ci_hi" in cols:
        return "ci_lo", "ci_hi"
    return None


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """Fold ``m``, ``m_lo``, ``m_hi`` (and ``gap``, ``ci_lo``, ``ci_hi``) into one ``m [95% CI]`` text column."""
    cols = list(table.columns)
    pairs = {c: _ci_columns(c, cols) for c in cols}
    folded = {x for pair in pairs.values() if pair for x in pair}
    out = {}
    for c in cols:
        if c in folded:
            continue
        if pairs[c] is None:
            out[c] = [_fmt(v) for v in table[c]]
            continue
        lo, hi = pairs[c]
        out[f"{c} [95% CI]"] = [_fmt(v) if pd.isna(a) or pd.isna(b) else f"{_fmt(v)} [{_fmt(a)}, {_fmt(b)}]"
                                for v, a, b in zip(table[c], table[lo], table[hi])]
    return pd.DataFrame(out)


def audit_html(tables: dict[str, pd.DataFrame], title: str, notes: str = "") -> str:
    """A self-contained HTML page (inline CSS, no scripts or external assets) of the audit tables.

    Every cell is escaped; ``notes`` is plain text, blank lines separate paragraphs.
    """
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for para in [p.strip() for p in notes.split("\n\n") if p.strip()]:
        parts.append(f'<p class="notes">{html.escape(para)}</p>')
    for name, table in tables.items():
        parts.append(f'<h2 id="{html.escape(name)}">{html.escape(name.replace("_", " ").capitalize())}</h2>')
        if table is None or len(table) == 0:
            parts.append("<p>(no rows)</p>")
            continue
        parts.append(_display(table).to_html(index=False, escape=True, border=0))
    parts.append("<footer>Cases without a reference bone age are excluded from every metric. Errors are "
                 "predicted minus reference, in months. Intervals are percentile-bootstrap 95% CIs; gap p-values "
                 "come from a sex-label permutation test, p_adj is Benjamini-Hochberg over the table.</footer>")
    parts.append("</body></html>")
    return "\n".join(parts)
