"""pipelines.choose_model: the validation rule and the atomic replacement of the shipped model folder."""
from __future__ import annotations

import pytest

import json
import shutil
import subprocess
import sys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
    shipped_inference = json.loads((repo_root / "artifacts" / "model" / "config.json").read_text())["inference"]
    assert cfg["inference"]["laterality_chosen_on"] == shipped_inference["laterality_chosen_on"]  # kept
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


def _area_candidate(repo_root, tmp_path):
    """The shipped network, but reading native films through the area fit: validation cannot see the change."""
    model_dir = tmp_path / "model"
    shutil.copytree(repo_root / "artifacts" / "model", model_dir)
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    shutil.copy2(model_dir / "model.pt", candidate / "model.pt")
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["model"]["fit"], cfg["model"]["phases"] = "area", 1  # phase views belong to the squeeze
    (candidate / "config.json").write_text(json.dumps(cfg))
    return model_dir, candidate


def test_a_fit_change_is_refused_without_native_cases_and_judged_with_them(repo_root, subprocess_env, tmp_path,
                                                                            data_dir):
    model_dir, candidate = _area_candidate(repo_root, tmp_path)
    before = (model_dir / "config.json").read_text()
    base = [sys.executable, "-m", "pipelines.choose_model", "--candidate", str(candidate), "--model-dir",
            str(model_dir), "--max-cases", "12", "--cache-dir", str(tmp_path / "cache"), "--adopt"]
    r = subprocess.run(base + ["--out", str(tmp_path / "a.json")], env=subprocess_env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "a.json").read_text())
    assert not res["passes"] and "fit 'area'" in res["blocked"] and "--native-cases" in res["blocked"]
    assert "not adopted" in r.stdout and (model_dir / "config.json").read_text() == before
    # with labelled native-size films (here six of the official images, only to exercise the mechanism) the
    # rule runs on them too and its numbers are reported
    import pandas as pd

    cases = pd.read_csv(data_dir / "test.csv", dtype={"id": str}).dropna(subset=["boneage"]).head(6)
    cases.to_csv(tmp_path / "native.csv", index=False)
    r = subprocess.run(base + ["--out", str(tmp_path / "b.json"), "--native-cases", str(tmp_path / "native.csv"),
                               "--native-dir", str(data_dir / "test")],
                       env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "b.json").read_text())
    assert "blocked" not in res and res["native"]["n"] == 6
    assert res["native"]["tta"]["mae"] != res["native"]["shipped"]["mae"]  # the native films are read differently
    assert res["passes"] == (res["native"]["passes"] and (res["tta"] if res["candidate_tta"] else res["plain"])
                             ["minus_shipped"]["ci95"][0] <= 0)


def test_native_cases_need_their_folder(repo_root, subprocess_env, tmp_path):
    model_dir, candidate = _area_candidate(repo_root, tmp_path)
    r = subprocess.run([sys.executable, "-m", "pipelines.choose_model", "--candidate", str(candidate), "--model-dir",
                        str(model_dir), "--native-cases", str(tmp_path / "x.csv")],
                       env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--native-dir" in r.stderr and "Traceback" not in r.stderr


def test_a_change_of_phases_is_a_native_blind_spot_too_but_trimming_is_not():
    from types import SimpleNamespace

    from boneage.geometry.framing import Geometry
    from pipelines.choose_model import native_blind_spot

    def model(**kw):
        return SimpleNamespace(cfg=SimpleNamespace(geometry=Geometry(**kw)))

    assert native_blind_spot(model(phases=3), model(phases=3)) == ""
    why = native_blind_spot(model(phases=3), model(phases=1))
    assert "read at 3x3 phases" in why and "--native-cases" in why
    # trimming and laterality change the 100 px validation files too (302 and 25 of 1,008): validation judges them
    assert native_blind_spot(model(phases=3), model(phases=3, trim_bars=True, laterality="left")) == ""
    why = native_blind_spot(model(), model(fit="area"))
    assert "fit 'area', uniform bars trimmed" in why and "--native-cases" in why


def test_a_retrained_candidate_inherits_the_records_of_the_geometry_choices_it_keeps():
    from pipelines.choose_model import carried_records

    shipped = {"model": {"phases": 3, "laterality": "left", "trim_bars": True},
               "inference": {"tta": True, "chosen_on": "old", "phases_chosen_on": "P", "laterality_chosen_on": "L",
                             "trim_chosen_on": "T"}}
    retrained = {"model": {"phases": 3, "laterality": "left", "trim_bars": False}}  # written by training: no records
    assert carried_records(shipped, retrained) == {"phases_chosen_on": "P", "laterality_chosen_on": "L"}
    assert carried_records({"model": {}}, retrained) == {}
