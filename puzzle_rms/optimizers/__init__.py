"""Optimizers: the PuzzleLib-style base class, RMSProp and SGD, schedules and loss scaling."""
from puzzle_rms.optimizers.loss_scale import DynamicLossScale
from puzzle_rms.optimizers.optimizer import NonFiniteGradientError, Optimizer
from puzzle_rms.optimizers.rmsprop import RMSProp
from puzzle_rms.optimizers.schedules import CosineDecay, ExponentialDecay, PiecewiseConstant
from puzzle_rms.optimizers.sgd import SGD

__all__ = ["CosineDecay", "DynamicLossScale", "ExponentialDecay", "NonFiniteGradientError", "Optimizer",
           "PiecewiseConstant", "RMSProp", "SGD"]
