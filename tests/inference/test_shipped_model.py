"""The shipped model (artifacts/model: model.pt + config.json) on real labelled official test images.

Not skipped when the artifact is missing: a checkout without the trained model is a broken checkout.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import boneage
import boneage.inference.predictor as predictor_module
from boneage.config import MODEL_DIR
from boneage.io.tables import read_cases
from boneage.inference.assess import assess_cases

pytestmark = pytest.mark.integration

N_CASES = 12


@pytest.fixture(scope="module")
def labelled_cases(data_dir) -> pd.DataFrame:
    """12 labelled official test cases spread over the table (sorted by id), with their reference ages."""
    cases = read_cases(data_dir / "test.csv").cases
    labelled = cases[cases["boneage"].notna()].sort_values("id", key=lambda s: s.astype(int)).reset_index(drop=True)
    assert len(labelled) == 100
    pick = np.linspace(0, len(labelled) - 1, N_CASES).round().astype(int)
    return labelled.iloc[pick].reset_index(drop=True)


@pytest.fixture(scope="module")
def shipped():
    for name in ("model.pt", "config.json"):
        assert (MODEL_DIR / name).is_file(), (
            f"shipped model file {MODEL_DIR / name} is missing: run `python -m pipelines.train` or git checkout "
            "artifacts/model")
    predictor_module._DEFAULT = None  # load afresh, through the default path
    return boneage.load_predictor()


def test_shipped_model_is_a_full_training_run(shipped):
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert cfg["n_train"] > 5000, "artifacts/model looks like a smoke-test model, not the full training run"
    assert cfg["train"]["max_train_cases"] is None
    assert "splits_sha256" in cfg and "seed" in cfg["train"]
    assert shipped.cfg.input_size == cfg["model"]["input_size"]
    assert boneage.load_predictor() is shipped  # loaded once per process


def test_shipped_model_accuracy_on_official_test_images(shipped, labelled_cases, data_dir):
    out = assess_cases(labelled_cases, data_dir / "test", predictor=shipped)
    assert (out["error"] == "").all(), out.loc[out["error"] != "", ["id", "error"]]
    assert out["id"].tolist() == labelled_cases["id"].tolist()
    err = out["boneage_pred"].to_numpy(float) - labelled_cases["boneage"].to_numpy(float)
    mae = float(np.mean(np.abs(err)))
    assert mae < 15.0, f"MAE {mae:.1f} months on {N_CASES} labelled official test cases (errors {np.round(err, 1)})"
    assert set(out["stage_pred"]) <= {"Child", "Adolescent", "Adult"}
    assert (out["uncertainty"] > 0).all()
    # predictions follow the reference ages (these cases span childhood to adolescence)
    assert np.corrcoef(out["boneage_pred"], labelled_cases["boneage"])[0, 1] > 0.8


def test_shipped_model_loads_without_data_dir(monkeypatch, data_dir, labelled_cases):
    monkeypatch.delenv("BONEAGE_DATA", raising=False)
    monkeypatch.setattr(predictor_module, "_DEFAULT", None)
    p = boneage.load_predictor()
    row = labelled_cases.iloc[0]
    pred = p.predict_file(data_dir / "test" / f"{row['id']}.png", male=bool(row["male"]))
    assert np.isfinite(pred.boneage_months) and pred.scale_months > 0


def test_shipped_model_loads_in_a_fresh_process_without_data_dir(tmp_path, repo_root, data_dir, labelled_cases):
    """A fresh interpreter, run outside the repository, with no BONEAGE_DATA: the predictor still loads."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "BONEAGE_DATA"}
    env["PYTHONPATH"] = str(repo_root)
    image = data_dir / "test" / f"{labelled_cases.iloc[0]['id']}.png"
    code = ("import boneage; p = boneage.load_predictor(); "
            f"r = p.predict_file({str(image)!r}, male=True); print('OK', round(r.boneage_months, 1), r.stage)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK ")


def test_library_call_reproduces_the_precomputed_predictions_and_intervals(shipped, labelled_cases, data_dir):
    """What `boneage.load_predictor()` returns for an official test image is what the dashboard shows for it
    (artifacts/predictions.parquet): same age and the same conformal intervals, band offsets included."""
    out = assess_cases(labelled_cases, data_dir / "test", predictor=shipped).set_index("id")
    stored = pd.read_parquet(MODEL_DIR.parent / "predictions.parquet")
    stored = stored[stored["split"] == "official_test"].set_index("id").loc[out.index]
    np.testing.assert_allclose(out["boneage_pred"], stored["boneage_pred"], atol=0.05)
    for col in ("lower_80", "upper_80", "lower_90", "upper_90", "lower_95", "upper_95"):
        np.testing.assert_allclose(out[col], stored[col], atol=0.1, err_msg=col)


def test_shipped_model_reads_a_right_hand_as_the_left(shipped, data_dir):
    """The shipped geometry reads left hands only (boneage.geometry.laterality): a 100 px film and its mirror image get
    the same reading, and the output says which one was mirrored."""
    from boneage.io.imaging import read_radiograph

    assert shipped.cfg.geometry.laterality == "left"
    raw = read_radiograph(data_dir / "train" / "1380.png")
    a = shipped.predict_array(raw, True)
    b = shipped.predict_array(np.ascontiguousarray(raw[:, ::-1]), True)
    assert a.boneage_months == pytest.approx(b.boneage_months, abs=1e-4)
    assert {a.mirrored.split(":")[0], b.mirrored.split(":")[0]} == {"yes", "no"}
