"""An independent plain-NumPy statement of RMSProp and SGD, and the driver (Variables, optimizer loop) that tests it.

The reference is written from the textbook formula, in float64, one step and
one tensor at a time, without any code from ``backends`` or ``puzzle_rms``::

    ms  = factor * ms + (1 - factor) * g**2
    den = sqrt(ms + eps)   if epsInSqrt   else   sqrt(ms) + eps
    w   = w - lr * mult * g / den
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms import Variable

SHAPES = [(3, 4), (7,), (2, 3, 5), (1,), (150, 130)]  # the last spans several kernel blocks


def random_problem(gen: np.random.Generator, shapes: Sequence[tuple], steps: int,
                   dtype: Any = np.float32) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial weights and, per step, one gradient per tensor whose scale changes from step to step (1e-2 .. 10)."""
    weights = [gen.standard_normal(shape).astype(dtype) for shape in shapes]
    grads = [[(10.0 ** gen.uniform(-2, 1) * gen.standard_normal(shape)).astype(dtype) for shape in shapes]
             for _ in range(steps)]
    return weights, grads


def rmsprop_reference(weights: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]],
                      learnRates: Sequence[float], factor: float, epsilon: float, epsInSqrt: bool,
                      multipliers: Optional[Sequence[float]] = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and mean squares after ``len(grads)`` steps of plain RMSProp (float64, zero initial state)."""
    w = [np.array(x, dtype=np.float64) for x in weights]
    ms = [np.zeros_like(x) for x in w]
    multipliers = [1.0] * len(w) if multipliers is None else multipliers
    for stepGrads, lr in zip(grads, learnRates):
        for i, g in enumerate(stepGrads):
            g = np.asarray(g, dtype=np.float64)
            ms[i] = factor * ms[i] + (1 - factor) * g * g
            den = np.sqrt(ms[i] + epsilon) if epsInSqrt else np.sqrt(ms[i]) + epsilon
            w[i] = w[i] - lr * multipliers[i] * g / den
    return w, ms


def sgd_reference(weights: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]], learnRates: Sequence[float],
                  multipliers: Optional[Sequence[float]] = None) -> list[np.ndarray]:
    """Weights after plain gradient descent ``w -= lr * mult * g`` (float64)."""
    w = [np.array(x, dtype=np.float64) for x in weights]
    multipliers = [1.0] * len(w) if multipliers is None else multipliers
    for stepGrads, lr in zip(grads, learnRates):
        for i, g in enumerate(stepGrads):
            w[i] = w[i] - lr * multipliers[i] * np.asarray(g, dtype=np.float64)
    return w


def make_variables(weights: Sequence[np.ndarray], multipliers: Optional[Sequence[float]] = None) -> list:
    """Variables ``v0, v1, ...`` holding copies of ``weights``, with the given learning-rate multipliers."""
    multipliers = [1.0] * len(weights) if multipliers is None else multipliers
    return [Variable(w.copy(), name=f"v{i}", learnRate=m) for i, (w, m) in enumerate(zip(weights, multipliers))]


def run_optimizer(optimizer: Any, variables: Sequence[Any], grads: Sequence[Sequence[np.ndarray]],
                  learnRates: Sequence[float], useGlobalState: bool) -> list[np.ndarray]:
    """Set ``optimizer`` up on ``variables``, then per step set ``learnRate`` and the gradients and update.

    Returns the final weights as host arrays.
    """
    backend = backends.current()
    optimizer.setupOn(list(variables), useGlobalState=useGlobalState)
    for stepGrads, lr in zip(grads, learnRates):
        optimizer.learnRate = lr
        optimizer.zeroGradParams()
        for var, g in zip(variables, stepGrads):
            var.grad[...] = backend.to_device(g)
        assert optimizer.update() is True
    return [backend.to_host(var.data) for var in variables]


def raw_apply_rmsprop(w: np.ndarray, g: np.ndarray, ms: np.ndarray, mg: np.ndarray, mom: np.ndarray, lr: float,
                      rho: float, momentum: float, epsilon: float, centered: bool) -> tuple:
    """One step of TF's (and MindSpore's) raw ApplyRMSProp / ApplyCenteredRMSProp as documented; returns
    ``(w, ms, mg, mom)``. eps inside the root, lr inside the momentum buffer, no clamp."""
    ms = rho * ms + (1 - rho) * g * g
    if centered:
        mg = rho * mg + (1 - rho) * g
        mom = momentum * mom + lr * g / np.sqrt(ms - mg * mg + epsilon)
    else:
        mom = momentum * mom + lr * g / np.sqrt(ms + epsilon)
    return w - mom, ms, mg, mom


def run_named(optimizer: Any, weights: dict[str, np.ndarray], grads: Sequence[dict[str, np.ndarray]],
              useGlobalState: bool, scale: float = 1.0,
              multipliers: Optional[dict[str, float]] = None) -> dict[str, np.ndarray]:
    """Set ``optimizer`` up on Variables named like ``weights`` (with learning-rate ``multipliers``), then per
    step load the gradients (times ``scale``, as a scaled loss gives) and update; return the host weights."""
    backend = backends.current()
    multipliers = multipliers or {}
    variables = {name: Variable(w.copy(), name=name, learnRate=multipliers.get(name, 1.0))
                 for name, w in weights.items()}
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for step in grads:
        optimizer.zeroGradParams()
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g * scale)
        assert optimizer.update() is True
    return {name: backend.to_host(var.data) for name, var in variables.items()}
