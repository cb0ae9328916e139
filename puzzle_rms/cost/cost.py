"""Cost: the base of every loss, with PuzzleLib's error accumulator, validation and CostError."""
from __future__ import annotations

from typing import Any, Union

from puzzle_rms import backends


class CostError(ValueError):
    """Labels or targets a cost cannot take (out-of-range labels, mismatched shapes)."""


class Cost:
    """``error, grad = cost(pred, target)``, as in PuzzleLib, with ``grad`` = dL/dpred (the usual sign).

    Every call records the batch's error for :meth:`getError` and adds ``error * batch`` to an accumulator,
    so :meth:`getMeanError` is :math:`\\sum_i e_i n_i / \\sum_i n_i` over the calls since
    :meth:`resetAccumulator` (``n_i`` the batch size, ``pred.shape[0]``). :meth:`validate` computes the
    validation metric (for the classification costs the error rate, not the loss) without touching the
    accumulator. Subclasses implement ``calcErrorAndGrad`` (the batch-summed error :math:`e_i n_i` and the
    gradient) and ``calcVal``; errors are Python floats.
    """

    def __init__(self) -> None:
        self.error: Any = None
        self.valError: Any = None
        self.grad: Any = None
        self.devErr = 0.0
        self.resetAccumulator()

    def resetAccumulator(self) -> None:
        """Forget the errors of earlier calls (``getMeanError`` starts again)."""
        self.accumErr = 0.0
        self.batchsize = 0
        self.numOfSamples = 0

    def __call__(self, pred: Any, target: Any, queryError: bool = True) -> Union[tuple[float, Any], Any]:
        """The batch's mean error and dL/dpred (or only dL/dpred when ``queryError`` is False)."""
        pred, target = self._onBackend(pred, target)
        self.checkDataShape(pred, target)
        summed, self.grad = self.calcErrorAndGrad(pred, target)
        self.devErr = float(summed)
        self.accumErr += self.devErr
        self.batchsize = int(pred.shape[0])
        self.numOfSamples += self.batchsize
        self.error = self.devErr / self.batchsize
        return (self.error, self.grad) if queryError else self.grad

    def getError(self) -> float:
        """The mean error of the last call."""
        if self.batchsize == 0:
            raise RuntimeError(f"{type(self).__name__}.getError: no batch has been given since the last reset")
        return self.devErr / self.batchsize

    def getMeanError(self) -> float:
        """The sample-weighted mean error of every call since :meth:`resetAccumulator`."""
        if self.numOfSamples == 0:
            raise RuntimeError(f"{type(self).__name__}.getMeanError: no batch has been given since the last reset")
        return self.accumErr / self.numOfSamples

    def getValError(self) -> Any:
        """What the last :meth:`validate` returned."""
        return self.valError

    def validate(self, pred: Any, target: Any) -> float:
        """The validation metric on one batch (see the subclass); the accumulator is untouched."""
        pred, target = self._onBackend(pred, target)
        self.checkDataShape(pred, target)
        self.valError = float(self.calcVal(pred, target))
        return self.valError

    @staticmethod
    def _onBackend(pred: Any, target: Any) -> tuple[Any, Any]:
        backend = backends.current()
        return tuple(x if backend.owns(x) else backend.to_device(x) for x in (pred, target))

    @staticmethod
    def calctype(pred: Any) -> Any:
        """The dtype the error is computed in: float32 for float16 predictions, else the predictions' own."""
        return backends.current().xp.result_type(pred.dtype, backends.current().xp.float32)

    def difference(self, pred: Any, target: Any) -> Any:
        """``pred - target`` in :meth:`calctype` (the elementwise costs' common first step)."""
        calctype = self.calctype(pred)
        return pred.astype(calctype, copy=False) - target.astype(calctype, copy=False)

    def checkDataShape(self, pred: Any, target: Any) -> None:
        """Raise CostError when ``pred`` and ``target`` do not fit each other."""
        raise NotImplementedError

    def calcErrorAndGrad(self, pred: Any, target: Any) -> tuple[float, Any]:
        """The batch-summed error (mean error times the batch size) and dL/dpred in ``pred``'s dtype."""
        raise NotImplementedError

    def calcVal(self, pred: Any, target: Any) -> float:
        """The validation metric of one batch."""
        raise NotImplementedError


def checkSameShape(owner: str, pred: Any, target: Any) -> None:
    """CostError unless ``pred`` and ``target`` are non-empty float arrays of one shape."""
    if pred.shape != target.shape:
        raise CostError(f"{owner}: target of shape {tuple(target.shape)} does not match pred of shape "
                        f"{tuple(pred.shape)}; expected the same shape")
    if pred.size == 0 or pred.dtype.kind != "f":
        raise CostError(f"{owner}: pred of shape {tuple(pred.shape)} and dtype {pred.dtype}; "
                        "expected a non-empty float array")
