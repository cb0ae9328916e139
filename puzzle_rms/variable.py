"""Variable: a trainable array, its gradient, a name and a learning-rate multiplier."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends.gpuarray import withGet
from puzzle_rms.validation import check_bool, check_optional_str, check_range


_learnRateVersion = 0  # bumped by every Variable.learnRate assignment
_bindingVersion = 0  # bumped whenever any Variable is pinned, unpinned or retired


def learn_rate_version() -> int:
    """A counter that changes whenever any Variable's ``learnRate`` is set (cheap change detection)."""
    return _learnRateVersion


def binding_version() -> int:
    """A counter that changes whenever any Variable is pinned, unpinned or retired (cheap change detection)."""
    return _bindingVersion


def _bump_binding() -> None:
    global _bindingVersion
    _bindingVersion += 1


def check_updatable(owner: str, what: str, array: Any) -> None:
    """Refuse an array that an in-place update cannot write through a flat view: read-only, not C-contiguous
    (transposed, strided), or an ndarray subclass whose reshape does not give a flat view (np.matrix)."""
    if isinstance(array, np.matrix):
        raise TypeError(f"{owner}: {what} is a numpy.matrix, whose reshape(-1) stays 2-D; pass np.asarray(x)")
    flags = getattr(array, "flags", None)
    if flags is None:
        return
    if not flags.writeable:
        raise ValueError(f"{owner}: {what} must be writable to be updated in place, got a read-only array; pass "
                         f"a writable one (x.copy())")
    if not flags.c_contiguous:
        raise ValueError(f"{owner}: {what} must be C-contiguous to be updated in place through a flat view, got a "
                         f"transposed or strided array (strides {array.strides}); pass np.ascontiguousarray(x)")


class Variable:
    """A parameter tensor on the current backend.

    Parameters
    ----------
    data : array
        The values (host arrays are copied to the current backend).
    name : str, optional
        Used in error messages and checkpoints; modules name their variables.
    withgrad : bool
        Whether to allocate a gradient (zeros of the data's shape and dtype) when ``grad`` is not given;
        False leaves ``grad`` None (a constant that no optimizer can take).
    grad : array, optional
        The gradient dL/d(data), bound as given (checked against the data's shape and dtype).
    learnRate : float
        Per-variable multiplier of the optimizer's learning rate (PuzzleLib's
        ``Variable.learnRate``); honoured in local and global state.

    Attributes
    ----------
    wc : float
        PuzzleLib's weight-decay coefficient (0 by default), read by
        :class:`~puzzle_rms.optimizers.WeightDecay`.

    Notes
    -----
    Once an optimizer packs the variable into a flat buffer
    (``setupOn(..., useGlobalState=True)``), ``data`` and ``grad`` are views of
    that buffer. Assigning to them then copies into the view, so every holder
    of this Variable keeps seeing the optimizer's memory.

    ``data`` and ``grad`` are updated in place through flat views, so they must
    be writable, C-contiguous arrays (not np.matrix): anything else is refused
    here, before any optimizer touches it.
    """

    def __init__(self, data: Any, name: Optional[str] = None, withgrad: bool = True, grad: Optional[Any] = None,
                 learnRate: float = 1.0) -> None:
        backend = backends.current()
        self.name = check_optional_str("Variable", "name", name)
        self.wc = 0.0  # PuzzleLib's weight-decay coefficient, read by the WeightDecay hook
        self._pinned = False
        self.pinOwner: Any = None  # the optimizer bucket whose flat buffer holds data and grad, if any
        self.retiredBy: Optional[str] = None  # why this Variable was replaced (Module.calcMode), if it was
        self._data = withGet(data if backend.owns(data) else backend.to_device(data))
        if backend.owns(data):
            check_updatable(self._label(), "data", data)
        if self._data.dtype not in backend.dtypesSupported:
            raise TypeError(f"{self._label()}: dtype {self._data.dtype} is not supported; expected one of "
                            f"{[str(d) for d in backend.dtypesSupported]}")
        self._grad = None
        if grad is not None or check_bool("Variable", "withgrad", withgrad):
            self._grad = withGet(backend.zeros(self._data.shape, self._data.dtype))
        if grad is not None:
            self.grad = grad  # checked against the zeros' shape and dtype, then bound
        self.learnRate = learnRate

    @property
    def learnRate(self) -> float:
        return self._learnRate

    @learnRate.setter
    def learnRate(self, value: float) -> None:
        """Set the multiplier; optimizers see the change at their next update."""
        global _learnRateVersion
        self._learnRate = check_range(self._label(), "learnRate", value, 0.0)
        _learnRateVersion += 1

    @property
    def data(self) -> Any:
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = self._assign("data", self._data, value)

    @property
    def grad(self) -> Any:
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        self._grad = self._assign("grad", self._grad, value)

    def _assign(self, what: str, old: Any, value: Any) -> Any:
        """Bind a new array, or copy into the optimizer's view when pinned; check shape, dtype and backend."""
        backend = backends.current()
        if not backend.owns(value):
            raise TypeError(f"{self._label()}: {what} must be a {backend.name} array "
                            f"({backend.array_type.__module__}.{backend.array_type.__name__}), got {type(value).__name__}")
        if old is not None and (value.shape != old.shape or value.dtype != old.dtype):
            raise ValueError(f"{self._label()}: {what} of shape {tuple(value.shape)} and dtype {value.dtype} "
                             f"does not match the variable's shape {tuple(old.shape)} and dtype {old.dtype}")
        if self._pinned and old is not None:
            if value is not old:
                old[...] = value
            return old
        check_updatable(self._label(), what, value)
        return withGet(value)

    def _label(self) -> str:
        """How errors name this variable: ``Variable 'W'``, or ``unnamed Variable of shape (3, 4)``."""
        return f"Variable {self.name!r}" if self.name is not None else f"unnamed Variable of shape {self.shape}"

    def pin(self, data: Any, grad: Any, owner: Any = None) -> None:
        """Rebind to views of ``owner``'s flat buffers (copying the current values) and keep them."""
        data[...] = self._data
        grad[...] = self._grad
        self._data, self._grad, self._pinned, self.pinOwner = withGet(data), withGet(grad), True, owner
        _bump_binding()

    def unpin(self) -> None:
        """Own private copies again (when an optimizer releases its flat buffers)."""
        self._data, self._grad, self._pinned, self.pinOwner = self._data.copy(), self._grad.copy(), False, None  # copies keep get/set
        _bump_binding()

    def retire(self, reason: str) -> None:
        """Mark this Variable as replaced (by ``reason``): an optimizer set up on it then refuses to update."""
        self.retiredBy = reason
        _bump_binding()

    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def size(self) -> int:
        return int(self._data.size)

    def __repr__(self) -> str:
        return f"Variable(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, learnRate={self.learnRate})"
