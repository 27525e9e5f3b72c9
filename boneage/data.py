"""Loading a case table's radiographs, prepared in the model's geometry, with per-case failure reasons.

The work is done by :mod:`boneage.image_cache`: every radiograph decoded once (by several processes) into
an on-disk, memory-mapped uint8 cache, so training at 512 px on 12,611 native films does not need the
images in RAM. Augmentation then runs on batched tensors (:mod:`boneage.preprocess`).
"""
from __future__ import annotations

from .image_cache import LoadedImages, load_case_image, load_images

__all__ = ["LoadedImages", "load_case_image", "load_images"]
