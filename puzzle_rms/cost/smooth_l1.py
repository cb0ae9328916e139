"""SmoothL1: the Huber loss with threshold 1, PuzzleLib's normalisation."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends
from puzzle_rms.cost.cost import Cost, checkSameShape


class SmoothL1(Cost):
    r"""Smooth L1 over all elements, with :math:`d_i = p_i - t_i`:

    .. math::
        E = \frac{1}{n} \sum_i \begin{cases} d_i^2 / 2 & |d_i| < 1 \\ |d_i| - 1/2 & \text{else} \end{cases},
        \qquad \frac{\partial E}{\partial p_i} = \frac{\mathrm{clip}(d_i, -1, 1)}{n},

    with :math:`n` the number of elements; ``validate`` gives :math:`E` too.
    """

    def checkDataShape(self, pred: Any, target: Any) -> None:
        checkSameShape("SmoothL1", pred, target)

    def _terms(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = backends.current().xp
        diff = self.difference(pred, target)
        size = abs(diff)
        return diff, xp.where(size < 1, 0.5 * diff * diff, size - 0.5)

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        diff, terms = self._terms(pred, target)
        grad = backends.current().xp.clip(diff, -1, 1) / diff.size
        return float(terms.sum()) / diff.size * pred.shape[0], grad.astype(pred.dtype, copy=False)

    def calcVal(self, pred: Any, target: Any) -> float:
        diff, terms = self._terms(pred, target)
        return float(terms.sum()) / diff.size
