"""Optimizer hooks: PuzzleLib's WeightDecay."""
from __future__ import annotations

from typing import Any

from puzzle_rms.validation import check_range
from puzzle_rms.variable import Variable


class WeightDecay:
    r"""PuzzleLib's L2 hook: before each update, :math:`g \mathrel{+}= rate \cdot wc \cdot w` for every Variable
    with ``wc > 0`` (``Variable.wc`` is 0 by default, so only the variables given a ``wc`` decay).

    Unlike PuzzleLib, where a hook sees only the one flat Variable of global state (whose ``wc`` is 0),
    the hook reaches every Variable in both state modes. With a loss scale the added term is divided by
    it like the gradient.
    """

    def __init__(self, rate: float) -> None:
        self.rate = check_range("WeightDecay", "rate", rate, 0.0)

    def __call__(self, var: Variable, state: Any = None, stream: Any = None) -> None:
        if var.wc > 0:
            var.grad += var.data.dtype.type(self.rate * var.wc) * var.data
