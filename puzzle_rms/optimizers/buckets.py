"""Buckets: the parameters that one kernel call updates, with their gradients and optimizer state.

With global state one bucket holds every parameter of one dtype in flat
buffers, and the Variables are pinned to views of them; with local state each
Variable is its own bucket over its own arrays. Either way a kernel sees flat
1-D buffers and a :class:`backends.backend.Layout` of segments (one per Variable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from backends import Backend
from puzzle_rms.variable import Variable


@dataclass
class ParamGroup:
    """Variables sharing hyperparameters; a value of None inherits the optimizer's own."""

    names: list[str]
    variables: list[Variable]
    learnRate: Any = None
    weightDecay: Optional[float] = None
    decoupledWeightDecay: Optional[float] = None
    decayFilter: Optional[Callable[[str], bool]] = None
    extra: dict = field(default_factory=dict)


def state_dtype(paramDtype: np.dtype) -> np.dtype:
    """Optimizer state is float32 for float16 parameters, else the parameter dtype."""
    return np.dtype(np.float32) if paramDtype == np.float16 else np.dtype(paramDtype)


class Bucket:
    """Flat parameter, gradient and state buffers of one dtype, and the kernel layout over them.

    Parameters
    ----------
    backend : Backend
    names, variables : sequences
        The bucket's Variables and their names, in segment order.
    groups : sequence of int
        Index of each Variable's ParamGroup.
    decays : sequence of bool
        Whether weight decay applies to each Variable.
    flat : bool
        Pack into flat buffers and pin the Variables to views (global state).
    stateInit : dict
        Name -> initial value of each state buffer (e.g. ``{"ms": 0.0}``).
    masterWeights : bool
        Keep a float32 copy of float16 parameters that the kernel updates.
    """

    def __init__(self, backend: Backend, names: Sequence[str], variables: Sequence[Variable], groups: Sequence[int],
                 decays: Sequence[bool], flat: bool, stateInit: dict[str, float], masterWeights: bool) -> None:
        self.backend = backend
        self.names = list(names)
        self.variables = list(variables)
        self.dtype = np.dtype(variables[0].dtype)
        self.stateDtype = state_dtype(self.dtype)
        self.flat = flat
        self.sizes = np.array([v.size for v in variables], dtype=np.int64)
        self.offsets = np.cumsum(self.sizes) - self.sizes
        self.size = int(self.sizes.sum())
        self.layout = backend.make_layout(self.sizes)
        self.segGroup = np.asarray(groups, dtype=np.int64)
        self.segMult = np.array([float(v.learnRate) for v in variables])
        self.segDecay = np.asarray(decays, dtype=np.float64)
        if flat:
            self.w = backend.zeros(self.size, self.dtype)
            self.g = backend.zeros(self.size, self.dtype)
            for var, offset, size in zip(variables, self.offsets.tolist(), self.sizes.tolist()):
                var.pin(self.w[offset:offset + size].reshape(var.shape), self.g[offset:offset + size].reshape(var.shape))
        self.state = {name: backend.full(self.size, value, self.stateDtype) for name, value in stateInit.items()}
        if masterWeights and self.dtype == np.float16:
            self.state["master"] = backend.empty(self.size, np.float32)
            backend.copy_cast(self.state["master"], self.weights())
        self._segKey: Any = None
        self._segParams: Any = None

    # --- flat views -----------------------------------------------------------------------------
    def weights(self) -> Any:
        """The parameters as one flat buffer (a view of the Variable itself in local state)."""
        return self.w if self.flat else _flat_view(self.names[0], self.variables[0], "data")

    def grads(self) -> Any:
        return self.g if self.flat else _flat_view(self.names[0], self.variables[0], "grad")

    def stateOf(self, index: int) -> dict[str, Any]:
        """Views of segment ``index``'s state buffers, shaped like its Variable."""
        offset, size = int(self.offsets[index]), int(self.sizes[index])
        shape = self.variables[index].shape
        return {name: buf[offset:offset + size].reshape(shape) for name, buf in self.state.items()}

    def zeroGrads(self) -> None:
        if self.flat:
            self.g.fill(0)
        else:
            self.variables[0].grad.fill(0)

    # --- per-segment parameters -----------------------------------------------------------------
    def segParams(self, groupLr: np.ndarray, groupWd: np.ndarray, groupWdd: np.ndarray,
                  clipFactors: Optional[np.ndarray]) -> Any:
        """The kernel's ``(segments, 4)`` table ``[lr, wd, wScale, gradScale]``; re-uploaded only when it changed.

        ``lr = groupLr * Variable.learnRate``, ``wd`` is the coupled decay, ``wScale = 1 - lr * decoupledDecay``.
        """
        key = (groupLr.tobytes(), groupWd.tobytes(), groupWdd.tobytes())
        if clipFactors is None and key == self._segKey:
            return self._segParams
        lr = groupLr[self.segGroup] * self.segMult
        table = np.empty((self.segGroup.size, 4))
        table[:, 0] = lr
        table[:, 1] = groupWd[self.segGroup] * self.segDecay
        table[:, 2] = 1.0 - lr * groupWdd[self.segGroup] * self.segDecay
        table[:, 3] = 1.0 if clipFactors is None else clipFactors
        self._segParams = self.backend.seg_params(table, self.stateDtype)
        self._segKey = None if clipFactors is not None else key
        return self._segParams

    def release(self) -> None:
        """Give the Variables private copies again (the flat buffers stay with this bucket)."""
        if self.flat:
            for var in self.variables:
                var.unpin()


def _flat_view(name: str, var: Variable, what: str) -> Any:
    array = getattr(var, what)
    if not array.flags.c_contiguous:
        raise ValueError(f"variable {name!r}: {what} must be C-contiguous for an in-place update")
    return array.reshape(-1)
