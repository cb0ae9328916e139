"""MSE: the mean squared error, halved, with PuzzleLib's normalisation."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends
from puzzle_rms.cost.cost import Cost, checkSameShape


class MSE(Cost):
    r"""Mean squared error over all elements, halved (PuzzleLib's convention).

    .. math::
        E = \frac{1}{2 n} \sum_i (p_i - t_i)^2, \qquad
        \frac{\partial E}{\partial p_i} = \frac{p_i - t_i}{n},

    with :math:`n` the number of elements of the predictions (batch times features). ``validate`` gives
    :math:`E` too. float16 predictions are computed in float32; ``grad`` has the dtype of ``pred``.
    """

    def checkDataShape(self, pred: Any, target: Any) -> None:
        checkSameShape("MSE", pred, target)

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        diff = self.difference(pred, target)
        error = float(backends.current().xp.vdot(diff, diff)) / (2 * diff.size)
        return error * pred.shape[0], (diff / diff.size).astype(pred.dtype, copy=False)

    def calcVal(self, pred: Any, target: Any) -> float:
        diff = self.difference(pred, target)
        return float(backends.current().xp.vdot(diff, diff)) / (2 * diff.size)
