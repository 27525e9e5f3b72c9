"""A predictor whose model reads the hand alone (ModelConfig.hand_mask "hand"): every door's preparation masks
the film, a doubtful outline is noted on the reading, and a film with nothing to read is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from boneage.config import ModelConfig
from boneage.inference.assess import assess
from boneage.inference.predictor import BoneAgePredictor
from boneage.io.imaging import ImageLoadError, read_radiograph
from boneage.nn.model import BoneAgeNet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=64, trim_bars=True, laterality="left", hand_mask="hand", mask_dilation=2)
    return BoneAgePredictor(BoneAgeNet(cfg, pretrained=False).eval(), {"model": {}})


def test_the_model_input_is_the_hand_alone(predictor, data_dir):
    film = read_radiograph(data_dir / "test" / "4549.png")  # markers beside the hand
    p = predictor.prepare(film)
    assert p.hand is not None and p.hand.ok
    outside = ~p.hand.mask
    assert p.image.dtype == np.uint8 and (p.image[outside] == 0).mean() > 0.9
    a = assess(film, sex="M", predictor=predictor)
    assert np.isfinite(a.boneage_months) and not any("hand outline" in n for n in a.notes)


def test_a_doubtful_outline_is_noted_and_nothing_to_read_is_refused(predictor):
    plate = np.random.default_rng(0).uniform(0, 0.05, (300, 240)).astype(np.float32)  # no bar to trim
    plate[60:240, 50:190] = 0.6  # a plate and nothing on it
    a = assess(plate, sex="F", predictor=predictor)
    assert any(n.startswith("hand outline doubtful") for n in a.notes)
    with pytest.raises(ImageLoadError, match="no hand found"):
        predictor.prepare(np.zeros((300, 240), np.float32))
