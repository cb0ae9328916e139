"""RMSPropGraves: Graves' centered RMSProp with momentum, PuzzleLib's names and defaults."""
from __future__ import annotations

from typing import Any

from puzzle_rms.optimizers.rmsprop import RMSProp


class RMSPropGraves(RMSProp):
    r"""PuzzleLib's ``RMSPropGraves(learnRate=1e-4, alpha=0.95, momRate=0.9, epsilon=1e-4)`` (Graves 2013),
    the fused RMSProp kernel with ``centered=True, epsInSqrt=True, momentum=momRate`` (lr inside the buffer):

    .. math::
        ms \leftarrow \alpha\, ms + (1 - \alpha) g^2, \quad mg \leftarrow \alpha\, mg + (1 - \alpha) g, \quad
        m \leftarrow \mu m + \eta g / \sqrt{\max(ms - mg^2, 0) + \epsilon}, \quad w \leftarrow w - m.

    PuzzleLib's ``delta`` buffer is ``mom`` here (with the usual sign); the variance is clamped at 0 (PuzzleLib
    takes the root of a negative number when rounding makes it so). ``alpha`` and ``momRate`` are the
    RMSProp attributes ``factor`` and ``momentum``. Takes RMSProp's keyword arguments for the rest.
    """

    ATTRS = ("learnRate", "alpha", "momRate", "epsilon")

    def __init__(self, learnRate: Any = 1e-4, alpha: float = 0.95, momRate: float = 0.9, epsilon: float = 1e-4,
                 nodeinfo: Any = None, **kwargs: Any) -> None:
        super().__init__(learnRate, alpha, epsilon, nodeinfo, epsInSqrt=True, centered=True, momentum=momRate,
                         **kwargs)

    @property
    def alpha(self) -> float:
        return self.factor

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.factor = value

    @property
    def momRate(self) -> float:
        return self.momentum

    @momRate.setter
    def momRate(self, value: float) -> None:
        self.momentum = value
