"""Kept for existing imports: the maturity rule lives in :mod:`boneage.maturity`, the whole assessment of one
radiograph in :mod:`boneage.assess`."""
from .maturity import ADVANCED, DELAYED, LAPLACE_95, NORMAL, MaturityAssessment, maturity_status

__all__ = ["ADVANCED", "DELAYED", "LAPLACE_95", "NORMAL", "MaturityAssessment", "maturity_status"]
