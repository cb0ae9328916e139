"""Variable: a trainable array, its gradient, a name and a learning-rate multiplier."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.validation import check_optional_str, check_range


_learnRateVersion = 0  # bumped by every Variable.learnRate assignment


def learn_rate_version() -> int:
    """A counter that changes whenever any Variable's ``learnRate`` is set (cheap change detection)."""
    return _learnRateVersion


class Variable:
    """A parameter tensor on the current backend.

    Parameters
    ----------
    data : array
        The values (host arrays are copied to the current backend).
    grad : array, optional
        The gradient dL/d(data); zeros of the same shape and dtype by default.
    name : str, optional
        Used in error messages and checkpoints; modules name their variables.
    learnRate : float
        Per-variable multiplier of the optimizer's learning rate (PuzzleLib's
        ``Variable.learnRate``); honoured in local and global state.

    Notes
    -----
    Once an optimizer packs the variable into a flat buffer
    (``setupOn(..., useGlobalState=True)``), ``data`` and ``grad`` are views of
    that buffer. Assigning to them then copies into the view, so every holder
    of this Variable keeps seeing the optimizer's memory.
    """

    def __init__(self, data: Any, grad: Optional[Any] = None, name: Optional[str] = None,
                 learnRate: float = 1.0) -> None:
        backend = backends.current()
        self.name = check_optional_str("Variable", "name", name)
        self._pinned = False
        self._data = data if backend.owns(data) else backend.to_device(data)
        if self._data.dtype not in backend.dtypesSupported:
            raise TypeError(f"{self._label()}: dtype {self._data.dtype} is not supported; expected one of "
                            f"{[str(d) for d in backend.dtypesSupported]}")
        self.learnRate = learnRate
        self._grad = backend.zeros(self._data.shape, self._data.dtype)
        if grad is not None:
            self.grad = grad  # checked against the zeros' shape and dtype, then bound

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
        return value

    def _label(self) -> str:
        """How errors name this variable: ``Variable 'W'``, or ``unnamed Variable of shape (3, 4)``."""
        return f"Variable {self.name!r}" if self.name is not None else f"unnamed Variable of shape {self.shape}"

    def pin(self, data: Any, grad: Any) -> None:
        """Rebind to views of an optimizer's flat buffers (copying the current values) and keep them."""
        data[...] = self._data
        grad[...] = self._grad
        self._data, self._grad, self._pinned = data, grad, True

    def unpin(self) -> None:
        """Own private copies again (when an optimizer releases its flat buffers)."""
        self._data, self._grad, self._pinned = self._data.copy(), self._grad.copy(), False

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
