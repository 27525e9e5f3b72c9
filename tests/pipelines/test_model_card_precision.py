"""The model card's precision section: the targets table per set, and the floor beside it when measured."""
from __future__ import annotations

import pytest

import json
import shutil

from pipelines import model_card

pytestmark = pytest.mark.integration


def _card_precision(tmp_path, prec: dict) -> str:
    (tmp_path / "precision.json").write_text(json.dumps(prec))
    return "\n".join(model_card._precision_lines(tmp_path))


def test_the_floor_is_shown_beside_the_targets_and_only_when_measured(tmp_path, repo_root):
    shutil.copy(repo_root / "artifacts" / "precision.json", tmp_path / "shipped.json")
    prec = json.loads((tmp_path / "shipped.json").read_text())
    assert prec["diagnostics"], "the shipped benchmark carries its floor (pipelines.precision, diagnostics on)"
    text = _card_precision(tmp_path, prec)
    for name, rows in prec["diagnostics"].items():
        assert f"{name}, the floor (diagnostics, not targets)" in text
        for r in rows:  # a floor row has no target column
            assert f"| {r['description']} | {r['mean_abs']:.2f} | {r['p95_abs']:.2f} | {r['mean_signed']:.2f} |\n" in text + "\n"
    prec.pop("diagnostics")
    assert "the floor" not in _card_precision(tmp_path, prec)
