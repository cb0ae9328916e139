"""Costs: ``error, grad = cost(pred, target)`` with ``grad`` = dL/dpred, PuzzleLib's names and accumulators."""
from puzzle_rms.cost.abs import Abs
from puzzle_rms.cost.bce import BCE
from puzzle_rms.cost.cost import Cost, CostError
from puzzle_rms.cost.cross_entropy import CrossEntropy
from puzzle_rms.cost.mse import MSE
from puzzle_rms.cost.smooth_l1 import SmoothL1

__all__ = ["Abs", "BCE", "Cost", "CostError", "CrossEntropy", "MSE", "SmoothL1"]
