"""Buckets: the parameters that one kernel call updates, with their gradients and optimizer state.

With global state one bucket holds every parameter of one dtype in flat
buffers, and the Variables are pinned to views of them; with local state each
Variable is its own bucket over its own arrays. Either way a kernel sees flat
1-D buffers and a :class:`puzzle_rms.backends.backend.Layout` of segments (one per Variable).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from puzzle_rms.backends import Backend
from puzzle_rms.backends.backend import state_dtype
from puzzle_rms.sparse import RowSparseVariable, rows_layout
from puzzle_rms.variable import Variable, binding_version, learn_rate_version


@dataclass
class ParamGroup:
    """Variables sharing hyperparameters; a value of None inherits the optimizer's own."""

    names: list[str]
    variables: list[Variable]
    learnRate: Any = None
    learnRateScale: float = 1.0
    weightDecay: Optional[float] = None
    decoupledWeightDecay: Optional[float] = None
    decayFilter: Optional[Callable[[str], bool]] = None


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
    lazyRows : bool
        Update :class:`~puzzle_rms.sparse.RowSparseVariable` segments lazily: only the rows listed in
        their ``rowGrad`` (see :meth:`sparseRows`); the dense layout and ``zeroGrads`` skip them.
    """

    def __init__(self, backend: Backend, names: Sequence[str], variables: Sequence[Variable], groups: Sequence[int],
                 decays: Sequence[bool], flat: bool, stateInit: dict[str, float], masterWeights: bool,
                 lazyRows: bool = False) -> None:
        self.backend = backend
        self.names = list(names)
        self.variables = list(variables)
        self.dtype = np.dtype(variables[0].dtype)
        self.stateDtype = state_dtype(self.dtype)
        self.flat = flat
        self.sizes = np.array([v.size for v in variables], dtype=np.int64)
        self.offsets = segment_offsets(self.sizes, 2 if self.dtype == np.float16 else 1)
        self.size = int(self.offsets[-1] + self.sizes[-1])
        self.rowSegments = [i for i, var in enumerate(variables) if isinstance(var, RowSparseVariable)]
        self.lazyRows = lazyRows and bool(self.rowSegments)
        denseSizes = self.sizes.copy()
        if self.lazyRows:
            denseSizes[self.rowSegments] = 0
        self.layout = backend.make_layout(denseSizes, self.offsets)
        self._denseSizes = denseSizes
        self._denseRuns = _runs(self.offsets, denseSizes)
        self.runLayout = backend.make_layout([stop - start for start, stop in self._denseRuns],
                                             [start for start, _ in self._denseRuns])
        self.kernelLayout = self.layout
        self._coalescing: Any = None  # (segments merged into their predecessor, run layout, first segment of each run)
        self.segGroup = np.asarray(groups, dtype=np.int64)
        self.segMult = np.array([float(v.learnRate) for v in variables])
        self._multVersion = learn_rate_version()
        self.segDecay = np.asarray(decays, dtype=np.float64)
        # each buffer a kernel streams through starts at its own offset within a page (stream_buffer)
        if flat:
            self.w = backend.stream_buffer(self.size, self.dtype, 0.0, 0)
            self.g = backend.stream_buffer(self.size, self.dtype, 0.0, 1)
            for var, offset, size in zip(variables, self.offsets.tolist(), self.sizes.tolist()):
                var.pin(self.w[offset:offset + size].reshape(var.shape),
                        self.g[offset:offset + size].reshape(var.shape), owner=self)
        self.state = {name: backend.stream_buffer(self.size, self.stateDtype, value, 2 + i)
                      for i, (name, value) in enumerate(stateInit.items())}
        if masterWeights and self.dtype == np.float16:
            self.state["master"] = backend.stream_buffer(self.size, np.float32, 0.0, 2 + len(stateInit))
            backend.copy_cast(self.state["master"], self.weights())
        self._segKey: Any = None
        self._segParams: Any = None
        self._bindings = binding_version()
        self._table: Optional[np.ndarray] = None  # the last per-segment table (host)
        self._segmentParams: Any = None

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
        """Zero the dense gradients (not those of lazily updated segments, never written) and drop pending rows."""
        if self.flat and not self.lazyRows:
            self.g.fill(0)
        elif self.flat:
            for start, stop in self._denseRuns:
                self.g[start:stop].fill(0)
        elif not self.lazyRows:
            self.variables[0].grad.fill(0)
        for i in self.rowSegments:
            self.variables[i].rowGrad.clear()

    def clipGrads(self, limit: float) -> None:
        """Clip the dense gradients and every pending row occurrence to ``[-limit, limit]`` in place."""
        grads = self.grads()
        self.backend.xp.clip(grads, -limit, limit, out=grads)
        for i in self.rowSegments:
            self.variables[i].rowGrad.clip(limit)

    def pendingRowSumsq(self) -> np.ndarray:
        """Per segment, the sum of squares of its pending row occurrences (repeated rows not summed first)."""
        sums = np.zeros(self.sizes.size)
        for i in self.rowSegments:
            sums[i] = self.variables[i].rowGrad.sumsq()
        return sums

    def pendingRowSquares(self) -> list[tuple[int, Any, Any, Any]]:
        """``(segment, unique indices, summed squared occurrences, summed occurrences)`` of each
        RowSparseVariable with pending rows."""
        parts = [(i, *self.variables[i].rowGrad.squares()) for i in self.rowSegments]
        return [part for part in parts if part[1].shape[0]]

    def sparseRows(self) -> Optional["RowsView"]:
        """Take in the pending row-sparse gradients of this bucket's RowSparseVariables.

        Dense mode: add them into the dense gradients (then the ordinary step gives the dense numbers)
        and return None. Lazy mode: return a :class:`RowsView` of the listed rows, or None when no row
        is pending. Either way nothing else is modified.
        """
        if not self.rowSegments:
            return None
        if not self.lazyRows:
            for i in self.rowSegments:
                var = self.variables[i]
                var.rowGrad.scatterInto(var.grad)
                var.rowGrad.clear()
            return None
        parts = [(i, *self.variables[i].rowGrad.coalesce()) for i in self.rowSegments]
        parts = [part for part in parts if part[1].shape[0]]
        return RowsView(self, parts) if parts else None

    def segmentGradients(self, index: int, rows: Optional["RowsView"] = None) -> list[Any]:
        """The pieces of segment ``index``'s gradient: its dense part (unless its rows are applied lazily) and
        its rows in ``rows``, each a flat view."""
        pieces = []
        if not (self.lazyRows and index in self.rowSegments):
            offset, size = int(self.offsets[index]), int(self.sizes[index])
            pieces.append(self.grads()[offset:offset + size])
        if rows is not None:
            blocks = rows.layout.hostBlocks
            for wStart, wStop, _, gStart in blocks[rows.rowSegment[blocks[:, 2]] == index].tolist():
                pieces.append(rows.g[gStart:gStart + wStop - wStart])
        return pieces

    # --- per-segment parameters -----------------------------------------------------------------
    def segParams(self, groupLr: np.ndarray, groupWd: np.ndarray, groupWdd: np.ndarray,
                  clipFactors: Optional[np.ndarray]) -> Any:
        """The kernel's table ``[lr, wd, wScale, gradScale]`` for :attr:`kernelLayout`, which it also sets;
        re-uploaded only when it changed.

        Per segment, ``lr = groupLr * Variable.learnRate``, ``wd`` is the coupled decay, ``wScale = 1 - lr *
        decoupledDecay``. Adjacent segments with equal rows are coalesced into one run (one row, blocks of
        ``blockElems`` across the segments), so that many small tensors with the same settings cost what one
        tensor of their total size costs; :attr:`segmentParams` keeps the per-segment table. With clipping
        factors (which differ per segment) the kernel runs per segment. The Variables' multipliers are read
        again only when some ``learnRate`` was assigned since.
        """
        if self._multVersion != learn_rate_version():
            self.segMult = np.array([float(v.learnRate) for v in self.variables])
            self._multVersion = learn_rate_version()
            self._segKey = None
        key = (groupLr.tobytes(), groupWd.tobytes(), groupWdd.tobytes())
        if clipFactors is None and key == self._segKey:
            return self._segParams
        lr = groupLr[self.segGroup] * self.segMult
        table = np.empty((self.segGroup.size, 4))
        table[:, 0] = lr
        table[:, 1] = groupWd[self.segGroup] * self.segDecay
        table[:, 2] = 1.0 - lr * groupWdd[self.segGroup] * self.segDecay
        table[:, 3] = 1.0 if clipFactors is None else clipFactors
        self._table, self._segmentParams = table, None
        if clipFactors is None:
            self.kernelLayout, runFirst = self._coalesce(table)
            self._segParams = self.backend.seg_params(table[runFirst], self.stateDtype)
        else:
            self.kernelLayout, self._segParams = self.layout, self.segmentParams
        self._segKey = None if clipFactors is not None else key
        return self._segParams

    def checkBindings(self, owner: str) -> None:
        """Raise RuntimeError when an update would not reach a Variable: it was replaced (``Module.calcMode``)
        or, in global state, is no longer a view of this bucket's flat buffer (another optimizer's setupOn took
        it). Only looks at the Variables when some Variable was re-bound since the last check."""
        if self._bindings == binding_version():
            return
        for name, var in zip(self.names, self.variables):
            if var.retiredBy is not None:
                raise RuntimeError(f"{owner}: variable {name!r} was replaced by {var.retiredBy} after setupOn, so this "
                                   f"optimizer would update a Variable the model no longer uses; nothing was updated. "
                                   f"Call setupOn again")
            if self.flat and var.pinOwner is not self:
                raise RuntimeError(f"{owner}: variable {name!r} is no longer a view of this optimizer's flat buffer "
                                   f"(another optimizer's setupOn(useGlobalState=True) took it, or it was released), "
                                   f"so an update would change nothing; nothing was updated. Call setupOn again")
        self._bindings = binding_version()

    @property
    def segmentParams(self) -> Any:
        """The per-segment table of the last :meth:`segParams` call, where the kernels read it."""
        if self._segmentParams is None:
            self._segmentParams = self.backend.seg_params(self._table, self.stateDtype)
        return self._segmentParams

    def nonfinite(self) -> np.ndarray:
        """Whether each segment's dense gradient holds a NaN or an infinity: one pass over the runs of
        back-to-back segments, and a second, per segment, only when it found one (to name the variable)."""
        if not self.backend.segment_nonfinite(self.grads(), self.runLayout).any():
            return np.zeros(self.sizes.size, dtype=bool)
        return self.backend.segment_nonfinite(self.grads(), self.layout)

    def _coalesce(self, table: np.ndarray) -> tuple[Any, np.ndarray]:
        """The layout of runs of back-to-back non-empty segments with equal ``table`` rows, and each run's
        first segment; rebuilt only when which segments merge changes (not when a schedule moves lr)."""
        present = np.flatnonzero(self._denseSizes)
        merged = ((table[present[1:]] == table[present[:-1]]).all(axis=1)
                  & (self.offsets[present[1:]] == self.offsets[present[:-1]] + self._denseSizes[present[:-1]]))
        if self._coalescing is None or not np.array_equal(self._coalescing[0], merged):
            starts = np.concatenate(([True], ~merged)) if present.size else np.zeros(0, dtype=bool)
            runFirst = present[starts]
            runSizes = np.add.reduceat(self._denseSizes[present], np.flatnonzero(starts)) if present.size else []
            self._coalescing = (merged, self.backend.make_layout(runSizes, self.offsets[runFirst]), runFirst)
        return self._coalescing[1], self._coalescing[2]

    def release(self) -> None:
        """Give the Variables this bucket still holds private copies again (the flat buffers stay with it)."""
        if self.flat:
            for var in self.variables:
                if var.pinOwner is self:
                    var.unpin()


class RowsView:
    """The rows listed in the pending row-sparse gradients of one bucket, shaped like a Bucket for a kernel step.

    ``weights()`` and ``state`` are the bucket's own flat buffers; ``grads()`` is the compact buffer of the
    (coalesced) rows and ``layout`` has one segment per row, pointing at that row of the weights and state
    and at its row of the compact gradient. One kernel call updates every listed row and nothing else.

    Parameters
    ----------
    bucket : Bucket
    parts : list of (segment, indices, rows)
        Per RowSparseVariable: its segment in the bucket, unique row indices and the summed rows.
    """

    def __init__(self, bucket: Bucket, parts: list[tuple[int, Any, Any]]) -> None:
        backend = bucket.backend
        self.bucket = bucket
        self.state = bucket.state
        self.g = backend.xp.concatenate([rows.reshape(-1) for _, _, rows in parts])
        self.layout = rows_layout(backend, [(int(bucket.offsets[segment]), backend.to_host(indices), rows.shape[1])
                                            for segment, indices, rows in parts])
        self.rowSegment = np.repeat(np.array([segment for segment, _, _ in parts], dtype=np.int64),
                                    [indices.shape[0] for _, indices, _ in parts])
        self._rowSegmentDevice = backend.xp.asarray(self.rowSegment)

    @property
    def kernelLayout(self) -> Any:
        """One segment per row (the kernels' layout for these rows)."""
        return self.layout

    def weights(self) -> Any:
        return self.bucket.weights()

    def grads(self) -> Any:
        return self.g

    def segmentSums(self, perRow: np.ndarray) -> np.ndarray:
        """Per segment of the bucket, the sum of ``perRow`` (one value per listed row, e.g. the rows' sums of
        squares from ``segment_sumsq(grads(), layout)``) over its rows; zero for segments without rows."""
        return np.bincount(self.rowSegment, weights=perRow, minlength=self.bucket.sizes.size)

    def segmentNonfinite(self) -> np.ndarray:
        """Whether the rows of each segment of the bucket hold a NaN or an infinity (False without rows)."""
        perRow = self.bucket.backend.segment_nonfinite(self.g, self.layout)
        bad = np.zeros(self.bucket.sizes.size, dtype=bool)
        bad[self.rowSegment[perRow]] = True
        return bad

    def segParams(self, bucketParams: Any) -> Any:
        """The bucket's per-segment parameter table repeated for each row's segment."""
        return bucketParams[self._rowSegmentDevice]


def segment_offsets(sizes: np.ndarray, align: int) -> np.ndarray:
    """Start of each segment in a flat buffer: back to back, each start rounded up to a multiple of ``align``.

    float16 buckets use ``align=2``, so that every segment starts 4-byte aligned and the GPU kernel can move
    neighbouring pairs as one 32-bit word (half2) after an odd-sized tensor too; the gaps are never read.
    """
    padded = -(-np.asarray(sizes, dtype=np.int64) // align) * align
    return np.cumsum(padded) - padded


def _runs(offsets: np.ndarray, sizes: np.ndarray) -> list[tuple[int, int]]:
    """Maximal ``(start, stop)`` runs covered by the non-empty segments ``[offset, offset + size)``."""
    runs: list[tuple[int, int]] = []
    for offset, size in zip(offsets.tolist(), sizes.tolist()):
        if size and runs and runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], offset + size)
        elif size:
            runs.append((offset, offset + size))
    return runs


def _flat_view(name: str, var: Variable, what: str) -> Any:
    array = getattr(var, what)
    if not array.flags.c_contiguous:
        raise ValueError(f"variable {name!r}: {what} must be C-contiguous for an in-place update")
    return array.reshape(-1)
