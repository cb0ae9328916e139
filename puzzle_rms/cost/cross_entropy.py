"""CrossEntropy: softmax over the classes followed by the negative log-likelihood of integer labels."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.cost.cost import Cost, CostError


class CrossEntropy(Cost):
    r"""Softmax cross-entropy on scores of shape ``(N, C)`` or spatial ``(N, C, ...)`` and integer labels of
    shape ``(N,)`` or ``(N, ...)``, PuzzleLib's normalisation.

    With :math:`s` the softmax over the classes (axis 1), :math:`S` the number of spatial positions (1 for
    ``(N, C)``), :math:`t_{nm}` the label at sample :math:`n`, position :math:`m`, and class weights
    :math:`w` (all 1 by default):

    .. math::
        E = -\frac{1}{N S} \sum_{n, m} w_{t_{nm}} \log s_{n t_{nm} m}, \qquad
        G_{ncm} = \frac{w_c \, (s_{ncm} - [c = t_{nm}])}{N}.

    Without weights and spatial axes :math:`G` is exactly :math:`\partial E / \partial p`; with them it is
    PuzzleLib's gradient: the class weight :math:`w_c` of each score (not of the label) and no :math:`1/S`,
    so spatial gradients are :math:`S` times the derivative of the mean. ``validate`` gives the error
    rate: the fraction of positions whose highest score is not at the label.

    Parameters
    ----------
    maxlabels : int, optional
        When given, the number of classes the scores must have.
    weights : array of shape (C,), optional
        Per-class weights.

    float16 scores are computed in float32; ``grad`` has the dtype of the scores.
    """

    def __init__(self, maxlabels: Optional[int] = None, weights: Any = None) -> None:
        super().__init__()
        if maxlabels is not None and (isinstance(maxlabels, bool) or not isinstance(maxlabels, (int, np.integer))
                                      or maxlabels < 1):
            raise ValueError(f"CrossEntropy: maxlabels must be None or a positive integer, got {maxlabels!r}")
        self.maxlabels = maxlabels
        self.mostProb: Any = None  # the predicted class of each position, set by validate
        self.weights = None
        if weights is not None:
            backend = backends.current()
            weights = weights if backend.owns(weights) else backend.to_device(np.asarray(weights))
            if weights.ndim != 1 or weights.dtype.kind != "f":
                raise ValueError(f"CrossEntropy: weights must be a 1-D float array (one weight per class), got "
                                 f"shape {tuple(weights.shape)} and dtype {weights.dtype}")
            self.weights = weights

    def checkDataShape(self, pred: Any, target: Any) -> None:
        if pred.ndim < 2 or pred.size == 0 or pred.dtype.kind != "f":
            raise CostError(f"CrossEntropy: pred of shape {tuple(pred.shape)} and dtype {pred.dtype}; "
                            "expected float scores of shape (batch, classes, ...), all > 0")
        expected = (pred.shape[0],) + tuple(pred.shape[2:])
        if tuple(target.shape) != expected or target.dtype.kind not in "iu":
            raise CostError(f"CrossEntropy: target of shape {tuple(target.shape)} and dtype {target.dtype}; "
                            f"expected integer labels of shape {expected}")
        classes = pred.shape[1]
        if self.maxlabels is not None and classes != self.maxlabels:
            raise CostError(f"CrossEntropy: scores have {classes} classes; expected maxlabels={self.maxlabels}")
        if self.weights is not None and self.weights.shape[0] != classes:
            raise CostError(f"CrossEntropy: {self.weights.shape[0]} class weights for scores with {classes} classes")
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= classes:
            raise CostError(f"CrossEntropy: target labels span [{low}, {high}]; expected labels in [0, {classes - 1}]")

    @staticmethod
    def _flat(pred: Any, target: Any) -> tuple[Any, Any]:
        """Scores as (N, C, S) and labels as (N, S)."""
        return pred.reshape(pred.shape[0], pred.shape[1], -1), target.reshape(target.shape[0], -1)

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        xp = backends.current().xp
        scores, labels = self._flat(pred, target)
        scores = scores.astype(self.calctype(pred), copy=False)
        batch, classes, spatial = scores.shape
        shifted = scores - scores.max(axis=1, keepdims=True)
        logProbs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        picked = xp.take_along_axis(logProbs, labels[:, None, :].astype(np.int64), axis=1)[:, 0, :]
        onehot = labels[:, None, :] == xp.arange(classes)[None, :, None]
        grad = xp.exp(logProbs) - onehot
        if self.weights is None:
            summed = -float(picked.sum()) / spatial
        else:
            weights = self.weights.astype(scores.dtype, copy=False)
            summed = -float((weights[labels] * picked).sum()) / spatial
            grad *= weights[None, :, None]
        grad /= batch
        return summed, grad.reshape(pred.shape).astype(pred.dtype, copy=False)

    def calcVal(self, pred: Any, target: Any) -> float:
        scores, labels = self._flat(pred, target)
        self.mostProb = scores.argmax(axis=1).reshape(target.shape)
        return float((self.mostProb != target).sum()) / labels.size

    def getAccuracy(self, pred: Any, target: Any) -> float:
        """The fraction of positions whose highest score is at the target label (1 - ``validate``)."""
        pred, target = self._onBackend(pred, target)
        self.checkDataShape(pred, target)
        scores, labels = self._flat(pred, target)
        return float((scores.argmax(axis=1) == labels).mean())
