"""pipelines.benchmarks.site_calibration on the shipped predictions table: labelled official films only,
table and recommended minimum n written to the doc."""
from __future__ import annotations

import pandas as pd
import pytest

from boneage.config import ARTIFACTS_DIR
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
