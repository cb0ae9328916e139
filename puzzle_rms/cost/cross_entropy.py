"""CrossEntropy: softmax followed by the negative log-likelihood of integer class labels."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends


class CrossEntropy:
    r"""Softmax cross-entropy on scores of shape ``(batch, classes)`` and integer labels of shape ``(batch,)``.

    .. math::
        s_{bc} = \frac{e^{p_{bc} - m_b}}{\sum_k e^{p_{bk} - m_b}},\ m_b = \max_k p_{bk}, \qquad
        E = -\frac{1}{B} \sum_b \log s_{b t_b}, \qquad
        \frac{\partial E}{\partial p_{bc}} = \frac{s_{bc} - [c = t_b]}{B}.

    ``error, grad = CrossEntropy()(pred, target)``: ``error`` is a Python float, ``grad`` has the shape and
    dtype of ``pred``. float16 scores are computed in float32.
    """

    def _check(self, pred: Any, target: Any) -> tuple[Any, Any]:
        backend = backends.current()
        pred, target = (x if backend.owns(x) else backend.to_device(x) for x in (pred, target))
        if pred.ndim != 2 or pred.size == 0 or pred.dtype.kind != "f":
            raise ValueError(f"CrossEntropy: pred of shape {tuple(pred.shape)} and dtype {pred.dtype}; "
                             "expected float scores of shape (batch, classes), both > 0")
        if target.shape != pred.shape[:1] or target.dtype.kind not in "iu":
            raise ValueError(f"CrossEntropy: target of shape {tuple(target.shape)} and dtype {target.dtype}; "
                             f"expected integer labels of shape ({pred.shape[0]},)")
        if int(target.min()) < 0 or int(target.max()) >= pred.shape[1]:
            raise ValueError(f"CrossEntropy: target labels span [{int(target.min())}, {int(target.max())}]; "
                             f"expected labels in [0, {pred.shape[1] - 1}]")
        return pred, target

    def __call__(self, pred: Any, target: Any) -> tuple[float, Any]:
        pred, target = self._check(pred, target)
        xp = backends.current().xp
        scores = pred.astype(xp.result_type(pred.dtype, xp.float32), copy=False)
        shifted = scores - scores.max(axis=1, keepdims=True)
        logProbs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        rows = xp.arange(pred.shape[0])
        error = -float(logProbs[rows, target].sum()) / pred.shape[0]
        grad = xp.exp(logProbs)
        grad[rows, target] -= 1
        grad /= pred.shape[0]
        return error, grad.astype(pred.dtype, copy=False)

    def getAccuracy(self, pred: Any, target: Any) -> float:
        """The fraction of rows whose highest score is at the target label."""
        pred, target = self._check(pred, target)
        return float((pred.argmax(axis=1) == target).mean())
