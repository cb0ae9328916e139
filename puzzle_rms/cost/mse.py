"""MSE: the mean squared error, halved, with PuzzleLib's normalisation."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends


class MSE:
    r"""Mean squared error over all elements, halved (PuzzleLib's convention).

    .. math::
        E = \frac{1}{2 n} \sum_i (p_i - t_i)^2, \qquad
        \frac{\partial E}{\partial p_i} = \frac{p_i - t_i}{n},

    with :math:`n` the number of elements of the predictions (batch times features).

    ``error, grad = MSE()(pred, target)``: ``error`` is a Python float, ``grad`` has the shape and dtype of ``pred``.
    float16 predictions are computed in float32.
    """

    def __call__(self, pred: Any, target: Any) -> tuple[float, Any]:
        backend = backends.current()
        pred, target = (x if backend.owns(x) else backend.to_device(x) for x in (pred, target))
        if pred.shape != target.shape:
            raise ValueError(f"MSE: target of shape {tuple(target.shape)} does not match pred of shape "
                             f"{tuple(pred.shape)}; expected the same shape")
        if pred.size == 0 or pred.dtype.kind != "f":
            raise ValueError(f"MSE: pred of shape {tuple(pred.shape)} and dtype {pred.dtype}; "
                             "expected a non-empty float array")
        calctype = backend.xp.result_type(pred.dtype, backend.xp.float32)
        diff = pred.astype(calctype, copy=False) - target.astype(calctype, copy=False)
        error = float(backend.xp.vdot(diff, diff)) / (2 * diff.size)
        return error, (diff / diff.size).astype(pred.dtype, copy=False)
