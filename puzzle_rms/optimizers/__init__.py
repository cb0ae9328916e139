"""Optimizers: the PuzzleLib-style base class, RMSProp and the SGD family, hooks, schedules and loss scaling."""
from puzzle_rms.optimizers.hooks import WeightDecay
from puzzle_rms.optimizers.loss_scale import DynamicLossScale
from puzzle_rms.optimizers.momentum_sgd import MomentumSGD, NesterovSGD
from puzzle_rms.optimizers.optimizer import NonFiniteGradientError, Optimizer
from puzzle_rms.optimizers.rmsprop import RMSProp
from puzzle_rms.optimizers.rmsprop_graves import RMSPropGraves
from puzzle_rms.optimizers.schedules import CosineDecay, ExponentialDecay, PiecewiseConstant
from puzzle_rms.optimizers.sgd import SGD

__all__ = ["CosineDecay", "DynamicLossScale", "ExponentialDecay", "MomentumSGD", "NesterovSGD",
           "NonFiniteGradientError", "Optimizer", "PiecewiseConstant", "RMSProp", "RMSPropGraves", "SGD",
           "WeightDecay"]
