"""Row-sparse gradients: dL/dW given as a few rows of W, as an embedding lookup produces them.

A row-sparse gradient is a pair ``(indices, rows)`` meaning ``dL/dW[indices[k]] += rows[k]``; the
same index may appear more than once, and its rows are then summed (:func:`coalesce_rows`).

:class:`RowSparseVariable` is a :class:`~puzzle_rms.variable.Variable` whose backward pass adds
such pairs to ``rowGrad`` instead of writing the dense ``grad``. An optimizer then either folds
the rows into the dense gradient and takes its ordinary step (``sparseUpdate="dense"``: the same
numbers as a dense gradient) or updates only the listed rows and their state
(``sparseUpdate="lazy"``), through the same fused kernel with a layout from :func:`rows_layout`.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends.backend import Backend, Layout
from puzzle_rms.variable import Variable


def check_indices(owner: str, name: str, indices: Any, numRows: int) -> Any:
    """``indices`` as a 1-D integer array of the current backend with every value in ``[0, numRows)``.

    Raises TypeError (not an integer array of this backend) or ValueError (not 1-D, out of range),
    naming ``owner``'s argument ``name``.
    """
    backend = backends.current()
    if not backend.owns(indices):
        raise TypeError(f"{owner}: {name} must be a {backend.name} integer array, got {type(indices).__name__}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{owner}: {name} must have an integer dtype, got {indices.dtype}")
    if indices.ndim != 1:
        raise ValueError(f"{owner}: {name} must be 1-D, got shape {tuple(indices.shape)}")
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= numRows:
            bad = low if low < 0 else high
            raise ValueError(f"{owner}: {name} must lie in [0, {numRows}), got the index {bad}")
    return indices


def coalesce_rows(indices: Any, rows: Any) -> tuple[Any, Any]:
    """Sum the rows of repeated indices: returns ``(unique sorted indices, summed rows)``, rows 2-D.

    ``rows`` has one row (of any shape) per index; the result's rows are flattened to ``(n, rowSize)``.
    """
    xp = backends.current().xp
    flat = rows.reshape(indices.shape[0], math.prod(rows.shape[1:]))
    unique, inverse = xp.unique(indices, return_inverse=True)
    summed = xp.zeros((unique.shape[0], flat.shape[1]), dtype=flat.dtype)
    if unique.shape[0] == indices.shape[0]:
        summed[inverse] = flat
    else:
        xp.add.at(summed, inverse, flat)
    return unique, summed


def occurrence_rounds(indices: np.ndarray) -> list[np.ndarray]:
    """Positions in ``indices`` grouped into rounds: round ``k`` holds the ``k``-th occurrence of each index.

    No index repeats within a round, and the occurrences of one index come in their order in ``indices``,
    so applying the rounds one after another applies every occurrence in order, one fused call per round
    (as many rounds as the most repeated index has occurrences). Host NumPy in and out.
    """
    indices = np.asarray(indices)
    if indices.size == 0:
        return []
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    occurrence = np.empty(indices.size, np.int64)
    occurrence[order] = np.arange(indices.size) - np.repeat(starts, np.diff(np.r_[starts, indices.size]))
    return [np.flatnonzero(occurrence == k) for k in range(int(occurrence.max()) + 1)]


def rows_layout(backend: Backend, parts: Sequence[tuple[int, np.ndarray, int]]) -> Layout:
    """A kernel layout with one segment per listed row.

    Each part ``(wOffset, rowIndices, rowSize)`` lists rows of one flat parameter: the weights (and state)
    of row ``i`` start at ``wOffset + i * rowSize``. The gradient is one compact buffer holding the rows of
    every part back to back, in the same order.
    """
    wOffsets = [offset + np.asarray(indices, dtype=np.int64) * rowSize for offset, indices, rowSize in parts]
    sizes = [np.full(len(indices), rowSize, dtype=np.int64) for _, indices, rowSize in parts]
    sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    return backend.make_layout(sizes, np.concatenate(wOffsets) if wOffsets else sizes, np.cumsum(sizes) - sizes)


class RowSparseGrad:
    """A pending row-sparse gradient of a parameter of ``shape``: pairs of (indices, rows) added by backward.

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape; rows have shape ``shape[1:]``.
    dtype : numpy dtype
        The parameter's dtype; rows must have it.
    """

    def __init__(self, shape: tuple, dtype: Any) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.rowSize = int(math.prod(self.shape[1:]))
        self._indices: list[Any] = []
        self._rows: list[Any] = []

    def __len__(self) -> int:
        """The number of (possibly repeated) rows added since the last :meth:`clear`."""
        return sum(int(i.shape[0]) for i in self._indices)

    def add(self, indices: Any, rows: Any) -> None:
        """Record ``dL/dW[indices[k]] += rows[k]`` (the rows are copied)."""
        owner = "RowSparseGrad.add"
        check_indices(owner, "indices", indices, self.shape[0])
        backend = backends.current()
        if not backend.owns(rows):
            raise TypeError(f"{owner}: rows must be a {backend.name} array, got {type(rows).__name__}")
        expected = (indices.shape[0],) + self.shape[1:]
        if tuple(rows.shape) != expected or rows.dtype != self.dtype:
            raise ValueError(f"{owner}: rows must have shape {expected} and dtype {self.dtype} (one row per index), "
                             f"got shape {tuple(rows.shape)} and dtype {rows.dtype}")
        self._indices.append(indices.astype(np.int64, copy=True))
        self._rows.append(rows.reshape(indices.shape[0], self.rowSize).copy())

    def coalesce(self) -> tuple[Any, Any]:
        """``(unique sorted indices, summed rows of shape (n, rowSize))``; the pending pairs are replaced by it."""
        xp = backends.current().xp
        if not self._indices:
            return xp.zeros(0, np.int64), xp.zeros((0, self.rowSize), self.dtype)
        if len(self._indices) > 1 or not _is_coalesced(xp, self._indices[0]):
            indices = self._indices[0] if len(self._indices) == 1 else xp.concatenate(self._indices)
            rows = self._rows[0] if len(self._rows) == 1 else xp.concatenate(self._rows)
            unique, summed = coalesce_rows(indices, rows)
            self._indices, self._rows = [unique], [summed]
        return self._indices[0], self._rows[0]

    def clip(self, limit: float) -> None:
        """Clip every pending row occurrence to ``[-limit, limit]`` in place (before any summing)."""
        xp = backends.current().xp
        for rows in self._rows:
            xp.clip(rows, -limit, limit, out=rows)

    def sumsq(self) -> float:
        """The sum of squares of every pending row occurrence (repeated rows not summed first)."""
        xp = backends.current().xp
        return float(sum(float(xp.sum(xp.square(rows, dtype=np.float64))) for rows in self._rows))

    def squares(self) -> tuple[Any, Any, Any]:
        """``(unique sorted indices, summed squares of the occurrences, summed occurrences)``, rows
        ``(n, rowSize)``; the pending pairs are left as they are."""
        xp = backends.current().xp
        if not self._indices:
            empty = xp.zeros((0, self.rowSize), self.dtype)
            return xp.zeros(0, np.int64), empty, empty
        indices = xp.concatenate(self._indices)
        rows = xp.concatenate(self._rows)
        unique, squared = coalesce_rows(indices, rows * rows)
        return unique, squared, coalesce_rows(indices, rows)[1]

    def scatterInto(self, dense: Any) -> None:
        """Add the pending rows into the dense array ``dense`` (of the parameter's shape) in place."""
        indices, rows = self.coalesce()
        flat = dense.reshape(self.shape[0], self.rowSize)
        flat[indices] += rows

    def toDense(self) -> Any:
        """The pending gradient as a new dense array of the parameter's shape."""
        dense = backends.current().zeros(self.shape, self.dtype)
        self.scatterInto(dense)
        return dense

    def clear(self) -> None:
        """Drop every pending row."""
        self._indices, self._rows = [], []


def _is_coalesced(xp: Any, indices: Any) -> bool:
    """Whether ``indices`` is strictly increasing (sorted, no repeats)."""
    return bool(indices.shape[0] < 2 or (xp.diff(indices) > 0).all())


class RowSparseVariable(Variable):
    """A Variable whose gradient arrives as rows (an embedding table).

    Backward passes add ``(indices, rows)`` to :attr:`rowGrad`; the dense ``grad`` is written only
    when an optimizer with ``sparseUpdate="dense"`` folds the rows into it. :meth:`denseGrad` gives
    the whole gradient (``grad`` plus the pending rows) without changing anything.

    Parameters
    ----------
    data : array
        The values; at least 1-D (rows are ``data[i]``).
    name : str, optional
    learnRate : float
        Per-variable learning-rate multiplier.
    """

    def __init__(self, data: Any, name: Optional[str] = None, learnRate: float = 1.0) -> None:
        super().__init__(data, name=name, learnRate=learnRate)
        if len(self.shape) < 1:
            raise ValueError(f"RowSparseVariable {name!r}: data must be at least 1-D, got a scalar")
        self.rowGrad = RowSparseGrad(self.shape, self.dtype)

    def denseGrad(self) -> Any:
        """``grad`` plus the pending rows, as a new array."""
        dense = self.grad.copy()
        self.rowGrad.scatterInto(dense)
        return dense
