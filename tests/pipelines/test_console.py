"""The ``boneage`` console command: every subcommand is the same main(argv) as ``python -m pipelines.X``."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.main import COMMANDS, main

pytestmark = pytest.mark.integration

CONSOLE = Path(sys.executable).with_name("boneage")


def test_console_script_is_installed_and_lists_every_subcommand():
    assert CONSOLE.exists() or shutil.which("boneage"), "pip install -e . installs the boneage command"
    out = subprocess.run([str(CONSOLE if CONSOLE.exists() else "boneage"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert f"  {name} " in out.stdout
    assert "Predict bone age with the shipped model." in out.stdout  # each line is the module's own summary


def test_subcommands_run_the_pipelines_main(capsys):
    for name, module in COMMANDS.items():
        assert callable(importlib.import_module(f"pipelines.{module}").main), name
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: boneage predict")
    assert "--image-dir" in out and "--output" in out


def test_unknown_subcommand_is_refused_with_the_list(capsys):
    assert main(["predikt"]) == 2
    err = capsys.readouterr().err
    assert "unknown subcommand 'predikt'" in err and "predict" in err
    assert main([]) == 2


def test_a_usage_error_exits_2_without_traceback(capsys):
    assert main(["predict", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err and "Traceback" not in err


def test_ctrl_c_prints_one_line_and_no_traceback(monkeypatch, capsys):
    """#31.7: Ctrl-C in any subcommand prints one line (no traceback) and exits 130, once for every command."""
    import pipelines.predict

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines.predict, "main", interrupted)
    assert main(["predict", "x.png"]) == 130
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "interrupted" in err and "Traceback" not in err, err
