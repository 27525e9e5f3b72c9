"""End to end on real images: one-epoch training through the CLI, then batch, single-image and library prediction.

Kept small for CPU-only CI: 32 training and 16 validation cases at input size 64, one epoch.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import boneage
from boneage.io.imaging import ImageLoadError
from boneage.inference.assess import assess_cases

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGES = {"Child", "Adolescent", "Adult"}
TEST_IDS = ["4361", "4362", "4365"]  # real native-size official test images


def _run(args: list[str], env: dict, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, repo_root, subprocess_env):
    """(model_dir, splits_path, completed process) of a one-epoch run on 32 real training images."""
    from pipelines.prepare import prepare_splits

    work = tmp_path_factory.mktemp("train")
    splits = prepare_splits(data_dir, work / "splits.csv")
    out = work / "model"
    proc = _run(["pipelines.train", "--splits", str(splits), "--out", str(out), "--max-train-cases", "32",
                 "--max-val-cases", "16", "--input-size", "64", "--epochs", "1", "--batch-size", "16",
                 "--dropout", "0.1", "--quiet", "--no-resume"], subprocess_env, repo_root, timeout=600)
    assert proc.returncode == 0, f"training failed:\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
    return out, splits, proc


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("images")
    for cid in TEST_IDS:
        shutil.copy(data_dir / "test" / f"{cid}.png", d / f"{cid}.png")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is junk, not image data \x00\x01\x02" * 3)
    return d


@pytest.fixture(scope="module")
def test_sex(data_dir) -> dict[str, bool]:
    t = pd.read_csv(data_dir / "test.csv", dtype={"id": str})
    return {cid: str(m) == "True" for cid, m in zip(t["id"], t["male"])}


def test_training_writes_model_config_and_history(trained):
    out, splits, proc = trained
    for name in ("model.pt", "config.json", "history.csv", "last.pt"):
        assert (out / name).is_file(), name
    assert "best epoch 1" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["seed"] == 42
    assert cfg["splits_sha256"] == hashlib.sha256(splits.read_bytes()).hexdigest()
    assert cfg["splits_file"] == "splits.csv"
    assert cfg["n_train"] == 32 and cfg["n_val"] == 16
    assert cfg["model"]["input_size"] == 64 and cfg["model"]["backbone"] == "efficientnet-lite0"
    assert cfg["model"]["dropout"] == 0.1  # --dropout is saved with the model
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["max_train_cases"] == 32
    assert cfg["epochs_run"] == 1 and cfg["best_epoch"] == 1
    assert math.isfinite(cfg["best_val_mae"]) and cfg["best_val_mae"] > 0
    hist = pd.read_csv(out / "history.csv")
    assert hist["epoch"].tolist() == [1]
    assert {"train_loss", "train_mae", "val_mae", "val_nll", "lr", "seconds"} <= set(hist.columns)
    assert "train_disagreement" not in hist.columns  # only training for precision has two readings to compare
    assert hist["val_mae"].iloc[0] == pytest.approx(cfg["best_val_mae"])
    assert np.isfinite(hist[["train_loss", "train_mae", "val_mae"]].to_numpy()).all()


def test_batch_prediction_cli(trained, image_dir, test_sex, tmp_path, repo_root, subprocess_env):
    model_dir = trained[0]
    sex = {cid: "M" if test_sex[cid] else "F" for cid in TEST_IDS}
    ids = [*TEST_IDS, "99999", "bad"]
    cases = pd.DataFrame({"id": [f"{TEST_IDS[0]}.png", *ids[1:], "4363"],
                          "sex": [sex[TEST_IDS[0]], *(sex[c] for c in TEST_IDS[1:]), "F", "M", "unknown"]})
    cases_csv = tmp_path / "cases.csv"
    cases.to_csv(cases_csv, index=False)
    out_csv = tmp_path / "pred.csv"
    proc = _run(["pipelines.predict", "--model-dir", str(model_dir), "--image-dir", str(image_dir),
                 "--cases", str(cases_csv), "--output", str(out_csv)], subprocess_env, repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 6 rows" in proc.stdout and "(3 predicted, 3 failed)" in proc.stdout
    assert "failed 4363: sex not understood" in proc.stderr

    out = pd.read_csv(out_csv, dtype={"id": str}, keep_default_na=False)
    assert out["id"].tolist() == ids + ["4363"]  # one row per input row, in input order
    assert out["male"].astype(str).tolist() == [str(test_sex[c]) for c in TEST_IDS] + ["False", "True", ""]
    assert "sex not understood" in out["error"].iloc[-1]
    good = out[out["id"].isin(TEST_IDS)]
    assert (good["error"] == "").all()
    preds = pd.to_numeric(good["boneage_pred"])
    assert np.isfinite(preds).all() and preds.between(-100, 400).all()
    assert (pd.to_numeric(good["uncertainty"]) > 0).all()
    assert set(good["stage_pred"]) <= STAGES
    probs = good[["p_child", "p_adolescent", "p_adult"]].apply(pd.to_numeric)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)

    errors = out.set_index("id")["error"]
    assert "not found" in errors["99999"]
    assert "bad.png" in errors["bad"] and "not a readable" in errors["bad"]
    for cid in ("99999", "bad"):
        assert out.set_index("id").loc[cid, "boneage_pred"] == ""
        assert f"failed {cid}:" in proc.stderr


def test_single_image_cli(trained, image_dir, repo_root, subprocess_env):
    img = image_dir / f"{TEST_IDS[1]}.png"
    proc = _run(["pipelines.predict", str(img), "--sex", "F", "--model-dir", str(trained[0])], subprocess_env,
                repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "bone age" in proc.stdout and "months" in proc.stdout
    assert any(f"stage {s}" in proc.stdout for s in STAGES)


def test_single_image_cli_reports_unreadable_file(trained, image_dir, repo_root, subprocess_env):
    proc = _run(["pipelines.predict", str(image_dir / "bad.png"), "--sex", "M", "--model-dir", str(trained[0])],
                subprocess_env, repo_root)
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "bad.png" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_with_missing_model_dir_exits_2(tmp_path, image_dir, repo_root, subprocess_env):
    missing = tmp_path / "no_such_model"
    proc = _run(["pipelines.predict", str(image_dir / f"{TEST_IDS[0]}.png"), "--sex", "F", "--model-dir",
                 str(missing)], subprocess_env, repo_root)
    assert proc.returncode == 2
    assert str(missing / "model.pt") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_needs_a_single_mode(repo_root, subprocess_env):
    proc = _run(["pipelines.predict", "--sex", "F"], subprocess_env, repo_root)
    assert proc.returncode == 2 and "give either IMAGE" in proc.stderr


def test_library_predictor(trained, image_dir, test_sex, data_dir):
    predictor = boneage.load_predictor(trained[0])
    assert predictor.cfg.input_size == 64
    assert predictor.config["n_train"] == 32
    path = image_dir / f"{TEST_IDS[0]}.png"
    male = test_sex[TEST_IDS[0]]
    pred = predictor.predict_file(path, male=male)
    assert isinstance(pred, boneage.Prediction)
    assert math.isfinite(pred.boneage_months) and pred.scale_months > 0
    assert pred.stage in STAGES
    assert set(pred.stage_probs) == STAGES
    assert sum(pred.stage_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred.stage == max(pred.stage_probs, key=pred.stage_probs.get)
    # the same bytes as an upload give the same answer
    same = predictor.predict_bytes(path.read_bytes(), male=male, name="upload.png")
    assert same.boneage_months == pytest.approx(pred.boneage_months, abs=1e-4)
    # a table of cases gives the same answer as one file at a time
    table = assess_cases(pd.DataFrame({"id": [TEST_IDS[0], "nope"], "male": [male, True]}), image_dir, predictor=predictor)
    assert table["boneage_pred"].iloc[0] == pytest.approx(pred.boneage_months, abs=0.01)
    assert table["error"].iloc[0] == "" and "not found" in table["error"].iloc[1]
    row = pred.as_row()
    assert row["stage_pred"] == pred.stage and row["boneage_pred"] == round(pred.boneage_months, 2)
    with pytest.raises(ImageLoadError):
        predictor.predict_file(image_dir / "bad.png", male=True)


def test_library_missing_model_dir(tmp_path):
    with pytest.raises(boneage.ModelNotFoundError, match="model.pt"):
        boneage.load_predictor(tmp_path)


def test_train_names_an_unknown_acquisition_family(repo_root, subprocess_env, tmp_path):
    proc = _run(["pipelines.train", "--consistency", "1", "--consistency-families", "jpeg,mirror",
                 "--max-train-cases", "8", "--out", str(tmp_path / "run")], subprocess_env, repo_root)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown ['mirror']" in proc.stderr and "jpeg, downscale, crop, border, rotate" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["1", "-0.1", "half"])
def test_train_refuses_a_dropout_that_is_not_a_fraction(value, repo_root, subprocess_env, tmp_path):
    proc = _run(["pipelines.train", "--dropout", value, "--max-train-cases", "8", "--out", str(tmp_path / "run")],
                subprocess_env, repo_root)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--dropout" in proc.stderr and "not a dropout fraction" in proc.stderr
    assert not (tmp_path / "run").exists()
