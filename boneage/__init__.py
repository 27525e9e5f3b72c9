"""Pediatric bone-age assessment from left-hand radiographs, with its evidence.

The main entry point is :func:`load_predictor`; the rest of the package is organised one job per module
(``imaging``, ``preprocess``, ``tables``, ``splits``, ``model``, ``training``, ``metrics`` ...).
"""
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError, Prediction, load_predictor

__all__ = ["BoneAgePredictor", "ModelNotFoundError", "Prediction", "load_predictor"]
