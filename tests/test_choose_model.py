"""pipelines.choose_model: the validation rule and the atomic replacement of the shipped model folder."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys


def test_a_candidate_equal_to_the_shipped_model_passes_and_is_adopted(repo_root, subprocess_env, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(repo_root / "artifacts" / "model", model_dir)
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for name in ("model.pt", "config.json", "history.csv"):
        shutil.copy2(model_dir / name, candidate / name)
    out = tmp_path / "choice.json"
    r = subprocess.run([sys.executable, "-m", "pipelines.choose_model", "--candidate", str(candidate), "--model-dir",
                        str(model_dir), "--max-cases", "12", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                        "--adopt"], env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    shipped_tta = json.loads((repo_root / "artifacts" / "model" / "config.json").read_text())["inference"]["tta"]
    same = res["tta" if shipped_tta else "plain"]
    assert same["minus_shipped"]["mae_diff"] == 0 and same["mae"] == res["shipped"]["mae"]
    assert res["passes"] and "adopted" in r.stdout
    assert not (model_dir / "conformal.json").exists()  # calibrated for the old model: dropped
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["inference"]["tta"] == res["candidate_tta"] and "validation MAE" in cfg["inference"]["chosen_on"]
    assert not list(tmp_path.glob("model.*"))  # no temporary or old folder left behind


def test_a_worse_candidate_is_refused_and_nothing_changes(repo_root, subprocess_env, tmp_path):
    import torch

    model_dir = tmp_path / "model"
    shutil.copytree(repo_root / "artifacts" / "model", model_dir)
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    shutil.copy2(model_dir / "config.json", candidate / "config.json")
    state = torch.load(model_dir / "model.pt", weights_only=True)
    sd = state["state_dict"]
    sd["age_head.bias"] = sd["age_head.bias"] + torch.tensor([1.0, 0.0])  # +41 months on every reading
    torch.save(state, candidate / "model.pt")
    before = (model_dir / "model.pt").read_bytes()
    r = subprocess.run([sys.executable, "-m", "pipelines.choose_model", "--candidate", str(candidate), "--model-dir",
                        str(model_dir), "--max-cases", "12", "--cache-dir", str(tmp_path / "cache"),
                        "--out", str(tmp_path / "c.json"), "--adopt"],
                       env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "not adopted" in r.stdout and (model_dir / "model.pt").read_bytes() == before
    assert (model_dir / "conformal.json").exists()
