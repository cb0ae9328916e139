"""Costs: ``error, grad = cost(pred, target)`` with ``grad`` the exact derivative dError/dPred."""
from puzzle_rms.cost.cross_entropy import CrossEntropy
from puzzle_rms.cost.mse import MSE

__all__ = ["CrossEntropy", "MSE"]
