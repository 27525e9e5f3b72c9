"""Site calibration end to end on real official test radiographs: pipelines.calibrate_site (its guard rails
included), then pipelines.predict --site and load_predictor(site=...) with the shipped model.

Kept fast: 24 labelled official test cases (a profile needs 19), guard rails that fail before any
prediction, and 3 images for the prediction checks.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from boneage.store.manifest import model_fingerprint
from boneage.evaluation.site_calibration import RECOMMENDED_MIN_CASES, SITES_DIR, SiteProfile, SiteProfileError
from boneage.inference.assess import assess_cases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_CASES = 24
PREDICT_IDS = ["4361", "4362", "4365"]


def _run(args: list[str], env: dict, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def labelled(data_dir) -> pd.DataFrame:
    t = pd.read_csv(data_dir / "test.csv", dtype={"id": str})
    return t[t["boneage"].notna()].reset_index(drop=True)


def _calibrate(tmp_path, cases: pd.DataFrame, image_dir, env, cwd, *extra: str) -> tuple[subprocess.CompletedProcess, object]:
    csv = tmp_path / "local.csv"
    cases.to_csv(csv, index=False)
    out_dir = tmp_path / "sites"
    proc = _run(["pipelines.calibrate_site", "--image-dir", str(image_dir), "--cases", str(csv), "--name", "clinic",
                 "--out-dir", str(out_dir), *extra], env, cwd)
    return proc, out_dir


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, labelled, data_dir, subprocess_env, repo_root):
    """A profile from 24 labelled official cases, plus 3 unlabelled rows skipped with --skip-unlabelled."""
    tmp = tmp_path_factory.mktemp("site")
    t = pd.read_csv(data_dir / "test.csv", dtype={"id": str})
    cases = pd.concat([labelled.head(N_CASES), t[t["boneage"].isna()].head(3)], ignore_index=True)
    proc, out_dir = _calibrate(tmp, cases, data_dir / "test", subprocess_env, repo_root, "--skip-unlabelled", "--folds", "5")
    assert proc.returncode == 0, f"calibration failed:\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return proc, out_dir / "clinic.json"


def test_calibration_writes_a_profile_for_the_shipped_model(calibrated):
    proc, path = calibrated
    assert "left out 3 row(s) without a reference" in proc.stderr
    assert "predicting local cases" in proc.stderr  # the progress bar
    d = json.loads(path.read_text())
    assert d["name"] == "clinic" and d["n_cases"] == N_CASES and d["n_ids"] == N_CASES
    assert d["model_sha256"] == model_fingerprint()
    assert len(d["conformal"]["scores"]) == N_CASES
    ev = d["evaluation"]
    assert ev["k_folds"] == 5 and ev["n"] == N_CASES
    for when in ("before", "after"):
        for k in ("mae", "bias", "coverage", "width"):
            e = ev[when][k]
            assert e["ci_low"] <= e["value"] <= e["ci_high"]
    for sex in ("F", "M"):
        assert d["correction"][sex]["reason"]
    assert "5-fold cross-validated" in proc.stdout and f"wrote {path}" in proc.stdout
    assert ("below the recommended" in proc.stderr) == (N_CASES < RECOMMENDED_MIN_CASES)
    assert d["evaluation"]["correction_applied"] == (d["evaluation"]["expected_mae_change"]["value"] < 0)
    assert d["promise"]["n_cases"] == N_CASES and "promise: 90 % intervals" in proc.stdout


def test_too_few_cases_is_refused_and_says_how_many(tmp_path, labelled, data_dir, subprocess_env, repo_root):
    proc, out_dir = _calibrate(tmp_path, labelled.head(8), data_dir / "test", subprocess_env, repo_root)
    assert proc.returncode == 2
    assert "8 usable case(s): too few" in proc.stderr and "at least 19" in proc.stderr
    assert "90 % needs 9" in proc.stderr and "Nothing was written" in proc.stderr
    assert not out_dir.exists()


@pytest.mark.parametrize("age, expected", [("", "missing bone age"), ("250", "outside 0-240 months"),
                                           ("-3", "out of range")])
def test_missing_or_out_of_range_references_are_refused(tmp_path, labelled, data_dir, subprocess_env, repo_root,
                                                        age, expected):
    cases = labelled.head(N_CASES).astype({"boneage": object})
    cases.loc[5, "boneage"] = age
    proc, out_dir = _calibrate(tmp_path, cases, data_dir / "test", subprocess_env, repo_root)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and cases.loc[5, "id"] in proc.stderr
    assert "0-240 months" in proc.stderr and "Nothing was written" in proc.stderr
    assert not out_dir.exists()


@pytest.mark.parametrize("how, expected", [("years", "look like years"), ("same", "are the same")])
def test_ages_in_years_or_one_copied_value_are_refused(tmp_path, labelled, data_dir, subprocess_env, repo_root,
                                                       how, expected):
    cases = labelled.head(N_CASES).copy()
    cases["boneage"] = (cases["boneage"] / 12).round(1) if how == "years" else 120.0
    proc, out_dir = _calibrate(tmp_path, cases, data_dir / "test", subprocess_env, repo_root)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Nothing was written" in proc.stderr
    assert not out_dir.exists()


def test_an_existing_profile_is_replaced_only_with_overwrite(calibrated, labelled, data_dir, subprocess_env,
                                                             repo_root):
    _, path = calibrated
    before = path.read_text()
    proc, out_dir = _calibrate(path.parent.parent, labelled.head(N_CASES), data_dir / "test", subprocess_env, repo_root)
    assert proc.returncode == 2
    assert "exists" in proc.stderr and "--overwrite" in proc.stderr and "history" in proc.stderr
    assert path.read_text() == before and not (out_dir / "history").exists()


def test_training_cases_are_refused_as_a_leak(tmp_path, data_dir, subprocess_env, repo_root):
    splits = pd.read_csv(repo_root / "artifacts" / "splits.csv", dtype={"id": str})
    train = splits[splits["split"] == "train"].head(N_CASES)
    proc, out_dir = _calibrate(tmp_path, train[["id", "male", "boneage"]], data_dir / "train", subprocess_env, repo_root)
    assert proc.returncode == 2
    assert f"{N_CASES} case(s) are in the model's training split" in proc.stderr
    assert "RSNA training folder" in proc.stderr and "leak" in proc.stderr
    assert not out_dir.exists()


def test_another_models_profile_is_refused_when_used(tmp_path, calibrated, data_dir, subprocess_env, repo_root):
    d = json.loads(calibrated[1].read_text())
    d["model_sha256"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(d))
    out = tmp_path / "out.csv"
    cases = tmp_path / "cases.csv"
    pd.DataFrame({"id": PREDICT_IDS, "male": [True, True, False]}).to_csv(cases, index=False)
    proc = _run(["pipelines.predict", "--image-dir", str(data_dir / "test"), "--cases", str(cases), "--output", str(out),
                 "--site", str(other)], subprocess_env, repo_root)
    assert proc.returncode == 2
    assert "fitted for another model" in proc.stderr and "pipelines.calibrate_site" in proc.stderr
    assert not out.exists()
    with pytest.raises(SiteProfileError, match="another model"):
        from boneage import load_predictor

        load_predictor(site=other)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, calibrated, data_dir, subprocess_env, repo_root):
    """(default output, site output) of pipelines.predict on 3 official test images."""
    tmp = tmp_path_factory.mktemp("predict")
    cases = tmp / "cases.csv"
    pd.DataFrame({"id": PREDICT_IDS, "male": [True, True, False]}).to_csv(cases, index=False)
    outs = []
    for extra in ([], ["--site", str(calibrated[1])]):
        out = tmp / f"out{len(outs)}.csv"
        proc = _run(["pipelines.predict", "--image-dir", str(data_dir / "test"), "--cases", str(cases), "--output",
                     str(out), *extra], subprocess_env, repo_root)
        assert proc.returncode == 0, proc.stderr
        outs.append(pd.read_csv(out, dtype={"id": str}, keep_default_na=False))
    return outs


def test_predict_with_site_applies_the_correction_and_its_intervals(predicted, calibrated):
    default, site = predicted
    profile = SiteProfile.load(calibrated[1])
    assert list(site.columns) == list(default.columns)  # one row schema (boneage.inference.assess.row_columns)
    assert (site["site"] == "clinic").all() and (site["error"] == "").all() and (default["site"] == "").all()
    male = default["male"].astype(str).eq("True").to_numpy()
    raw, scale = default["boneage_pred"].astype(float).to_numpy(), default["uncertainty"].astype(float).to_numpy()
    ages, ivs = profile.apply(raw, scale, male)
    assert np.allclose(site["boneage_pred"].astype(float), ages, atol=0.02)
    for lvl, (lo, hi) in ivs.items():
        assert np.allclose(site[f"lower_{lvl}"].astype(float), lo, atol=0.05)
        assert np.allclose(site[f"upper_{lvl}"].astype(float), hi, atol=0.05)
    assert not np.allclose(site["upper_90"].astype(float), default["upper_90"].astype(float))
    assert (site["uncertainty"] == default["uncertainty"]).all()


def test_default_prediction_is_unchanged_without_a_site(predicted, data_dir):
    default, _ = predicted
    assert list(default.columns) == ["id", "male", "boneage_pred", "uncertainty", "stage_pred", "p_child",
                                     "p_adolescent", "p_adult", "lower_80", "upper_80", "lower_90", "upper_90",
                                     "lower_95", "upper_95", "outlier_score", "unlike_training_data", "framing",
                                     "mirrored", "inverted_negative", "chronological_age_months",
                                     "difference_months", "maturity", "site", "patient_id", "study_date",
                                     "reference_mean_months", "reference_sd_months", "bone_age_sds", "sds_status",
                                     "sds_reference", "predicted_adult_height_cm", "adult_height_lower_90",
                                     "adult_height_upper_90", "adult_height_table", "target_height_cm", "notes",
                                     "error"]
    from boneage import load_predictor

    p = load_predictor()
    assert p.site is None and p.with_site(None).site is None
    ref = assess_cases(pd.DataFrame({"id": PREDICT_IDS, "male": [True, True, False]}), data_dir / "test", predictor=p)
    assert np.allclose(ref["boneage_pred"], default["boneage_pred"].astype(float))
    assert np.allclose(ref["lower_90"], default["lower_90"].astype(float))


def test_shipped_profile_matches_the_shipped_model():
    """artifacts/sites/rsna-official.json must be refitted whenever the model changes (docs/operations.md, Site calibration)."""
    from boneage import load_predictor

    profile = SiteProfile.load(SITES_DIR / "rsna-official.json")
    assert profile.model_sha256 == model_fingerprint(), (
        "artifacts/sites/rsna-official.json was fitted for other weights: refit it with `python -m "
        "pipelines.calibrate_site --image-dir $BONEAGE_DATA/test --cases $BONEAGE_DATA/test.csv --name rsna-official "
        "--skip-unlabelled`")
    assert profile.n_cases == 100 and profile.evaluation["k_folds"] == 10
    p = load_predictor(site="rsna-official")
    assert p.site.name == "rsna-official" and load_predictor().site is None
    assert p.with_options().site.name == "rsna-official"
    with pytest.raises(SiteProfileError, match="test-time augmentation"):  # fitted with the model's default TTA
        p.with_options(tta=not p.tta)
