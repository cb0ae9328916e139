"""Test helpers: plain RMSProp and SGD through the library's reference, the textbook statement of every
RMSProp option, TF's raw ops, and the drivers (Variables, optimizer loop) that run an optimizer.

:func:`rmsprop_reference` and :func:`sgd_reference` run :mod:`puzzle_rms.backends.reference`, the
library's one statement of the kernels' math, over the tensors as segments of one flat float64 buffer:
the backends' optimizers are compared with it. :func:`textbook_rmsprop` is independent of it (no code
from ``backends`` or ``puzzle_rms``), written from RMSProp's docstring, one tensor at a time::

    ms  = factor * ms + (1 - factor) * g**2
    den = sqrt(ms + eps)   if epsInSqrt   else   sqrt(ms) + eps
    w   = w - lr * mult * g / den                 (and every option, as the docstring states it)

and checks the reference (tests/test_reference.py) and the optimizer end to end.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.backends import reference
from puzzle_rms.backends.backend import Backend, hyper_vector

SHAPES = [(3, 4), (7,), (2, 3, 5), (1,), (150, 130)]  # the last spans several kernel blocks


def random_problem(gen: np.random.Generator, shapes: Sequence[tuple], steps: int,
                   dtype: Any = np.float32) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial weights and, per step, one gradient per tensor whose scale changes from step to step (1e-2 .. 10)."""
    weights = [gen.standard_normal(shape).astype(dtype) for shape in shapes]
    grads = [[(10.0 ** gen.uniform(-2, 1) * gen.standard_normal(shape)).astype(dtype) for shape in shapes]
             for _ in range(steps)]
    return weights, grads


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(x).astype(np.float64) for x in arrays])


def _split(flat: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    sizes = [x.size for x in like]
    return [part.reshape(x.shape) for part, x in zip(np.split(flat, np.cumsum(sizes)[:-1]), like)]


def _segment_table(lr: float, multipliers: np.ndarray) -> np.ndarray:
    """``[lr, wd, wScale, segGradScale]`` per tensor: no weight decay, no norm clipping."""
    ones = np.ones_like(multipliers)
    return np.stack([lr * multipliers, 0 * ones, ones, ones], axis=1)


def rmsprop_reference(weights: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]],
                      learnRates: Sequence[float], factor: float, epsilon: float, epsInSqrt: bool,
                      multipliers: Optional[Sequence[float]] = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and mean squares after ``len(grads)`` steps of plain RMSProp (float64, zero initial state),
    computed by :func:`puzzle_rms.backends.reference.rmsprop_update`."""
    layout = Backend().make_layout([x.size for x in weights])
    w, ms = _flat(weights), np.zeros(layout.size)
    mult = np.ones(len(weights)) if multipliers is None else np.asarray(multipliers, dtype=np.float64)
    hyper = hyper_vector(rho=factor, oneMinusRho=1 - factor, epsIn=epsilon if epsInSqrt else 0.0,
                         epsOut=0.0 if epsInSqrt else epsilon)
    for stepGrads, lr in zip(grads, learnRates):
        reference.rmsprop_update(w, _flat(stepGrads), ms, None, None, layout, _segment_table(lr, mult), hyper)
    return _split(w, weights), _split(ms, weights)


def sgd_reference(weights: Sequence[np.ndarray], grads: Sequence[Sequence[np.ndarray]], learnRates: Sequence[float],
                  multipliers: Optional[Sequence[float]] = None) -> list[np.ndarray]:
    """Weights after plain gradient descent ``w -= lr * mult * g`` (float64), computed by
    :func:`puzzle_rms.backends.reference.sgd_update`."""
    layout = Backend().make_layout([x.size for x in weights])
    w = _flat(weights)
    mult = np.ones(len(weights)) if multipliers is None else np.asarray(multipliers, dtype=np.float64)
    for stepGrads, lr in zip(grads, learnRates):
        reference.sgd_update(w, _flat(stepGrads), None, layout, _segment_table(lr, mult), hyper_vector())
    return _split(w, weights)


def textbook_rmsprop(w0: np.ndarray, grads: Sequence[np.ndarray], learnRate: Any = 0.05, factor: float = 0.9,
                     epsilon: float = 1e-5, epsInSqrt: bool = False, momentum: float = 0.0, lrInMomentum: bool = True,
                     nesterov: bool = False, centered: bool = False, initialMeanSquare: float = 0.0,
                     biasCorrection: bool = False, weightDecay: float = 0.0, decoupledWeightDecay: float = 0.0,
                     wdBeforeClip: bool = True, clipValue: Optional[float] = None,
                     clipWeights: Optional[float] = None, maximize: bool = False, lossScale: float = 1.0,
                     clipNorm: Optional[float] = None, multiplier: float = 1.0) -> tuple[np.ndarray, dict]:
    """One tensor through ``len(grads)`` RMSProp steps, literally as RMSProp's docstring states it (float64).

    The defaults are RMSProp's (factor 0.9, epsilon 1e-5, eps outside the root, lr inside the momentum). Written
    from the docstring, without any code from ``backends`` or ``puzzle_rms``: it checks the library's reference
    (tests/test_reference.py) and the optimizer end to end (tests/test_rmsprop_options.py)."""
    w = np.array(w0, dtype=np.float64)
    ms = np.full_like(w, initialMeanSquare)
    mg = np.zeros_like(w)
    mom = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        lr = (learnRate(t - 1) if callable(learnRate) else learnRate) * multiplier
        g = np.asarray(g, dtype=np.float64) / lossScale
        if maximize:
            g = -g
        if clipNorm is not None:
            g = g * min(1.0, clipNorm / np.linalg.norm(g))
        w = w - lr * decoupledWeightDecay * w
        if wdBeforeClip:
            g = g + weightDecay * w
        if clipValue is not None:
            g = np.clip(g, -clipValue, clipValue)
        if not wdBeforeClip:
            g = g + weightDecay * w
        ms = factor * ms + (1 - factor) * g * g
        mg = factor * mg + (1 - factor) * g
        correction = 1.0 / (1.0 - factor ** t) if biasCorrection else 1.0
        variance = np.maximum(correction * ms - (correction * mg) ** 2, 0.0) if centered else correction * ms
        den = np.sqrt(variance + epsilon) if epsInSqrt else np.sqrt(variance) + epsilon
        if momentum > 0 and nesterov:
            mom = momentum * mom + lr * g / den
            w = w - (lr * g / den + momentum * mom)
        elif momentum > 0 and lrInMomentum:
            mom = momentum * mom + lr * g / den
            w = w - mom
        elif momentum > 0:
            mom = momentum * mom + g / den
            w = w - lr * mom
        else:
            w = w - lr * g / den
        if clipWeights is not None:
            w = np.clip(w, -clipWeights, clipWeights)
    return w, {"ms": ms, "mg": mg, "mom": mom}


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
