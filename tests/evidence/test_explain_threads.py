"""Explanations on the shared model under concurrency (several dashboard users at once): Grad-CAM in one
thread while others run saliency, integrated gradients, layer activations and the sex-flip check must give
exactly the maps and numbers of one call at a time, and never raise."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from boneage.evidence import explain

pytestmark = pytest.mark.integration
ROUNDS = 25


@pytest.fixture(scope="module")
def shared(data_dir):
    from boneage import load_predictor

    p = load_predictor()
    imgs = [p.preprocess(np.asarray(Image.open(data_dir / "train" / f"{i}.png"), np.float32)) for i in (1378, 1377)]
    return p, imgs


def test_concurrent_explanations_equal_single_threaded(shared):
    p, (img_a, img_b) = shared
    model = p.model
    ig_kw = {"n_steps": 4, "chunks": 1, "tolerance": 0.0, "max_steps": 4}
    jobs = {
        "gradcam": lambda: explain.attribute(model, img_a, True, "gradcam"),
        "gradcam_stage": lambda: explain.attribute(model, img_b, False, "gradcam", layer="Stage 4"),
        "saliency": lambda: explain.attribute(model, img_b, False, "saliency"),
        "ig": lambda: explain.attribute(model, img_a, True, "integrated_gradients", **ig_kw),
        "activations": lambda: explain.layer_activations(model, img_b, True, "Stage 5", max_maps=4),
        "sex_flip": lambda: np.array(list(explain.sex_flip(p, img_a, True).values())[:3], np.float64),
    }
    expected = {k: f() for k, f in jobs.items()}  # one at a time
    errors: list[str] = []
    mismatches: list[str] = []
    start = threading.Barrier(len(jobs))

    def worker(name):
        start.wait()
        for i in range(ROUNDS):
            try:
                got = jobs[name]()
            except Exception as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{name} round {i}: {type(exc).__name__}: {exc}")
                continue
            if not np.allclose(got, expected[name], rtol=1e-4, atol=1e-5):
                mismatches.append(f"{name} round {i}: max diff {np.abs(got - expected[name]).max():.3g}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert not mismatches, mismatches[:5]
    # the model is left as it was: no hooks behind, still in eval mode
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())
