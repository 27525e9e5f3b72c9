"""boneage context and boneage mask-quality end to end on a few real films with the shipped model."""
from __future__ import annotations

import json

import pytest

from pipelines import context, mask_quality

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_context_benchmark_writes_each_variant_for_both_sets(data_dir, tmp_path, capsys):
    out = tmp_path / "context.json"
    assert context.main(["--data-dir", str(data_dir), "--n-internal", "2", "--n-official", "1", "--out", str(out),
                         "--quiet"]) == 0
    blob = json.loads(out.read_text())
    assert set(blob["sets"]) == {"internal_test", "official_test"}
    for rows in blob["sets"].values():
        assert [r["name"] for r in rows] == list(blob["variants"])
        assert all(r["n"] >= 1 and r["mean_abs"] >= 0 for r in rows)
    assert blob["target_mean_abs_months"] == 1.5 and len(blob["model_sha256"]) == 64
    printed = capsys.readouterr().out
    assert "blackout" in printed and "wrote" in printed


def test_mask_quality_report_and_contact_sheet(data_dir, tmp_path):
    out, sheet = tmp_path / "mq.json", tmp_path / "sheet.png"
    assert mask_quality.main(["--data-dir", str(data_dir), "--n-internal", "3", "--n-official", "2", "--n-stability", "1",
                              "--out", str(out), "--sheet", str(sheet), "--quiet"]) == 0
    blob = json.loads(out.read_text())
    assert blob["sets"]["official_test"]["n"] == 2 and blob["sets"]["internal_train"]["n"] == 3
    assert set(blob["sets"]["internal_test"]["stability"]) == set(blob["stability_perturbations"])
    assert sheet.is_file() and sheet.stat().st_size > 0


def test_bad_counts_are_refused(data_dir, capsys):
    with pytest.raises(SystemExit) as e:
        context.main(["--data-dir", str(data_dir), "--n-internal", "0", "--n-official", "0"])
    assert e.value.code == 2 and "at least one" in capsys.readouterr().err
