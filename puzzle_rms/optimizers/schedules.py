"""Learning rates that change with the step: floats, callables, sequences and schedule objects.

A schedule is any callable ``schedule(step) -> float`` where ``step`` counts the
updates done before this one (0 for the first update), as in Keras and optax.
A sequence (list, tuple, array) gives element ``step`` to update ``step`` and
keeps its last element afterwards (MindSpore's learning-rate array gives element ``step`` the
same way, and raises once the steps outrun it).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import numpy as np

from puzzle_rms.validation import check_bool, check_range, check_real

LearnRate = Union[float, Callable[[int], float], Sequence[float], np.ndarray]


def validate_learn_rate(owner: str, learnRate: Any, name: str = "learnRate") -> Any:
    """Check a learning-rate specification without evaluating callables; return it unchanged.

    ``name`` is the argument's name in the caller's API (``lr`` for a torch preset).
    """
    if callable(learnRate):
        return learnRate
    if isinstance(learnRate, (list, tuple, np.ndarray)):
        values = np.asarray(learnRate)
        if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
            raise ValueError(f"{owner}: a {name} sequence must be a non-empty 1-D sequence of numbers, "
                             f"got {learnRate!r} (shape {values.shape}, dtype {values.dtype})")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{owner}: every {name} in the sequence must be finite and >= 0, got {learnRate!r}")
        return learnRate
    check_range(owner, name, learnRate, 0.0)
    return learnRate


def learn_rate_at(owner: str, learnRate: LearnRate, step: int) -> float:
    """The learning rate of update number ``step`` (0-based), checked to be finite and >= 0."""
    if callable(learnRate):
        value = learnRate(step)
    elif isinstance(learnRate, (list, tuple, np.ndarray)):
        value = learnRate[min(step, len(learnRate) - 1)]
    else:
        value = learnRate
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: the learning rate for step {step} must be finite and >= 0, got {value!r}")
    return value


class ExponentialDecay:
    """``lr(step) = initial * decayRate ** (step / decaySteps)``; with ``staircase`` the exponent is floored."""

    def __init__(self, initial: float, decayRate: float, decaySteps: int, staircase: bool = False) -> None:
        self.initial = check_range("ExponentialDecay", "initial", initial, 0.0)
        self.decayRate = check_range("ExponentialDecay", "decayRate", decayRate, 0.0, lowOpen=True)
        self.decaySteps = check_range("ExponentialDecay", "decaySteps", decaySteps, 0.0, lowOpen=True)
        self.staircase = check_bool("ExponentialDecay", "staircase", staircase)

    def __call__(self, step: int) -> float:
        exponent = step / self.decaySteps
        return self.initial * self.decayRate ** (math.floor(exponent) if self.staircase else exponent)


class CosineDecay:
    """``lr(step) = initial * ((1 - alpha) * (1 + cos(pi * min(step, decaySteps) / decaySteps)) / 2 + alpha)``."""

    def __init__(self, initial: float, decaySteps: int, alpha: float = 0.0) -> None:
        self.initial = check_range("CosineDecay", "initial", initial, 0.0)
        self.decaySteps = check_range("CosineDecay", "decaySteps", decaySteps, 0.0, lowOpen=True)
        self.alpha = check_range("CosineDecay", "alpha", alpha, 0.0, 1.0)

    def __call__(self, step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, self.decaySteps) / self.decaySteps))
        return self.initial * ((1 - self.alpha) * cosine + self.alpha)


class PiecewiseConstant:
    """``values[i]`` while ``boundaries[i-1] <= step < boundaries[i]``; ``len(values) == len(boundaries) + 1``."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstant: values must have len(boundaries) + 1 = {len(boundaries) + 1} "
                             f"entries, got {len(values)}")
        for boundary in boundaries:
            check_real("PiecewiseConstant", "boundaries", boundary)
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"PiecewiseConstant: boundaries must be increasing, got {list(boundaries)!r}")
        self.boundaries = list(boundaries)
        self.values = [check_range("PiecewiseConstant", "values", v, 0.0) for v in values]

    def __call__(self, step: int) -> float:
        return self.values[int(np.searchsorted(self.boundaries, step, side="right"))]


class InverseTimeDecay:
    """``lr(step) = learnRate(step) / (1 + decayRate * step)``: Keras 2 legacy optimizers' ``decay`` argument.

    ``learnRate`` is a float or any schedule of this module (then its value at ``step`` is divided).
    """

    def __init__(self, learnRate: LearnRate, decayRate: float) -> None:
        self.learnRate = validate_learn_rate("InverseTimeDecay", learnRate)
        self.decayRate = check_range("InverseTimeDecay", "decayRate", decayRate, 0.0)

    def __call__(self, step: int) -> float:
        return learn_rate_at("InverseTimeDecay", self.learnRate, step) / (1.0 + self.decayRate * step)
