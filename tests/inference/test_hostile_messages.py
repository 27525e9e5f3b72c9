"""Hostile but fair inputs get a clear message, never a traceback and never a silent wrong answer: broken case
tables, unwritable outputs, damaged model files, damaged calibrations, an unknown backbone, a planted resume
checkpoint, huge uploads, markdown in upload names; and the dashboard's deployment defaults."""
from __future__ import annotations

import builtins
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import boneage
from boneage.inference.predictor import ModelDamagedError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = Path(__file__).resolve().parents[2] / "artifacts" / "model"



@pytest.fixture
def image_dir(tmp_path, data_dir):
    d = tmp_path / "images"
    d.mkdir()
    shutil.copy(data_dir / "train" / "1377.png", d / "1377.png")
    return d


def _model_copy(tmp_path, conformal: str | None = "copy", config_edit=None, weights: bytes | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    if weights is None:
        (d / "model.pt").symlink_to(MODEL / "model.pt")
    else:
        (d / "model.pt").write_bytes(weights)
    cfg = json.loads((MODEL / "config.json").read_text())
    if config_edit:
        config_edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    if conformal == "copy":
        (d / "conformal.json").symlink_to(MODEL / "conformal.json")
    elif conformal is not None:
        (d / "conformal.json").write_text(conformal)
    return d


# -- case tables ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,message", [
    ("id,age\n1377,10\n", "needs a 'male' (True/False, 1/0) or 'sex' (M/F) column"),
    ("", "is empty"),
    ("id,sex\n", "has a header (id, sex) but no cases"),
    ("\xff\xfe\x00garbage\x00\n", "needs an 'id' column"),
])
def test_bad_cases_files_get_a_message_and_status_2(tmp_path, image_dir, content, message, predict_cli):
    cases = tmp_path / "cases.csv"
    cases.write_text(content, encoding="latin-1")
    proc = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(tmp_path / "o.csv")])
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("content", ["id;sex\n1377;F\n", "\ufeffid,sex\n1377,F\n"], ids=["semicolon", "excel_bom"])
def test_spreadsheet_cases_files_are_read(tmp_path, image_dir, content, predict_cli):
    cases = tmp_path / "cases.csv"
    cases.write_text(content, encoding="utf-8")
    out = tmp_path / "o.csv"
    proc = predict_cli(["--image-dir", str(image_dir), "--cases", str(cases), "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    res = pd.read_csv(out, keep_default_na=False)
    assert res["error"].tolist() == [""] and res["boneage_pred"].iloc[0] > 0


# -- outputs -------------------------------------------------------------------------------------------------

def test_unwritable_output_is_reported_before_work(tmp_path, monkeypatch):
    from pipelines.predict import check_output_path

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert "is not a folder" in check_output_path(str(a_file / "out.csv"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    assert "is not writable" in check_output_path(str(tmp_path / "out.csv"))
    assert check_output_path(str(tmp_path / "sub" / "out.csv")).endswith("does not exist; create it first or "
                                                                          "choose another path.")


# -- model files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["truncated", "random"])
def test_damaged_model_file(tmp_path, kind, image_dir, predict_cli):
    good = (MODEL / "model.pt").read_bytes()
    weights = good[: len(good) // 3] if kind == "truncated" else np.random.default_rng(0).bytes(4096)
    d = _model_copy(tmp_path, weights=weights)
    with pytest.raises(ModelDamagedError, match="cannot be loaded: it is truncated, damaged"):
        boneage.load_predictor(d)
    proc = predict_cli([str(image_dir / "1377.png"), "--sex", "F", "--model-dir", str(d)])
    assert proc.returncode == 2 and "model.pt cannot be loaded" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_backbone_gives_no_fake_pip_advice(tmp_path):
    d = _model_copy(tmp_path, config_edit=lambda c: c["model"].update(backbone="efficientnet-resnet9000"))
    with pytest.raises(ModelDamagedError, match="unknown backbone 'efficientnet-resnet9000'") as exc:
        boneage.load_predictor(d)
    assert "pip install" not in str(exc.value)


@pytest.mark.parametrize("content,message", [
    ("[1, 2, 3]", "not a conformal calibration"),
    (None, "NaN or infinite"),
    ("{not json", "not valid JSON"),
])
def test_damaged_calibration_means_no_intervals_and_says_why(tmp_path, content, message, train_image_path):
    if content is None:  # the shipped calibration with NaN scores
        d = json.loads((MODEL / "conformal.json").read_text())
        d["residuals"][0] = float("nan")
        content = json.dumps(d)
    p = boneage.load_predictor(_model_copy(tmp_path, conformal=content))
    assert p.conformal is None and message in p.conformal_problem
    pred = p.predict_file(train_image_path, male=True)
    assert pred.intervals == {} and math.isfinite(pred.boneage_months)


def test_missing_calibration_is_announced_by_the_cli(tmp_path, image_dir, predict_cli):
    d = _model_copy(tmp_path, conformal=None)
    proc = predict_cli([str(image_dir / "1377.png"), "--sex", "F", "--model-dir", str(d)])
    assert proc.returncode == 0, proc.stderr
    assert "prediction intervals are unavailable" in proc.stderr
    assert "no interval (not calibrated)" in proc.stdout


# -- training resume -----------------------------------------------------------------------------------------

class _Planted:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_planted_last_pt_is_not_unpickled(tmp_path, data_dir, repo_root, subprocess_env):
    from pipelines.prepare import prepare_splits

    splits = prepare_splits(data_dir, tmp_path / "splits.csv")
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": _Planted(str(marker))}, out / "last.pt")
    proc = subprocess.run([sys.executable, "-m", "pipelines.train", "--splits", str(splits), "--out", str(out),
                           "--max-train-cases", "8", "--max-val-cases", "8", "--input-size", "64", "--epochs", "1",
                           "--batch-size", "8", "--quiet"], cwd=repo_root, env=subprocess_env, capture_output=True,
                          text=True, timeout=600)
    assert not marker.exists(), "the planted checkpoint ran code"
    assert proc.returncode == 2, proc.stderr
    assert "cannot be loaded as a plain checkpoint" in proc.stderr and "--no-resume" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- uploads and the dashboard ---------------------------------------------------------------------------------

def test_huge_png_upload_refused_for_its_pixels():
    from pipelines.benchmarks.decode_memory import build_png

    from boneage.io.imaging import TooManyPixelsError, read_upload
    from boneage.io.input_gate import load_radiograph_bytes

    data = build_png(20000, 20000)
    assert len(data) < 1_000_000
    for call in (lambda: read_upload(data, "huge.png"), lambda: load_radiograph_bytes(data, "huge.png", upload=True)):
        with pytest.raises(TooManyPixelsError, match="400 megapixels.*too many pixels") as exc:
            call()
        assert "not a PNG" not in str(exc.value)


def test_streamlit_config_has_safe_defaults(repo_root):
    cfg = tomllib.loads((repo_root / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert 20 <= cfg["server"]["maxUploadSize"] <= 100
    assert cfg["browser"]["gatherUsageStats"] is False
    run_sh = (repo_root / "run.sh").read_text()
    assert 'cd "$ROOT"' in run_sh and "streamlit run dashboard/app.py" in run_sh and '"$@"' in run_sh


def test_upload_names_are_plain_text_on_the_predict_page(monkeypatch, data_dir):
    from tests.dashboard.app_driver import open_page

    monkeypatch.delenv("BONEAGE_DATA", raising=False)
    name = "[x](http://evil.example)_*bold*.png"
    black = io.BytesIO()
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(black, "PNG")
    real = (data_dir / "test" / "4361.png").read_bytes()
    at = open_page("views/7_Predict.py")
    at.file_uploader(key="pr_files").set_value([(name, black.getvalue(), "image/png"), ("=cmd|' /C calc'!A0.png", real,
                                                                                         "image/png")])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert name in [t.value for t in at.text]  # shown as written, as plain text
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "blank" in errors[0]
    assert "](http" not in errors[0] and r"\[x\]\(http\://evil.example\)" in errors[0]  # no live link
    res = at.dataframe[-1].value
    assert res["id"].tolist() == [name, "=cmd|' /C calc'!A0.png"]


def test_pickled_model_file_refusal_says_what_to_do_not_weights_only_false(tmp_path):
    """#31.7: a model.pt holding Python objects is refused without quoting torch's hint to set
    weights_only=False (which would run the planted code); the message says what to do instead."""
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"state_dict": _Planted(str(marker))}, buf)
    d = _model_copy(tmp_path, weights=buf.getvalue())
    with pytest.raises(ModelDamagedError) as err:
        boneage.load_predictor(d)
    msg = str(err.value)
    assert not marker.exists()
    assert "weights_only" not in msg and "trust the source" not in msg, msg
    assert "produced by this project's training" in msg and "never unpickle" in msg, msg
