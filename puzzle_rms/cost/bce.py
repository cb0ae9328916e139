"""BCE: binary cross-entropy on logits with 0/1 integer labels."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends
from puzzle_rms.cost.cost import Cost, CostError


class BCE(Cost):
    r"""Binary cross-entropy of logits :math:`p_i` against labels :math:`t_i \in \{0, 1\}`, with
    :math:`s_i = 1 / (1 + e^{-p_i})` and :math:`n` the number of elements:

    .. math::
        E = -\frac{1}{n} \sum_i \left[ t_i \log s_i + (1 - t_i) \log(1 - s_i) \right], \qquad
        \frac{\partial E}{\partial p_i} = \frac{s_i - t_i}{n}.

    ``validate`` gives the error rate: the fraction of elements whose logit has the wrong sign
    (:math:`p_i \le 0` for label 1, :math:`p_i > 0` for label 0). Labels are integers with as many
    elements per sample as the scores (shape ``(N,)`` for scores ``(N, 1)``).
    """

    def checkDataShape(self, pred: Any, target: Any) -> None:
        if pred.size == 0 or pred.dtype.kind != "f":
            raise CostError(f"BCE: scores of shape {tuple(pred.shape)} and dtype {pred.dtype}; "
                            "expected non-empty float logits")
        if target.dtype.kind not in "iu" or target.size != pred.size or target.shape[:1] != pred.shape[:1]:
            raise CostError(f"BCE: labels of shape {tuple(target.shape)} and dtype {target.dtype}; expected "
                            f"integer labels with {pred.size} elements, {pred.shape[0]} samples")
        low, high = int(target.min()), int(target.max())
        if low < 0 or high > 1:
            raise CostError(f"BCE: labels span [{low}, {high}]; expected labels 0 or 1")

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        xp = backends.current().xp
        logits = pred.astype(self.calctype(pred), copy=False)
        labels = target.reshape(pred.shape).astype(logits.dtype)
        # -log s = log(1 + e^-p), -log(1 - s) = log(1 + e^p): logaddexp keeps both finite
        losses = xp.where(labels == 1, xp.logaddexp(0, -logits), xp.logaddexp(0, logits))
        grad = (0.5 * (xp.tanh(0.5 * logits) + 1) - labels) / pred.size
        return float(losses.sum()) / pred.size * pred.shape[0], grad.astype(pred.dtype, copy=False)

    def calcVal(self, pred: Any, target: Any) -> float:
        labels = target.reshape(pred.shape)
        wrong = ((labels == 1) & (pred <= 0)) | ((labels != 1) & (pred > 0))
        return float(wrong.sum()) / pred.size
