"""Dynamic loss scaling for mixed precision: skip overflowing steps, lower the scale, raise it again later."""
from __future__ import annotations

from typing import Any, Mapping

from puzzle_rms.validation import check_float32_range, check_int, check_range

# A loss scale's reciprocal multiplies float32 gradients in the kernels: it must be a finite, normal float32.
MIN_LOSS_SCALE = 2.0 ** -126
MAX_LOSS_SCALE = 2.0 ** 64
_RANGE_REASON = ("its reciprocal multiplies the gradients in float32 kernels, where it must be a finite normal "
                 "number")


def check_fixed_loss_scale(owner: str, name: str, value: Any) -> float:
    """A fixed loss scale: a float in [MIN_LOSS_SCALE, MAX_LOSS_SCALE]."""
    return check_float32_range(owner, name, value, 0.0, lowOpen=True, least=MIN_LOSS_SCALE, high=MAX_LOSS_SCALE,
                               reason=_RANGE_REASON)


class DynamicLossScale:
    """A loss scale that adapts to overflow (as torch's GradScaler and Keras' LossScaleOptimizer do).

    Multiply the loss gradient by ``scale`` before ``backward``; the optimizer
    divides it out. When a gradient is not finite the step is skipped (no
    parameter or state changes) and ``scale *= backoffFactor``; after
    ``growthInterval`` finite steps in a row ``scale *= growthFactor``, up to :data:`MAX_LOSS_SCALE` (2**64),
    so the scale can never grow to inf (after which every step would be skipped).

    Parameters
    ----------
    initialScale : float
        Starting scale (2**15 by default).
    growthFactor, backoffFactor : float
        Factors applied after a run of good steps / after an overflow.
    growthInterval : int
        Number of consecutive finite steps before growing.
    minScale : float
        The scale never goes below this. Scales must lie in [2**-126, 2**64].
    """

    def __init__(self, initialScale: float = 2.0 ** 15, growthFactor: float = 2.0, backoffFactor: float = 0.5,
                 growthInterval: int = 2000, minScale: float = 1.0) -> None:
        owner = "DynamicLossScale"
        self.scale = check_fixed_loss_scale(owner, "initialScale", initialScale)
        self.growthFactor = check_range(owner, "growthFactor", growthFactor, 1.0)
        self.backoffFactor = check_range(owner, "backoffFactor", backoffFactor, 0.0, 1.0, lowOpen=True)
        self.growthInterval = check_int(owner, "growthInterval", growthInterval, 1)
        self.minScale = check_fixed_loss_scale(owner, "minScale", minScale)
        self.goodSteps = 0

    def record(self, finite: bool) -> None:
        """Adapt the scale after a step whose gradients were (not) all finite."""
        if finite:
            self.goodSteps += 1
            if self.goodSteps >= self.growthInterval:
                self.scale = min(self.scale * self.growthFactor, MAX_LOSS_SCALE)
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
    """``state`` as ``{"scale": float, "goodSteps": int}``: exactly those keys, scale in [MIN_LOSS_SCALE,
    MAX_LOSS_SCALE], goodSteps >= 0.

    Raises TypeError or ValueError naming ``owner`` and the bad entry.
    """
    if not isinstance(state, Mapping) or set(state) != {"scale", "goodSteps"}:
        raise TypeError(f"{owner}: the loss-scale state must be a mapping with the keys 'scale' and 'goodSteps', "
                        f"got {state!r}")
    return {"scale": check_fixed_loss_scale(owner, "loss-scale state 'scale'", state["scale"]),
            "goodSteps": check_int(owner, "loss-scale state 'goodSteps'", state["goodSteps"], 0)}
