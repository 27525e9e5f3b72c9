"""Where things are: the data folder, the artifacts folder and the model folder, named once for every door.

One :class:`Settings` object holds the three paths. The environment variables (``BONEAGE_DATA``,
``BONEAGE_ARTIFACTS``, ``BONEAGE_MODEL``) are read in :meth:`Settings.from_env` and the command-line flags
(``--data-dir``, ``--artifacts-dir``, ``--model-dir``) are added by :func:`add_path_flags` and mapped by
:meth:`Settings.from_args`; the library's default folders (``boneage.config.ARTIFACTS_DIR``, ``MODEL_DIR``, the
artifact store, :func:`resolve_data_dir`) all come from here. A flag wins over its variable, a variable over
the default (the repository's ``artifacts/`` and ``artifacts/model``;
no default data folder: radiographs are never part of the repository).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV, ARTIFACTS_ENV, MODEL_ENV = "BONEAGE_DATA", "BONEAGE_ARTIFACTS", "BONEAGE_MODEL"
DEFAULT_ARTIFACTS_DIR = REPO_ROOT / "artifacts"


class DataDirError(RuntimeError):
    """The RSNA data directory is not configured or does not exist."""


def _path(value: str | os.PathLike) -> Path:
    return Path(value).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """The three folders every door names. ``data_dir`` is None when no data folder is configured (the
    dashboard and the service run on the shipped artifacts alone); ``model_dir`` defaults to
    ``artifacts_dir / "model"``."""

    data_dir: Path | None
    artifacts_dir: Path
    model_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (``os.environ`` when ``environ`` is None)."""
        env = os.environ if environ is None else environ
        artifacts = _path(env[ARTIFACTS_ENV]) if env.get(ARTIFACTS_ENV) else DEFAULT_ARTIFACTS_DIR
        model = _path(env[MODEL_ENV]) if env.get(MODEL_ENV) else artifacts / "model"
        data = _path(env[DATA_ENV]) if env.get(DATA_ENV) else None
        return cls(data, artifacts, model)

    def override(self, data_dir: str | os.PathLike | None = None, artifacts_dir: str | os.PathLike | None = None,
                 model_dir: str | os.PathLike | None = None) -> Settings:
        """These settings with the given paths replacing theirs (None keeps a path). A new artifacts folder
        without a model folder moves the model folder with it when it was the default one."""
        out = self
        if artifacts_dir is not None:
            artifacts = _path(artifacts_dir)
            model = artifacts / "model" if self.model_dir == self.artifacts_dir / "model" else self.model_dir
            out = dataclasses.replace(out, artifacts_dir=artifacts, model_dir=model)
        if model_dir is not None:
            out = dataclasses.replace(out, model_dir=_path(model_dir))
        if data_dir is not None:
            out = dataclasses.replace(out, data_dir=_path(data_dir))
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
        """The environment's settings with the flags :func:`add_path_flags` added to ``args`` applied."""
        return cls.from_env(environ).override(getattr(args, "data_dir", None), getattr(args, "artifacts_dir", None),
                                              getattr(args, "model_dir", None))

    def require_data_dir(self) -> Path:
        """The data folder, or :class:`DataDirError` saying how to configure it."""
        if self.data_dir is None:
            raise DataDirError(
                f"No data directory configured. Set {DATA_ENV}=/path/to/rsna-bone-age (the folder holding "
                "train.csv, train/, test.csv, test/) or pass --data-dir."
            )
        if not self.data_dir.is_dir():
            raise DataDirError(f"Data directory {self.data_dir} does not exist (from --data-dir or ${DATA_ENV}).")
        return self.data_dir


def add_path_flags(parser: argparse.ArgumentParser, data: bool = True, artifacts: bool = False,
                   model: bool = False) -> argparse.ArgumentParser:
    """Add the path flags a command takes, each with the same name, variable and help everywhere."""
    if data:
        parser.add_argument("--data-dir", help=f"RSNA data folder (default: ${DATA_ENV})")
    if artifacts:
        parser.add_argument("--artifacts-dir", "--artifacts", dest="artifacts_dir",  # --artifacts: its first name
                            help=f"artifacts folder, holding model/ and splits.csv (default: ${ARTIFACTS_ENV} or "
                                 "artifacts/)")
    if model:
        parser.add_argument("--model-dir", help=f"model folder (default: ${MODEL_ENV} or artifacts/model)")
    return parser


def resolve_data_dir(cli_value: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """The RSNA data directory from a CLI flag or ``$BONEAGE_DATA``: :meth:`Settings.require_data_dir` of the
    environment's settings with ``cli_value`` applied. Raises :class:`DataDirError` with a message that says
    how to fix it when ``required``; returns None instead when not."""
    try:
        return Settings.from_env().override(data_dir=cli_value or None).require_data_dir()
    except DataDirError:
        if required:
            raise
        return None


SETTINGS = Settings.from_env()  # the process's settings, read once at import (the library's defaults)
