"""Scale-out training and a model of another geometry, end to end on real radiographs.

One ``torchrun --nproc_per_node 2`` job on the CPU (gloo) trains on 32 training images at a 160 px
letterboxed base geometry; the same run then serves as "a model trained at another base size" for the
prediction and Grad-CAM checks.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from boneage.training import distributed as D
from boneage.config import model_config_from_dict
from boneage.io.imaging import read_radiograph
from boneage.nn.model import BoneAgeNet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _torchrun(out, env, repo_root, *extra: str) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipelines.train", "--max-train-cases", "32", "--max-val-cases", "16",
           "--base-size", "160", "--fit", "letterbox", "--input-size", "64", "--batch-size", "8",
           "--threads", "1", "--quiet", "--out", str(out),
           "--cache-dir", str(out.parent / "cache"), *extra]  # rank 0 builds it, rank 1 waits and opens it
    proc = subprocess.run(cmd, cwd=repo_root, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, subprocess_env, repo_root):
    out = tmp_path_factory.mktemp("ddp") / "model"
    return out, _torchrun(out, subprocess_env, repo_root, "--epochs", "1", "--no-resume")


@pytest.fixture(scope="module")
def native_image(data_dir):
    case = pd.read_csv(data_dir / "test.csv", dtype={"id": str}).iloc[1]  # 4361, labelled, native size
    path = data_dir / "test" / f"{case['id']}.png"
    assert min(read_radiograph(path).shape) > 300  # a native radiograph, not a 100 px training file
    return path, bool(case["male"])


def test_two_process_run_writes_once_and_ends_with_identical_replicas(ddp_run):
    out, stdout = ddp_run
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.csv", "last.pt", "model.pt"]
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert sum(line.startswith("epoch 1:") for line in stdout.splitlines()) == 1  # rank 0 alone reports
    cfg = json.loads((out / "config.json").read_text())
    dist = cfg["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["global_batch_size"] == 16
    assert len(dist["replica_state_sha256"]) == 2 and dist["replicas_identical"] is True
    # the digest both ranks agreed on is the digest of the weights rank 0 saved
    net = BoneAgeNet(model_config_from_dict(cfg["model"]), pretrained=False)
    net.load_state_dict(torch.load(out / "last.pt", map_location="cpu", weights_only=False)["model"])
    assert D.state_sha256(net) == dist["replica_state_sha256"][0]
    assert cfg["n_train"] == 32 and cfg["n_val"] == 16
    cache = sorted(p.name.split(".", 1)[1] for p in (out.parent / "cache").iterdir())
    assert cache == ["json", "json", "npy", "npy"]  # train and validation, each built once and complete


def test_model_of_another_base_size_predicts_through_the_cli(ddp_run, native_image, subprocess_env, repo_root):
    out, _ = ddp_run
    path, male = native_image
    proc = subprocess.run([sys.executable, "-m", "pipelines.predict", str(path), "--sex", "M" if male else "F",
                           "--model-dir", str(out)], cwd=repo_root, env=subprocess_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    months = float(proc.stdout.split("bone age ")[1].split(" months")[0])
    assert 0 < months < 300


def test_model_of_another_base_size_reads_its_own_geometry_and_explains_on_it(ddp_run, native_image, monkeypatch):
    import boneage.nn.forward as inference
    from boneage.evidence import explain
    from boneage.inference.predictor import load_predictor

    out, _ = ddp_run
    path, male = native_image
    p = load_predictor(out, tta=False)
    assert (p.cfg.base_size, p.cfg.fit) == (160, "letterbox")
    seen = []
    real = inference.to_model_input

    def spy(images, input_size, theta=None):
        x = real(images, input_size, theta)
        seen.append((tuple(images.shape[-2:]), tuple(x.shape[-2:])))
        return x

    monkeypatch.setattr(inference, "to_model_input", spy)
    pred = p.predict_file(path, male)
    assert np.isfinite(pred.boneage_months)
    assert seen and all(s == ((160, 160), (64, 64)) for s in seen)  # base image 160 px, network input 64 px
    img = p.preprocess(read_radiograph(path))
    assert img.shape == (160, 160)
    heat = explain.attribute(p.model, img, male, "gradcam")
    assert heat.shape == (160, 160) and np.isfinite(heat).all() and heat.max() > 0


def test_two_process_run_resumes_from_last_checkpoint(ddp_run, tmp_path, subprocess_env, repo_root):
    import shutil

    src, _ = ddp_run
    out = tmp_path / "model"
    shutil.copytree(src, out)
    shutil.copytree(src.parent / "cache", tmp_path / "cache")
    first = pd.read_csv(out / "history.csv")
    stdout = _torchrun(out, subprocess_env, repo_root, "--epochs", "2")
    assert "resumed from" in stdout and "at epoch 1" in stdout
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 2 and hist["val_mae"].iloc[0] == first["val_mae"].iloc[0]  # epoch 1 kept, not redone
    dist = json.loads((out / "config.json").read_text())["distributed"]
    assert dist["replicas_identical"] is True and dist["world_size"] == 2
