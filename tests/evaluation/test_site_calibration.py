"""Site calibration statistics on synthetic sites with a known shift and scale (boneage.evaluation.site_calibration)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from boneage.evaluation.site_calibration import (CaseResults, SiteConformal, SiteProfile, SiteProfileError, compare,
                                      conformal_quantile, correction_gain, cross_validate, fit_correction,
                                                 fit_profile, fit_site, shrink_factor,
                                      load_site, min_cases, min_cases_all)

pytestmark = pytest.mark.unit


def synthetic_site(rng, n, shift_m=0.0, shift_f=0.0, slope=0.0, scale_factor=1.0):
    """Model predictions with a per-case scale; the site's references differ by a known per-sex shift (and
    slope around 120 months), with errors ``scale_factor`` times the model's scale (Laplace)."""
    male = rng.random(n) < 0.5
    pred = rng.uniform(20, 220, n)
    scale = rng.uniform(4, 12, n)
    y = (pred + np.where(male, shift_m, shift_f) + slope * (pred - 120)
         + rng.laplace(0, 1, n) * scale * scale_factor)
    return y, pred, scale, male


def test_min_cases_is_the_smallest_n_with_a_finite_bound():
    for level in ("80", "90", "95"):
        n = min_cases(level)
        c = float(level) / 100
        assert (n + 1) * c <= n + 1e-9 and not n * c <= n - 1 + 1e-9  # (n+1)c <= n holds at n, not at n-1
        assert math.isfinite(conformal_quantile(np.arange(n, dtype=float), level))
        assert conformal_quantile(np.arange(n - 1, dtype=float), level) == math.inf
    assert (min_cases("80"), min_cases("90"), min_cases("95")) == (4, 9, 19)
    assert min_cases_all() == 19


def test_conformal_step_covers_the_promised_level_over_many_draws():
    """Exchangeable scores: mean coverage over draws is ceil((n+1)c)/(n+1), within binomial tolerance."""
    rng = np.random.default_rng(1)
    n_cal, n_test, draws = 30, 200, 400
    for level in ("80", "90", "95"):
        c = float(level) / 100
        cov = np.empty(draws)
        for d in range(draws):
            scale = rng.uniform(3, 10, n_cal + n_test)
            err = rng.normal(0, 1, n_cal + n_test) * scale * 1.7  # the model's scale understates the errors
            conf = SiteConformal(np.abs(err[:n_cal]) / scale[:n_cal], np.zeros(n_cal, bool))
            lo, hi = conf.interval(np.full(n_test, 100.0), scale[n_cal:], np.zeros(n_test, bool), level)
            cov[d] = np.mean((100 + err[n_cal:] >= lo) & (100 + err[n_cal:] <= hi))
        expected = math.ceil((n_cal + 1) * c) / (n_cal + 1)
        tol = 3 * cov.std(ddof=1) / math.sqrt(draws)
        assert abs(cov.mean() - expected) <= tol, (level, cov.mean(), expected, tol)


def test_site_procedure_covers_the_promised_level_on_a_shifted_site():
    """Correction + cross-fitted conformal on a site with a known shift and wider errors than the model's
    scale: coverage of new patients averages the promised 90 % (within binomial tolerance and the
    split-conformal excess 1/(n+1))."""
    rng = np.random.default_rng(2)
    draws, n_cal, n_test = 150, 60, 300
    cov, width = np.empty(draws), np.empty(draws)
    for d in range(draws):
        y, pred, scale, male = synthetic_site(rng, n_cal + n_test, shift_m=-6, shift_f=3, scale_factor=1.5)
        site = fit_site(y[:n_cal], pred[:n_cal], scale[:n_cal], male[:n_cal], k_folds=5)
        _, ivs = site.predict(pred[n_cal:], scale[n_cal:], male[n_cal:], ("90",))
        lo, hi = ivs["90"]
        cov[d] = np.mean((y[n_cal:] >= lo) & (y[n_cal:] <= hi))
        width[d] = np.mean(hi - lo)
    tol = 3 * cov.std(ddof=1) / math.sqrt(draws)
    n_sex = n_cal // 2
    assert 0.90 - tol <= cov.mean() <= 0.90 + 1 / (n_sex + 1) + tol, (cov.mean(), tol)
    assert np.all(np.isfinite(width))


def test_correction_recovers_a_known_shift_and_keeps_none_without_one():
    rng = np.random.default_rng(3)
    y, pred, scale, male = synthetic_site(rng, 200, shift_m=-8, shift_f=0.0)
    corr = fit_correction(y, pred, male)
    assert corr.kind == "per-sex shift"
    r = (y - pred)[male]
    b, se = r.mean(), r.std(ddof=1) / math.sqrt(len(r))
    assert corr.M.shift == pytest.approx(b * (1 - se**2 / b**2))  # positive-part James-Stein
    assert corr.M.shift == pytest.approx(-8, abs=2.5)
    assert corr.cv_mae["per-sex shift"] < corr.cv_mae["none"]
    assert abs(corr.F.shift) < 1.5
    # With no shift at all, most sites keep none (or a shift shrunk to almost nothing), and say why.
    kept, sizes = 0, []
    for _ in range(40):
        y, pred, _, male = synthetic_site(rng, 60)
        c = fit_correction(y, pred, male)
        if c.kind == "none":
            kept += 1
            assert "no correction" in c.reason
        else:
            assert c.cv_mae[c.kind] < c.cv_mae["none"]
        sizes += [abs(c.F.shift), abs(c.M.shift)]
    assert kept / 40 >= 0.5 and np.median(sizes) < 0.5


def test_shrinkage_drops_a_shift_within_its_standard_error():
    assert shrink_factor(1.0, 1.0) == 0.0 and shrink_factor(0.5, 1.0) == 0.0
    assert shrink_factor(10.0, 1.0) == pytest.approx(0.99)
    assert shrink_factor(2.0, 1.0) == pytest.approx(0.75)


def test_correction_fits_a_slope_only_with_enough_cases():
    rng = np.random.default_rng(4)
    y, pred, _, male = synthetic_site(rng, 240, slope=-0.15, scale_factor=0.5)
    corr = fit_correction(y, pred, male)
    assert corr.kind == "age-linear"
    for s in (corr.F, corr.M):
        assert s.kind == "shift+slope" and s.slope == pytest.approx(-0.15, abs=0.03)
    corrected = corr.apply(pred, male)
    assert np.mean(np.abs(corrected - y)) < np.mean(np.abs(pred - y))
    small = fit_correction(y[:25], pred[:25], male[:25])  # below 30 cases: no slope tried
    assert "age-linear" not in small.cv_mae and "global shift" in small.cv_mae
    tiny = fit_correction(y[:8], pred[:8], male[:8])  # fewer than 10 cases
    assert tiny.kind == "none" and "too few cases" in tiny.reason and tiny.is_identity


def test_intervals_are_per_sex_only_where_each_sex_has_enough_cases():
    male = np.array([True] * 40 + [False] * 25)
    conf = SiteConformal(np.linspace(0.1, 3, 65), male)
    assert not any(conf.by_sex(lvl) for lvl in ("80", "90", "95"))  # 25 girls < 30: pooled
    q90 = conf.quantiles("90")
    assert q90["F"] == q90["M"] == conformal_quantile(conf.scores, "90")
    lo, hi = conf.interval(np.array([100.0, 100.0]), np.array([5.0, 5.0]), np.array([True, False]), "90")
    assert np.allclose(hi - lo, 2 * 5 * q90["M"])
    male = np.array([True] * 40 + [False] * 30)
    conf = SiteConformal(np.r_[np.linspace(0.1, 3, 40), np.linspace(0.1, 1, 30)], male)
    q80 = conf.quantiles("80")
    assert conf.by_sex("80") and q80["F"] == conformal_quantile(conf.scores[~male], "80") != q80["M"]


def test_conformal_quantile_is_the_finite_sample_order_statistic():
    scores = np.arange(1, 31, dtype=float)  # 30 scores 1..30
    assert conformal_quantile(scores, "90") == 28.0  # ceil(31 * 0.9) = 28th smallest
    assert conformal_quantile(scores, "95") == 30.0  # ceil(31 * 0.95) = 30
    assert conformal_quantile(scores[:18], "95") == math.inf  # ceil(19 * 0.95) = 19 > 18


def test_profile_without_an_expected_gain_is_a_no_op_that_says_why():
    rng = np.random.default_rng(11)
    y, pred, scale, male = synthetic_site(rng, 30)  # no shift at all
    y = y.clip(0, 240)
    gain, _ = correction_gain(y, pred, scale, male)
    prof = fit_profile("x", y, pred, scale, male, pred - 10, pred + 10, "sha", True, n_boot=200,
                       reference="consensus of six readers")
    ev = prof.evaluation
    assert ev["expected_mae_change"]["value"] == gain["value"]
    assert ev["expected_mae_change"]["ci_low"] <= gain["value"] <= ev["expected_mae_change"]["ci_high"]
    assert ev["correction_applied"] == (gain["value"] < 0)
    if not ev["correction_applied"]:
        assert prof.correction.is_identity and "not expected to help" in prof.correction.reason
        assert np.allclose(prof.apply(pred, scale, male)[0], pred.clip(0, 300))
    promise = prof.to_dict()["promise"]
    assert promise["n_cases"] == 30 and promise["reference"] == "consensus of six readers"
    assert "30 cases pooled" in promise["text"]
    # A large shift is kept, and the nested estimate of its gain is negative.
    y, pred, scale, male = synthetic_site(rng, 60, shift_m=12, shift_f=12, scale_factor=0.5)
    big = fit_profile("y", y.clip(0, 240), pred, scale, male, pred - 10, pred + 10, "sha", True, n_boot=200)
    assert big.evaluation["correction_applied"] and big.evaluation["expected_mae_change"]["ci_high"] < 0
    assert big.correction.M.shift == pytest.approx(12, abs=3)


def test_cross_validation_fits_nothing_on_the_held_out_fold():
    """Held-out predictions of a case must not change when that case's reference changes."""
    rng = np.random.default_rng(5)
    y, pred, scale, male = synthetic_site(rng, 60, shift_m=5, shift_f=5)
    res, fold = cross_validate(y, pred, scale, male, k_folds=5)
    y2 = y.copy()
    y2[fold == 0] += 500  # absurd references in fold 0 only
    res2, fold2 = cross_validate(y2, pred, scale, male, k_folds=5)
    assert np.array_equal(fold, fold2)
    held = fold == 0
    assert np.allclose(res.pred[held], res2.pred[held]) and np.allclose(res.upper[held], res2.upper[held])
    assert not np.allclose(res.pred[~held], res2.pred[~held])  # ... while the other folds learnt from them


def test_compare_reports_before_after_and_paired_differences():
    y = np.array([10.0, 20, 30, 40])
    before = CaseResults(np.array([12.0, 22, 32, 42]), np.array([0.0, 0, 0, 0]), np.array([50.0, 50, 50, 50]))
    after = CaseResults(np.array([10.0, 21, 29, 40]), np.array([5.0, 15, 25, 45]), np.array([15.0, 25, 35, 55]))
    out = compare(y, before, after, n_boot=200)
    assert out["before"]["mae"]["value"] == 2.0 and out["after"]["mae"]["value"] == 0.5
    assert out["before"]["bias"]["value"] == 2.0 and out["after"]["bias"]["value"] == 0.0
    assert out["before"]["coverage"]["value"] == 1.0 and out["after"]["coverage"]["value"] == 0.75
    assert out["difference"]["width"]["value"] == -40.0
    assert out["width_change_relative"]["value"] == pytest.approx(-0.8)
    for k in ("mae", "bias", "coverage", "width"):
        d = out["difference"][k]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]


def test_profile_round_trip_and_model_check(tmp_path):
    rng = np.random.default_rng(6)
    y, pred, scale, male = synthetic_site(rng, 80, shift_m=-5, shift_f=4, scale_factor=0.6)
    before_lo, before_hi = pred - 3 * scale, pred + 3 * scale
    prof = fit_profile("demo", y, pred, scale, male, before_lo, before_hi, "abc123", True, n_boot=200)
    ev = prof.evaluation
    assert ev["k_folds"] == 10 and ev["n"] == 80
    assert ev["after"]["width"]["value"] < ev["before"]["width"]["value"]  # the model's 3-sigma bands are too wide
    assert ev["after"]["mae"]["value"] < ev["before"]["mae"]["value"]  # the shifts are real
    path = prof.save(tmp_path / "demo.json")
    assert not list(tmp_path.glob("*.tmp"))
    back = load_site(path)
    a_age, a_iv = prof.apply(pred, scale, male)
    b_age, b_iv = back.apply(pred, scale, male)
    assert np.allclose(a_age, b_age) and all(np.allclose(a_iv[k][0], b_iv[k][0], atol=1e-3) for k in a_iv)
    assert load_site("demo", tmp_path).name == "demo"
    back.check_model("abc123", True)
    with pytest.raises(SiteProfileError, match="another model"):
        back.check_model("def456", True)
    with pytest.raises(SiteProfileError, match="test-time augmentation"):
        back.check_model("abc123", False)
    back.check_model("abc123", True, 1)  # fitted on one-view readings (the default)
    with pytest.raises(SiteProfileError, match="1x1 phase view.*this model reads 3x3"):
        back.check_model("abc123", True, 3)
    older = {k: v for k, v in prof.to_dict().items() if k not in ("phases", "laterality")}  # before both existed
    assert SiteProfile.from_dict(older).phases == 1 and SiteProfile.from_dict(older).laterality == "as-is"
    back.check_model("abc123", True, 1, "as-is")
    with pytest.raises(SiteProfileError, match="laterality 'as-is', this model reads with 'left'.*calibrate_site"):
        back.check_model("abc123", True, 1, "left")
    with pytest.raises(SiteProfileError, match="not found; available: demo"):
        load_site("nowhere", tmp_path)
    bad = json.loads(path.read_text())
    del bad["conformal"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SiteProfileError, match="damaged"):
        load_site(tmp_path / "bad.json")


def test_fit_profile_refuses_too_few_cases_and_bad_references():
    rng = np.random.default_rng(7)
    y, pred, scale, male = synthetic_site(rng, 18)
    with pytest.raises(ValueError, match="at least 19"):
        fit_profile("x", y.clip(0, 240), pred, scale, male, pred - 10, pred + 10, "sha", True)
    y, pred, scale, male = synthetic_site(rng, 30)
    y[3] = 250
    with pytest.raises(ValueError, match="outside 0-240"):
        fit_profile("x", y, pred, scale, male, pred - 10, pred + 10, "sha", True)


def test_fit_profile_refuses_ages_in_years_and_identical_labels():
    rng = np.random.default_rng(8)
    y, pred, scale, male = synthetic_site(rng, 30)
    years = (y.clip(12, 240) / 12).round(1)
    with pytest.raises(ValueError, match="look like years.*in months"):
        fit_profile("x", years, pred, scale, male, pred - 10, pred + 10, "sha", True)
    with pytest.raises(ValueError, match="all 30 reference bone ages are the same"):
        fit_profile("x", np.full(30, 120.0), pred, scale, male, pred - 10, pred + 10, "sha", True)


def test_one_sex_only_gives_pooled_intervals_with_a_note_for_the_other_sex():
    rng = np.random.default_rng(9)
    y, pred, scale, _ = synthetic_site(rng, 40, shift_m=6)
    male = np.ones(40, bool)
    prof = fit_profile("boys", y, pred, scale, male, pred - 10, pred + 10, "sha", True, n_boot=200)
    assert len(prof.notes) == 1 and "only boys" in prof.notes[0] and "girls get no correction" in prof.notes[0]
    assert not any(prof.conformal.by_sex(lvl) for lvl in ("80", "90", "95"))
    assert prof.correction.F.kind == "identity"
    assert SiteProfile.from_dict(json.loads(json.dumps(prof.to_dict()))).notes == prof.notes
    both = fit_profile("both", y, pred, scale, rng.random(40) < 0.5, pred - 10, pred + 10, "sha", True, n_boot=200)
    assert both.notes == []


def test_archive_profile_keeps_the_previous_version_with_its_date(tmp_path):
    from boneage.evaluation.site_calibration import archive_profile, available_sites

    rng = np.random.default_rng(10)
    y, pred, scale, male = synthetic_site(rng, 30)
    prof = fit_profile("clinic", y, pred, scale, male, pred - 10, pred + 10, "sha", True, n_boot=100,
                       created="2026-01-02T03:04:05+00:00")
    path = prof.save(tmp_path / "clinic.json")
    copy = archive_profile(path)
    assert copy == tmp_path / "history" / "clinic.20260102T0304050000.json"
    assert copy.read_text() == path.read_text()
    assert available_sites(tmp_path) == ["clinic"]  # the history is not offered as a site
