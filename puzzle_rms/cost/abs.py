"""Abs: the mean absolute error (L1), PuzzleLib's normalisation."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends
from puzzle_rms.cost.cost import Cost, checkSameShape


class Abs(Cost):
    r"""Mean absolute error over all elements.

    .. math::
        E = \frac{1}{n} \sum_i |p_i - t_i|, \qquad \frac{\partial E}{\partial p_i} = \frac{\mathrm{sign}(p_i - t_i)}{n},

    with :math:`n` the number of elements; ``validate`` gives :math:`E` too.
    """

    def checkDataShape(self, pred: Any, target: Any) -> None:
        checkSameShape("Abs", pred, target)

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        diff = self.difference(pred, target)
        grad = backends.current().xp.sign(diff) / diff.size
        return float(abs(diff).sum()) / diff.size * pred.shape[0], grad.astype(pred.dtype, copy=False)

    def calcVal(self, pred: Any, target: Any) -> float:
        diff = self.difference(pred, target)
        return float(abs(diff).sum()) / diff.size
