"""The resolution curve: real runs at two base sizes collected into an experiments entry and shown by the
model card as its own section."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from boneage.config import ModelConfig, TrainConfig
from boneage.training.image_cache import load_images
from boneage.training.loop import train_model
from pipelines import model_card
from pipelines.experiments import resolution_curve

pytestmark = pytest.mark.integration


def test_runs_at_two_base_sizes_become_a_curve_in_the_model_card(data_dir, tmp_path):
    table = pd.read_csv(data_dir / "train.csv", dtype={"id": str}).head(16)
    runs = []
    for base in (50, 70):
        loaded = load_images(table, data_dir / "train", base, progress=False)  # the 100 px files, squeezed
        assert loaded.images.shape[1:] == (base, base)
        out = tmp_path / f"b{base}"
        train_model(loaded.images[:10], loaded.cases.iloc[:10], loaded.images[10:],
                    loaded.cases.iloc[10:].reset_index(drop=True), out,
                    ModelConfig(base_size=base, input_size=round(1.28 * base)),
                    TrainConfig(epochs=1, batch_size=5, num_threads=1), progress=False)
        runs.append(out)
    art = tmp_path / "artifacts"
    art.mkdir()
    (art / "experiments.json").write_text(json.dumps({"experiments": []}))
    rc = resolution_curve.main([str(runs[1]), str(runs[0]), "--name", "curve test", "--command", "train at B",
                                "--decision", "not shipped", "--input-rule", "round(1.28 x base)",
                                "--append", str(art / "experiments.json")])
    assert rc == 0
    entry = json.loads((art / "experiments.json").read_text())["experiments"][0]
    pts = entry["resolution_curve"]["points"]
    assert [p["base_size"] for p in pts] == [50, 70] and [p["input_size"] for p in pts] == [64, 90]
    for p, run in zip(pts, runs):
        assert p["best_val_mae"] == round(json.loads((run / "config.json").read_text())["best_val_mae"], 3)
    card = model_card.build_card(art)
    section = card.split("## What resolution is worth")[1]
    rows = [r for r in section.splitlines() if r.startswith("| 50 ") or r.startswith("| 70 ")]
    assert len(rows) == 2 and f"{pts[0]['best_val_mae']:.2f}" in rows[0] and f"{pts[1]['best_val_mae']:.2f}" in rows[1]
    assert "curve test" not in card.split("## What resolution is worth")[0]  # not repeated among other runs
    assert resolution_curve.main([str(tmp_path / "nowhere"), "--name", "x", "--command", "x",
                                  "--decision", "x"]) == 2


def test_model_card_help_prints_usage_and_writes_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(model_card, "ARTIFACTS_DIR", tmp_path)
    with pytest.raises(SystemExit) as stop:
        model_card.main(["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out
    assert not (tmp_path / "MODEL_CARD.md").exists()
