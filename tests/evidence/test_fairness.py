"""Subgroup audit: known gaps are found, absent gaps are not, unknown references never count."""
import json

import numpy as np
import pandas as pd
import pytest

from boneage.evidence import fairness as F
from boneage.evaluation.metrics import stages_from_months
from boneage.training.splits import AGE_BAND_LABELS, age_band

pytestmark = pytest.mark.integration


def _table(ref, pred, male, seed=0, split="test"):
    """A predictions table with the columns the audit reads; stage probs and 90% bounds are made up."""
    rng = np.random.default_rng(seed)
    ref, pred, male = np.asarray(ref, float), np.asarray(pred, float), np.asarray(male, bool)
    n = len(ref)
    st = np.where(np.isnan(ref), -1, stages_from_months(np.nan_to_num(ref)))
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), np.clip(st, 0, 2)] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    df = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "split": split, "male": male,
                       "sex": np.where(male, "M", "F"), "boneage": ref, "age_band": age_band(ref).to_numpy(),
                       "boneage_pred": pred, "stage_true": st, "p_child": p[:, 0], "p_adolescent": p[:, 1],
                       "p_adult": p[:, 2], "lower_90": pred - rng.uniform(5, 15, n),
                       "upper_90": pred + rng.uniform(5, 15, n)})
    df["residual"] = df["boneage_pred"] - df["boneage"]
    df["abs_error"] = df["residual"].abs()
    return df


def _paired(male_offset, n=200, seed=1):
    """Boys and girls with *identical* references and noise; boys' predictions shifted by ``male_offset``."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(12, 216, n)
    noise = rng.normal(0, 2.0, n)
    half = _table(ref, ref + noise, np.zeros(n, bool), seed=seed)
    boys = half.copy()
    boys["male"], boys["sex"] = True, "M"
    boys["id"] = "m" + boys["id"]
    boys["boneage_pred"] = boys["boneage_pred"] + male_offset
    boys["lower_90"], boys["upper_90"] = boys["lower_90"] + male_offset, boys["upper_90"] + male_offset
    df = pd.concat([half, boys], ignore_index=True)
    df["residual"] = df["boneage_pred"] - df["boneage"]
    df["abs_error"] = df["residual"].abs()
    return df


def test_known_male_error_is_found():
    df = _paired(6.0)
    bias = F.sex_gap(df, "bias")
    assert bias["gap"] == pytest.approx(6.0, abs=1e-9)
    assert bias["male"] - bias["female"] == pytest.approx(bias["gap"])
    assert bias["n_male"] == bias["n_female"] == 200
    assert 0 < bias["ci_lo"] <= 6.0 <= bias["ci_hi"]
    assert bias["p_value"] < 0.01
    mae = F.sex_gap(df, "mae")
    assert mae["gap"] > 3  # |e + 6| vs |e| with e ~ N(0, 2): about 4.4
    assert mae["ci_lo"] > 0 and mae["p_value"] < 0.01
    assert mae["p_value"] == pytest.approx(1 / 2001)  # no permutation comes close


def test_equal_groups_show_no_gap():
    df = _paired(0.0)
    for m in F.METRICS:
        g = F.sex_gap(df, m, n_boot=500, n_perm=500)
        assert g["gap"] == pytest.approx(0.0, abs=1e-9), m
        assert g["ci_lo"] <= 0 <= g["ci_hi"], m
        assert g["p_value"] > 0.5, m
    table = F.sex_gaps(df, n_boot=200, n_perm=200)
    assert set(table["metric"]) == set(F.METRICS)
    assert table["scope"].iloc[0] == "all"
    assert list(dict.fromkeys(table["scope"]))[1:] == [b for b in AGE_BAND_LABELS if b in set(df["age_band"])]
    assert (table["p_adj"].dropna() >= table["p_value"].dropna() - 1e-12).all()


def test_unknown_metric_rejected():
    with pytest.raises(ValueError):
        F.sex_gap(_paired(0.0), "auc")


def test_nan_reference_rows_are_ignored():
    df = _paired(6.0, n=80)
    junk = _table([np.nan] * 7, [500.0] * 7, [True] * 7, seed=9)
    junk["lower_90"], junk["upper_90"] = 0.0, 1000.0
    with_junk = pd.concat([df, junk], ignore_index=True)
    for by in ([], ["sex"], ["age_band"], ["sex", "age_band"]):
        pd.testing.assert_frame_equal(F.group_table(df, by, n_boot=200), F.group_table(with_junk, by, n_boot=200))
    assert F.sex_gap(with_junk, "rmse", n_boot=200, n_perm=200) == F.sex_gap(df, "rmse", n_boot=200, n_perm=200)
    assert F.group_table(with_junk, ["sex"], n_boot=50)["n"].tolist() == [80, 80]
    sample = F.sample_table(with_junk)
    assert sample["n_without_reference"].sum() == 7 and sample["n_rows"].sum() == 167


def test_point_estimates_match_direct_computation():
    rng = np.random.default_rng(3)
    ref = rng.uniform(0, 228, 400)
    df = _table(ref, ref + rng.normal(1, 10, 400), rng.random(400) < 0.5, seed=3)
    df.loc[:19, "stage_true"] = -1  # stage unknown while the reference is known: left out of stage accuracy only
    t = F.group_table(df, ["sex"], n_boot=100).set_index("sex")
    for sex, g in df.groupby("sex"):
        err = g["boneage_pred"] - g["boneage"]
        known = g[g["stage_true"] >= 0]
        pred_stage = known[["p_child", "p_adolescent", "p_adult"]].to_numpy().argmax(1)
        row = t.loc[sex]
        assert row["n"] == len(g) and row["n_stage"] == len(known)
        assert row["mae"] == pytest.approx(err.abs().mean())
        assert row["bias"] == pytest.approx(err.mean())
        assert row["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()))
        assert row["within_12"] == pytest.approx((err.abs() <= 12).mean())
        assert row["stage_accuracy"] == pytest.approx((pred_stage == known["stage_true"]).mean())
        cov = ((g["boneage"] >= g["lower_90"]) & (g["boneage"] <= g["upper_90"])).mean()
        assert row["coverage_90"] == pytest.approx(cov)


def test_bootstrap_cis_contain_point_estimate_and_bands_are_ordered():
    rng = np.random.default_rng(4)
    ref = rng.uniform(0, 228, 1200)
    df = _table(ref, ref + rng.laplace(0, 7, 1200), rng.random(1200) < 0.5, seed=4)
    for by in ([], ["sex"], ["age_band"], ["sex", "age_band"]):
        t = F.group_table(df, by, n_boot=400)
        for m in F.METRICS:
            assert (t[f"{m}_lo"] <= t[m] + 1e-12).all(), (by, m)
            assert (t[m] <= t[f"{m}_hi"] + 1e-12).all(), (by, m)
            assert (t[f"{m}_lo"] < t[f"{m}_hi"]).all(), (by, m)
    bands = F.group_table(df, ["age_band"], n_boot=50)["age_band"].tolist()
    assert bands == list(AGE_BAND_LABELS)
    overall = F.group_table(df, [], n_boot=50)
    assert len(overall) == 1 and overall["group"].iloc[0] == "all" and overall["n"].iloc[0] == 1200


def test_bootstrap_is_reproducible_and_seed_dependent():
    df = _paired(2.0, n=60)
    a, b = F.group_table(df, ["sex"], seed=5, n_boot=300), F.group_table(df, ["sex"], seed=5, n_boot=300)
    pd.testing.assert_frame_equal(a, b)
    c = F.group_table(df, ["sex"], seed=6, n_boot=300)
    assert not np.allclose(a["mae_lo"], c["mae_lo"])


def test_audit_tables_and_html(tmp_path):
    rng = np.random.default_rng(7)
    ref = rng.uniform(0, 228, 300)
    df = _table(ref, ref + rng.normal(0, 8, 300), rng.random(300) < 0.5, seed=7)
    df["split"] = np.where(np.arange(300) < 200, "test", "val")
    tables = F.audit(df, ["test"], n_boot=100, n_perm=100)
    assert set(tables) == {"sample", "overall", "by_sex", "by_age_band", "by_sex_age_band", "sex_gaps"}
    assert tables["overall"]["n"].iloc[0] == 200
    assert tables["sample"]["split"].unique().tolist() == ["test"]
    for name, t in tables.items():
        t.to_parquet(tmp_path / f"{name}.parquet")
        json.dumps(t.to_dict(orient="records"))
    page = F.audit_html(tables, "Audit <internal test>", "Bias = predicted - reference.\n\nSecond & last note.")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "Audit &lt;internal test&gt;" in page and "Second &amp; last note." in page
    assert page.count("<table") == len(tables)
    assert "mae [95% CI]" in page and "gap [95% CI]" in page
    lowered = page.lower()
    assert "<script" not in lowered and "http://" not in lowered and "https://" not in lowered
    assert "<link" not in lowered and "src=" not in lowered
    with pytest.raises(ValueError):
        F.audit(df, ["official_test"])
