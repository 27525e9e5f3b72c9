"""A stale or damaged conformal file costs the intervals, not the predictions, and says how to fix it."""
from __future__ import annotations

import pytest

import json
import shutil
from pathlib import Path

from boneage.inference.predictor import load_predictor

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_stale_conformal_file_keeps_predictions_and_names_the_fix(tmp_path, train_image_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in ("model.pt", "config.json"):
        shutil.copy(REPO / "artifacts" / "model" / f, model_dir / f)
    (model_dir / "conformal.json").write_text(json.dumps({"mondrian": True, "pred_band_edges": [60, 120, 168],
                                                          "residuals": [1.0], "sigmas": [1.0], "bins": [0]}))
    p = load_predictor(model_dir)
    assert p.conformal is None and "pipelines.precompute --only intervals" in p.conformal_problem
    import numpy as np
    from PIL import Image

    # a real radiograph (random noise is now refused by the input gate, as it should be)
    pred = p.predict_array(np.asarray(Image.open(train_image_path), np.float32), male=True)
    assert 0 <= pred.boneage_months <= 300 and pred.intervals == {}
