"""pipelines.benchmarks.site_calibration on the shipped predictions table: labelled official films only,
table and recommended minimum n written to the doc."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from boneage.config import ARTIFACTS_DIR
from boneage.evaluation.site_calibration import RECOMMENDED_MIN_CASES
from pipelines.benchmarks import site_calibration

pytestmark = pytest.mark.integration


def test_benchmark_writes_the_table_and_the_recommended_n(tmp_path, capsys):
    doc = tmp_path / "curve.md"
    assert site_calibration.main(["--draws", "3", "--ns", "20,100", "--doc", str(doc)]) == 0
    out = capsys.readouterr().out
    text = doc.read_text()
    assert "| 20 | 20 | 3 |" in text and "| 100 | 90 | 1 |" in text  # 100 labelled films: one 10-fold CV
    assert "Recommended minimum n:" in text and "recommended minimum n:" in out
    df = pd.read_parquet(ARTIFACTS_DIR / "predictions.parquet")
    labelled = df[(df["split"] == "official_test") & df["boneage"].notna()]
    assert f"the {len(labelled)} labelled official test films" in text


def test_benchmark_refuses_more_cases_than_labelled(tmp_path, capsys):
    assert site_calibration.main(["--draws", "1", "--ns", "500", "--doc", str(tmp_path / "x.md")]) == 2
    assert "fewer than n = 500" in capsys.readouterr().err


def test_calibrate_site_warns_below_the_n_the_committed_curve_recommends():
    doc = Path(__file__).resolve().parents[2] / "docs" / "site-calibration-curve.md"
    m = re.search(r"\*\*Recommended minimum n: (\d+)\*\*", doc.read_text())
    assert m, f"{doc} has no recommended n: rerun python -m pipelines.benchmarks.site_calibration"
    assert int(m.group(1)) == RECOMMENDED_MIN_CASES
