"""Functional raw RMSProp ops in MindSpore's argument order, run by the backends' fused kernels.

``applyRMSProp`` and ``applyCenteredRMSProp`` update ``var`` and the state arrays in place with
MindSpore's (and TF's raw ops') formulas: eps inside the root, lr inside the momentum buffer::

    ms  = decay * ms + (1 - decay) * g**2
    mg  = decay * mg + (1 - decay) * g                               (centered)
    mom = momentum * mom + lr * g / sqrt(ms [- mg**2] + epsilon)
    var = var - mom

Eps is inside the root as MindSpore documents it (its 2.x CPU ``ApplyRMSProp`` kernel puts it outside the
root in its vectorised loop and inside only for the tail elements, against its documentation). The
centered variance ``ms - mg**2`` is clamped at 0 before the root; where it is negative MindSpore's
documented formula takes ``sqrt(ms - mg**2 + eps)`` (NaN below ``-eps``), and its CPU kernel leaves that
element's ``var`` and ``mom`` unchanged below ``-eps``. ``sparseApplyRMSProp`` and
``sparseApplyCenteredRMSProp`` take ``grad`` as rows of ``var`` listed in ``indices`` and update only those
rows and their state (repeated indices summed first, or applied once per occurrence with
``duplicates="apply"``); rows not listed keep their values and state.

Arguments are checked as MindSpore documents: TypeError for an array that is not an array of the
current backend, for a dtype differing from ``var``'s, for ``decay``/``momentum``/``epsilon`` that are
not floats, for a ``learningRate`` that is neither a number nor a one-element float array, for a
numpy.matrix; ValueError for a shape differing from ``var``'s, an array that is read-only (``var`` and
the state arrays are written) or not C-contiguous, a negative learning rate, decay or momentum,
decay > 1, epsilon <= 0 and out-of-range indices. Every array is checked before any is modified, so
nothing is modified when an error is raised. Each op returns ``var``.
"""
from __future__ import annotations

import functools
from numbers import Real
from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends.backend import Backend, Layout, hyper_vector, state_dtype
from puzzle_rms.sparse import check_indices, coalesce_rows, occurrence_rounds, rows_layout
from puzzle_rms.validation import check_choice, check_range, check_real
from puzzle_rms.variable import check_updatable

DUPLICATES = ("sum", "apply")
ZERO_GRAD = ("keep", "decay")

__all__ = ["DUPLICATES", "ZERO_GRAD", "applyCenteredRMSProp", "applyRMSProp", "sparseApplyCenteredRMSProp",
           "sparseApplyRMSProp"]


def applyRMSProp(var: Any, meanSquare: Any, moment: Any, learningRate: Any, grad: Any, decay: float,
                 momentum: float, epsilon: float) -> Any:
    r"""RMSProp step in place (MindSpore ``ops.ApplyRMSProp``).

    .. math::
        s = \rho s + (1 - \rho) g^2, \quad m = \beta m + \frac{\eta}{\sqrt{s + \epsilon}} g, \quad w = w - m

    Parameters
    ----------
    var, meanSquare, moment, grad : arrays of the current backend
        Same shape and dtype (float16, float32 or float64), C-contiguous.
    learningRate : float or one-element float array
        :math:`\eta \geq 0`.
    decay : float
        :math:`\rho \in [0, 1]`.
    momentum : float
        :math:`\beta \geq 0`.
    epsilon : float
        :math:`\epsilon > 0`.

    Returns
    -------
    var, updated in place.
    """
    owner = "applyRMSProp"
    _check_arrays(owner, var, {"meanSquare": meanSquare, "moment": moment, "grad": grad})
    scalars = _check_scalars(owner, learningRate, decay, momentum, epsilon, var.dtype)
    return _apply(var, grad, meanSquare, None, moment, None, *scalars)


def applyCenteredRMSProp(var: Any, meanGrad: Any, meanSquare: Any, moment: Any, grad: Any, learningRate: Any,
                         decay: float, momentum: float, epsilon: float) -> Any:
    r"""Centered RMSProp step in place (MindSpore ``ops.ApplyCenteredRMSProp``).

    .. math::
        g_m = \rho g_m + (1 - \rho) g, \quad s = \rho s + (1 - \rho) g^2, \quad
        m = \beta m + \frac{\eta}{\sqrt{\max(s - g_m^2, 0) + \epsilon}} g, \quad w = w - m

    Arguments as :func:`applyRMSProp`, with ``meanGrad`` (:math:`g_m`) like ``var``.
    """
    owner = "applyCenteredRMSProp"
    _check_arrays(owner, var, {"meanGrad": meanGrad, "meanSquare": meanSquare, "moment": moment, "grad": grad})
    scalars = _check_scalars(owner, learningRate, decay, momentum, epsilon, var.dtype)
    return _apply(var, grad, meanSquare, meanGrad, moment, None, *scalars)


def sparseApplyRMSProp(var: Any, meanSquare: Any, moment: Any, learningRate: Any, grad: Any, indices: Any,
                       decay: float, momentum: float, epsilon: float, duplicates: str = "sum",
                       zeroGrad: str = "keep") -> Any:
    """:func:`applyRMSProp` on the rows ``var[indices]`` only (lazy: other rows and their state are untouched).

    ``grad`` has one row per index, shape ``(len(indices),) + var.shape[1:]``; ``indices`` is a 1-D integer
    array of the current backend with values in ``[0, var.shape[0])``. ``duplicates`` says what repeated
    indices do: "sum" (their rows are summed, then one step per row) or "apply" (one step per occurrence,
    in the order given, as TF's ``SparseApplyRMSProp`` kernel and MindSpore's CPU kernel do).
    ``zeroGrad`` says what an element of a listed row whose gradient is exactly 0 does to ``meanSquare``:
    "keep" leaves it as it was (MindSpore's kernel), "decay" multiplies it by ``decay`` (TF's kernel);
    ``moment`` and ``var`` take their step either way.
    """
    owner = "sparseApplyRMSProp"
    _check_arrays(owner, var, {"meanSquare": meanSquare, "moment": moment})
    _check_rows(owner, var, grad, indices)
    scalars = _check_scalars(owner, learningRate, decay, momentum, epsilon, var.dtype)
    check_choice(owner, "duplicates", duplicates, DUPLICATES)
    check_choice(owner, "zeroGrad", zeroGrad, ZERO_GRAD)
    return _apply(var, grad, meanSquare, None, moment, indices, *scalars, duplicates=duplicates,
                  keepMeanSquare=zeroGrad == "keep")


def sparseApplyCenteredRMSProp(var: Any, meanGrad: Any, meanSquare: Any, moment: Any, learningRate: Any,
                               decay: float, momentum: float, epsilon: float, grad: Any, indices: Any,
                               duplicates: str = "sum") -> Any:
    """:func:`applyCenteredRMSProp` on the rows ``var[indices]`` only, in MindSpore's argument order
    (``SparseApplyCenteredRMSProp``: the scalars before ``grad`` and ``indices``); ``grad``, ``indices`` and
    ``duplicates`` as in :func:`sparseApplyRMSProp`."""
    owner = "sparseApplyCenteredRMSProp"
    _check_arrays(owner, var, {"meanGrad": meanGrad, "meanSquare": meanSquare, "moment": moment})
    _check_rows(owner, var, grad, indices)
    scalars = _check_scalars(owner, learningRate, decay, momentum, epsilon, var.dtype)
    check_choice(owner, "duplicates", duplicates, DUPLICATES)
    return _apply(var, grad, meanSquare, meanGrad, moment, indices, *scalars, duplicates=duplicates)


# --- checks ---------------------------------------------------------------------------------------
def _check_array(owner: str, name: str, array: Any, backend: Backend) -> None:
    if not backend.owns(array):
        raise TypeError(f"{owner}: {name} must be a {backend.name} array "
                        f"({backend.array_type.__module__}.{backend.array_type.__name__}), got {type(array).__name__}")


def _check_arrays(owner: str, var: Any, others: dict[str, Any]) -> None:
    """``var`` and every array in ``others``: this backend's, contiguous, same dtype and shape as ``var``."""
    backend = backends.current()
    _check_array(owner, "var", var, backend)
    if var.dtype not in backend.dtypesSupported:
        raise TypeError(f"{owner}: var must have one of the dtypes {[str(d) for d in backend.dtypesSupported]}, "
                        f"got {var.dtype}")
    for name, array in {"var": var, **others}.items():
        _check_array(owner, name, array, backend)
        if array.dtype != var.dtype:
            raise TypeError(f"{owner}: {name} must have the dtype of var ({var.dtype}), got {array.dtype}")
        if array.shape != var.shape:
            raise ValueError(f"{owner}: {name} must have the shape of var {tuple(var.shape)}, got {tuple(array.shape)}")
        if name == "grad":  # read only
            if isinstance(array, np.matrix) or not array.flags.c_contiguous:
                raise ValueError(f"{owner}: grad must be a C-contiguous array (not a transposed or strided view, "
                                 f"not a numpy.matrix)")
        else:  # written in place: every output is checked before any is modified
            check_updatable(owner, name, array)


def _check_rows(owner: str, var: Any, grad: Any, indices: Any) -> None:
    """``grad`` holds one row of ``var`` per index; ``indices`` are valid rows of ``var``."""
    backend = backends.current()
    _check_array(owner, "grad", grad, backend)
    if var.ndim < 1:
        raise ValueError(f"{owner}: var must be at least 1-D to have rows, got a scalar")
    check_indices(owner, "indices", indices, var.shape[0])
    if grad.dtype != var.dtype:
        raise TypeError(f"{owner}: grad must have the dtype of var ({var.dtype}), got {grad.dtype}")
    expected = (indices.shape[0],) + tuple(var.shape[1:])
    if tuple(grad.shape) != expected:
        raise ValueError(f"{owner}: grad must have shape {expected} (one row of var per index), "
                         f"got {tuple(grad.shape)}")


def _check_float(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (float, np.floating)):
        raise TypeError(f"{owner}: {name} must be a float, got {value!r} ({type(value).__name__})")
    return check_real(owner, name, value)


def _check_learning_rate(owner: str, value: Any) -> float:
    backend = backends.current()
    if backend.owns(value):
        if value.dtype.kind != "f" or value.size != 1:
            raise TypeError(f"{owner}: learningRate as an array must hold one float, got shape {tuple(value.shape)} "
                            f"and dtype {value.dtype}")
        value = float(backend.to_host(value).reshape(-1)[0])
    elif isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: learningRate must be a number or a one-element float array, "
                        f"got {value!r} ({type(value).__name__})")
    return check_range(owner, "learningRate", value, 0.0)


def _check_scalars(owner: str, learningRate: Any, decay: Any, momentum: Any, epsilon: Any,
                   dtype: Any) -> tuple[float, float, float, float]:
    """The scalars, checked; ``epsilon`` must also be a normal number of the state dtype of ``dtype`` (a smaller
    one is flushed to 0 there, and 0/0 would make NaN)."""
    lr = _check_learning_rate(owner, learningRate)
    decay = check_range(owner, "decay", _check_float(owner, "decay", decay), 0.0, 1.0)
    momentum = check_range(owner, "momentum", _check_float(owner, "momentum", momentum), 0.0)
    epsilon = check_range(owner, "epsilon", _check_float(owner, "epsilon", epsilon), 0.0, lowOpen=True)
    stateDtype = state_dtype(np.dtype(dtype))
    finfo = np.finfo(stateDtype)
    if not float(finfo.tiny) <= epsilon <= float(finfo.max):
        raise ValueError(f"{owner}: epsilon must be in [{float(finfo.tiny):g}, {float(finfo.max):g}] for {dtype} "
                         f"arrays (state in {stateDtype}), got {epsilon!r} (a smaller value is flushed to 0 or loses "
                         f"precision there, and 0/0 makes NaN)")
    return lr, decay, momentum, epsilon


# --- the kernel call ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _dense_layout(backend: Backend, device: Optional[int], size: int) -> Layout:
    """The one-segment layout of ``size`` elements, made on ``device`` (the backend's current one)."""
    return backend.make_layout([size])


def _apply(var: Any, grad: Any, ms: Any, mg: Optional[Any], mom: Any, indices: Optional[Any], lr: float,
           decay: float, momentum: float, epsilon: float, duplicates: str = "sum", keepMeanSquare: bool = False) -> Any:
    """One fused kernel call: over all of ``var``, or over the rows in ``indices`` with ``grad`` as compact rows
    (with ``duplicates="apply"``: one call per round of occurrences, see :func:`occurrence_rounds`).
    ``keepMeanSquare`` restores ``ms`` where a listed row's gradient element is exactly 0."""
    backend = backends.current()
    if indices is None:
        calls = [(_dense_layout(backend, backend.current_device(), int(var.size)), None, grad.reshape(-1))]
    elif duplicates == "sum":
        unique, rows = coalesce_rows(indices, grad)
        hostRows = backend.to_host(unique)
        calls = [(rows_layout(backend, [(0, hostRows, rows.shape[1])]), hostRows, rows.reshape(-1))]
    else:
        hostIndices = backend.to_host(indices)
        rows = grad.reshape(hostIndices.shape[0], -1)
        calls = [(rows_layout(backend, [(0, hostIndices[positions], rows.shape[1])]), hostIndices[positions],
                  rows[backend.xp.asarray(positions)].reshape(-1)) for positions in occurrence_rounds(hostIndices)]
    stateDtype = state_dtype(var.dtype)
    hyper = hyper_vector(rho=decay, oneMinusRho=1.0 - decay, epsIn=epsilon, epsOut=0.0, mu=momentum,
                         lrInMomentum=1.0)
    states = [s for s in (ms, mg, mom) if s is not None]
    # float16 state is computed in float32 copies (the kernels keep their state in float32 for float16)
    work = [s.reshape(-1) if s.dtype == stateDtype else s.reshape(-1).astype(stateDtype) for s in states]
    msW, mgW, momW = work[0], (work[1] if mg is not None else None), work[-1]
    rowSize = int(np.prod(var.shape[1:], dtype=np.int64))
    for layout, hostRows, g in calls:
        segParams = backend.seg_params(np.tile([[lr, 0.0, 1.0, 1.0]], (layout.numSegments, 1)), stateDtype)
        if keepMeanSquare and hostRows is not None:
            xp = backend.xp
            elements = (xp.asarray(hostRows)[:, None] * rowSize + xp.arange(rowSize)).reshape(-1)[g == 0]
            kept = msW[elements].copy()
        backend.rmsprop_update(var.reshape(-1), g, msW, mgW, momW, layout, segParams, hyper)
        if keepMeanSquare and hostRows is not None:
            msW[elements] = kept
    for state, copy in zip(states, work):
        if state.dtype != stateDtype:
            backend.copy_cast(state.reshape(-1), copy)
    return var
