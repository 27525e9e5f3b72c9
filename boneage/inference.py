"""Batched forward passes of a trained network over preprocessed images (no file I/O here)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import BoneAgeNet
from .preprocess import to_model_input


@dataclass
class RawPredictions:
    age: np.ndarray  # months
    scale: np.ndarray  # Laplace scale, months
    stage_prob: np.ndarray  # (N, n_stages)
    features: np.ndarray | None = None  # (N, hidden_dim) penultimate features


@torch.no_grad()
def run_network(model: BoneAgeNet, images: np.ndarray | torch.Tensor, male: np.ndarray | torch.Tensor,
                batch_size: int = 128, return_features: bool = False, tta: bool = False,
                device: str | torch.device = "cpu") -> RawPredictions:
    """Predict on (N, H, W) uint8 or float images in [0, 1] (already preprocessed to base geometry).

    ``tta`` averages the prediction over a few small zooms of the image, which reduces variance.
    """
    model.eval()
    images = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    male = torch.as_tensor(np.asarray(male, dtype=np.int64))
    size = model.cfg.input_size
    ages, scales, probs, feats = [], [], [], []
    zooms = (1.0, 0.95, 1.05) if tta else (1.0,)
    for start in range(0, len(images), batch_size):
        xb = images[start:start + batch_size]
        mb = male[start:start + batch_size].to(device)
        a_acc, s_acc, p_acc, f_acc = 0, 0, 0, 0
        for z in zooms:
            theta = None
            if z != 1.0:
                theta = torch.zeros(len(xb), 2, 3)
                theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / z
            x = to_model_input(xb, size, theta).to(device)
            out = model(x, mb)
            a_acc = a_acc + out.age
            s_acc = s_acc + out.scale
            p_acc = p_acc + torch.softmax(out.stage_logits, 1)
            f_acc = f_acc + out.features.float()
        k = len(zooms)
        ages.append((a_acc / k).cpu())
        scales.append((s_acc / k).cpu())
        probs.append((p_acc / k).cpu())
        if return_features:
            feats.append((f_acc / k).cpu())
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0,))  # noqa: E731
    return RawPredictions(cat(ages), cat(scales), cat(probs), cat(feats) if return_features else None)
