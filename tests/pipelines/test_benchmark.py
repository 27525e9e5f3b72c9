"""The benchmark's speed-only rerun keeps the accuracy numbers of the same weights and only those."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.benchmarks.inference import ACCURACY_TAGS, model_fingerprint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PRIMARY_SHA = hashlib.sha256((REPO / "artifacts" / "model" / "model.pt").read_bytes()).hexdigest()
SHA = model_fingerprint()  # the primary's sha256, then each ensemble member's, joined by "+"


def test_fingerprint_names_the_primary_weights_first_and_every_member():
    config = json.loads((REPO / "artifacts" / "model" / "config.json").read_text())
    parts = SHA.split("+")
    assert parts[0] == PRIMARY_SHA
    assert len(parts) == 1 + len(config.get("inference", {}).get("members", []))


@pytest.mark.parametrize("same_model", [True, False])
def test_skip_accuracy_keeps_mae_only_for_the_same_weights(data_dir, tmp_path, same_model):
    out = tmp_path / "benchmark.json"
    out.write_text(json.dumps({"model_sha256": SHA if same_model else "0" * 64, "official_test_mae_plain": 7.5,
                               "internal_test_mae_tta": 8.4, "latency_ms_median": 999.0}))
    r = subprocess.run([sys.executable, "-m", "pipelines.benchmarks.inference", "--data-dir", str(data_dir), "--skip-accuracy",
                        "--repeats", "2", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["model_sha256"] == SHA and res["latency_n"] == 2 and res["latency_ms_median"] != 999.0
    if same_model:
        assert res["official_test_mae_plain"] == 7.5 and res["internal_test_mae_tta"] == 8.4
    else:
        assert not any(k.endswith(tuple(f"_mae_{t}" for t in ACCURACY_TAGS)) for k in res)
