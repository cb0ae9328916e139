"""Dynamic loss scaling for mixed precision: skip overflowing steps, lower the scale, raise it again later."""
from __future__ import annotations

from typing import Any, Mapping

from puzzle_rms.validation import check_int, check_range


class DynamicLossScale:
    """A loss scale that adapts to overflow (as torch's GradScaler and Keras' LossScaleOptimizer do).

    Multiply the loss gradient by ``scale`` before ``backward``; the optimizer
    divides it out. When a gradient is not finite the step is skipped (no
    parameter or state changes) and ``scale *= backoffFactor``; after
    ``growthInterval`` finite steps in a row ``scale *= growthFactor``.

    Parameters
    ----------
    initialScale : float
        Starting scale (2**15 by default).
    growthFactor, backoffFactor : float
        Factors applied after a run of good steps / after an overflow.
    growthInterval : int
        Number of consecutive finite steps before growing.
    minScale : float
        The scale never goes below this.
    """

    def __init__(self, initialScale: float = 2.0 ** 15, growthFactor: float = 2.0, backoffFactor: float = 0.5,
                 growthInterval: int = 2000, minScale: float = 1.0) -> None:
        owner = "DynamicLossScale"
        self.scale = check_range(owner, "initialScale", initialScale, 0.0, lowOpen=True)
        self.growthFactor = check_range(owner, "growthFactor", growthFactor, 1.0)
        self.backoffFactor = check_range(owner, "backoffFactor", backoffFactor, 0.0, 1.0, lowOpen=True)
        self.growthInterval = check_int(owner, "growthInterval", growthInterval, 1)
        self.minScale = check_range(owner, "minScale", minScale, 0.0, lowOpen=True)
        self.goodSteps = 0

    def record(self, finite: bool) -> None:
        """Adapt the scale after a step whose gradients were (not) all finite."""
        if finite:
            self.goodSteps += 1
            if self.goodSteps >= self.growthInterval:
                self.scale *= self.growthFactor
                self.goodSteps = 0
        else:
            self.scale = max(self.scale * self.backoffFactor, self.minScale)
            self.goodSteps = 0

    def settings(self) -> dict[str, Any]:
        """The configuration (everything but the current scale and step count), as JSON values."""
        return {"growthFactor": self.growthFactor, "backoffFactor": self.backoffFactor,
                "growthInterval": self.growthInterval, "minScale": self.minScale}

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume the scaler exactly: ``{"scale": float, "goodSteps": int}``."""
        return {"scale": self.scale, "goodSteps": self.goodSteps}

    def loadState(self, state: Any) -> None:
        """Restore what :meth:`state` returned; it is validated (:func:`check_loss_scale_state`) before any change."""
        state = check_loss_scale_state("DynamicLossScale.loadState", state)
        self.scale, self.goodSteps = state["scale"], state["goodSteps"]


def check_loss_scale_state(owner: str, state: Any) -> dict[str, Any]:
    """``state`` as ``{"scale": float, "goodSteps": int}``: exactly those keys, scale finite and > 0, goodSteps >= 0.

    Raises TypeError or ValueError naming ``owner`` and the bad entry.
    """
    if not isinstance(state, Mapping) or set(state) != {"scale", "goodSteps"}:
        raise TypeError(f"{owner}: the loss-scale state must be a mapping with the keys 'scale' and 'goodSteps', "
                        f"got {state!r}")
    return {"scale": check_range(owner, "loss-scale state 'scale'", state["scale"], 0.0, lowOpen=True),
            "goodSteps": check_int(owner, "loss-scale state 'goodSteps'", state["goodSteps"], 0)}
