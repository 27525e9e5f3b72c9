"""One settings object names the data, artifacts and model folders: environment, then flags, then defaults."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from boneage import config
from boneage.settings import DEFAULT_ARTIFACTS_DIR, DataDirError, Settings, add_path_flags, resolve_data_dir

pytestmark = pytest.mark.unit


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s == Settings(None, DEFAULT_ARTIFACTS_DIR, DEFAULT_ARTIFACTS_DIR / "model")
    with pytest.raises(DataDirError, match="BONEAGE_DATA"):
        s.require_data_dir()


def test_environment_then_flags(tmp_path):
    env = {"BONEAGE_DATA": str(tmp_path), "BONEAGE_ARTIFACTS": str(tmp_path / "art")}
    s = Settings.from_env(env)
    assert (s.data_dir, s.artifacts_dir, s.model_dir) == (tmp_path, tmp_path / "art", tmp_path / "art" / "model")
    parser = add_path_flags(argparse.ArgumentParser(), data=True, artifacts=True, model=True)
    args = parser.parse_args(["--model-dir", str(tmp_path / "m"), "--data-dir", str(tmp_path / "d")])
    s2 = Settings.from_args(args, env)
    assert (s2.data_dir, s2.artifacts_dir, s2.model_dir) == (tmp_path / "d", tmp_path / "art", tmp_path / "m")
    with pytest.raises(DataDirError, match="does not exist"):
        s2.require_data_dir()
    # a new artifacts folder takes its default model folder along; an explicit one stays
    assert Settings.from_env({}).override(artifacts_dir=tmp_path).model_dir == tmp_path / "model"
    assert Settings.from_env({"BONEAGE_MODEL": str(tmp_path / "m")}).override(artifacts_dir=tmp_path).model_dir \
        == tmp_path / "m"


def test_resolve_data_dir_and_config_share_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEAGE_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(str(tmp_path / "nope"), required=False) is None
    monkeypatch.delenv("BONEAGE_DATA")
    with pytest.raises(DataDirError, match="--data-dir"):
        resolve_data_dir()
    assert config.resolve_data_dir is resolve_data_dir
    assert config.ARTIFACTS_DIR == Path(config.SETTINGS.artifacts_dir)
    assert config.MODEL_DIR == config.SETTINGS.model_dir
