"""Pediatric bone-age assessment from left-hand radiographs, with its evidence.

The front door is :func:`load_predictor` (a :class:`BoneAgePredictor`) and :func:`assess`, the whole assessment
of one radiograph that every door (CLI, dashboard, HTTP service, DICOM node) runs. The rest is organised in
subpackages by role, each importing only those below it (docs/architecture.md; import-linter checks it):
``clinic`` > ``evidence`` > ``inference`` > ``store`` > ``evaluation`` > ``growth`` > ``training`` > ``nn`` >
``geometry`` > ``io``, over the loose modules ``config`` and ``settings``. Names starting with ``_`` are private.
"""
from boneage.inference.assess import Assessment, AssessmentInputError, assess, assess_cases
from boneage.inference.predictor import BoneAgePredictor, ModelNotFoundError, Prediction, load_predictor
from boneage.settings import Settings

__all__ = ["Assessment", "AssessmentInputError", "BoneAgePredictor", "ModelNotFoundError", "Prediction", "Settings",
           "assess", "assess_cases", "load_predictor"]
