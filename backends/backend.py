"""The backend interface: allocation, transfer and the fused optimizer kernels.

Every optimizer kernel works on flat 1-D buffers described by a :class:`Layout`:
a table of blocks ``(wStart, wStop, segment, gStart)``. A *segment* is one
parameter tensor (one Variable); a block is a contiguous run of at most
``blockElems`` elements of one segment. Dense updates read the gradient at the
same offsets as the weights (``gStart == wStart``); the lazy row-sparse update
points each block at one row of the weights and one row of a compact gradient.

Per-segment values live in a small ``segParams`` table (columns
:data:`SEG_COLUMNS`), global scalars in a ``hyper`` vector (fields
:data:`HYPER_FIELDS`, built by :func:`hyper_vector`). What the kernels compute
from them is stated once, in plain NumPy, by :mod:`puzzle_rms.backends.reference`;
every backend's kernels are tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .threads import host_matmul


class BackendUnavailableError(RuntimeError):
    """A named backend cannot run here: its package or its device is missing."""


class UnknownBackendError(ValueError):
    """A backend name that is none of ``numpy``, ``numba``, ``cupy``, ``auto``."""


SEG_COLUMNS = ("lr", "wd", "wScale", "gradScale")
HYPER_FIELDS = (
    "gradScale", "clipValue", "wdPre", "wdPost", "rho", "oneMinusRho", "epsIn", "epsOut",
    "mu", "lrInMomentum", "nesterov", "clipWeights", "bcMs", "bcMg",
    "c1Lr", "c1Fixed", "c2Lr", "c2Fixed", "c3Lr",
)
HYPER_INDEX = {name: i for i, name in enumerate(HYPER_FIELDS)}
MOMENTUM_FIELDS = HYPER_FIELDS[-5:]  # derived by hyper_vector from mu, lrInMomentum and nesterov


def momentum_constants(mu: float, lrInMomentum: bool, nesterov: bool) -> tuple[float, float, float, float, float]:
    """The momentum step as the kernels run it, ``mom = mu * mom + c1 * u;  w -= c2 * mom + c3 * u``.

    A segment with learning rate ``lr`` has ``c1 = c1Lr * lr + c1Fixed``, ``c2 = c2Lr * lr + c2Fixed`` and
    ``c3 = c3Lr * lr``; this returns ``(c1Lr, c1Fixed, c2Lr, c2Fixed, c3Lr)``, each 0, 1 or ``mu``, so that::

        lrInMomentum:      c1 = lr,  c2 = 1      (nesterov: c2 = mu,       c3 = lr; else c3 = 0)
        not lrInMomentum:  c1 = 1,   c2 = lr     (nesterov: c2 = mu * lr,  c3 = lr; else c3 = 0)

    which is the momentum step of :func:`puzzle_rms.backends.reference.rmsprop_update`.
    """
    c2 = mu if nesterov else 1.0
    c3Lr = 1.0 if nesterov else 0.0
    return (1.0, 0.0, 0.0, c2, c3Lr) if lrInMomentum else (0.0, 1.0, c2, 0.0, c3Lr)


def hyper_vector(**values: float) -> np.ndarray:
    """Pack named global scalars into the float64 ``hyper`` vector; missing fields get neutral values.

    The fields :data:`MOMENTUM_FIELDS` are derived here (:func:`momentum_constants`), not given.
    """
    hyper = np.array([1.0, np.inf, 1.0, 0.0, 0.9, 0.1, 0.0, 1e-8, 0.0, 1.0, 0.0, np.inf, 1.0, 1.0]
                     + [0.0] * len(MOMENTUM_FIELDS))
    for name, value in values.items():
        if name in MOMENTUM_FIELDS:
            raise ValueError(f"hyper_vector: {name} is derived from mu, lrInMomentum and nesterov, not given; "
                             f"got {name}={value!r}")
        hyper[HYPER_INDEX[name]] = value
    mu, lrIn, nesterov = (hyper[HYPER_INDEX[name]] for name in ("mu", "lrInMomentum", "nesterov"))
    hyper[HYPER_INDEX[MOMENTUM_FIELDS[0]]:] = momentum_constants(mu, lrIn != 0, nesterov != 0)
    return hyper


_EXPONENT_MASKS = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}


def exponent_view(g: Any) -> tuple[Any, Any]:
    """``g`` (float16/32/64) viewed as unsigned integers of its width, and the mask of its exponent bits."""
    uint, mask = _EXPONENT_MASKS[g.dtype.itemsize]
    return g.view(uint), uint(mask)


@dataclass(frozen=True)
class Layout:
    """Blocks of flat buffers that a kernel walks; ``blocks`` lives where the backend computes."""

    blocks: Any
    hostBlocks: np.ndarray
    numSegments: int
    size: int


def state_dtype(paramDtype: np.dtype) -> np.dtype:
    """The dtype of the optimizer state the kernels keep for parameters of ``paramDtype``.

    float32 for float16 parameters (their squares underflow in float16), else the parameter dtype.
    """
    return np.dtype(np.float32) if paramDtype == np.float16 else np.dtype(paramDtype)


def build_blocks(wOffsets: np.ndarray, sizes: np.ndarray, gOffsets: np.ndarray, blockElems: int) -> np.ndarray:
    """Split each segment ``[wOffset, wOffset + size)`` into blocks of at most ``blockElems`` elements.

    Returns an int64 array of rows ``(wStart, wStop, segment, gStart)``; empty segments get no block.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    counts = -(-sizes // blockElems)
    seg = np.repeat(np.arange(sizes.size, dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    within = np.arange(seg.size, dtype=np.int64) - np.repeat(first, counts)
    start = within * blockElems
    stop = np.minimum(start + blockElems, sizes[seg])
    wBase = np.asarray(wOffsets, dtype=np.int64)[seg]
    gBase = np.asarray(gOffsets, dtype=np.int64)[seg]
    return np.stack([wBase + start, wBase + stop, seg, gBase + start], axis=1) if seg.size else np.zeros((0, 4), np.int64)


class Backend:
    """Base class of the array backends; subclasses provide the array module and the kernels.

    Attributes
    ----------
    name : str
        Registry name (``numpy``, ``numba``, ``cupy``).
    xp : module
        The NumPy-compatible array module arrays of this backend belong to.
    blockElems : int
        Largest number of elements in one kernel block.
    dtypesSupported : tuple of numpy dtypes
        Parameter dtypes the kernels accept.
    """

    name = "base"
    xp: Any = np
    blockElems = 1 << 16
    nonFiniteChunk = 1 << 18  # gradient elements one step of segment_nonfinite's default window loop covers
    dtypesSupported = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))

    # --- arrays ---------------------------------------------------------------------------------
    def to_device(self, array: Any, dtype: Optional[Any] = None) -> Any:
        """Copy a host (or any backend's) array into this backend's memory."""
        return self.xp.asarray(self.to_host(array) if not isinstance(array, self.array_type) else array, dtype=dtype)

    def to_host(self, array: Any) -> np.ndarray:
        """Return ``array`` as a host NumPy array (a copy only when it lives on a device)."""
        get = getattr(array, "get", None)
        return np.asarray(get() if callable(get) and not isinstance(array, np.ndarray) else array)

    @property
    def array_type(self) -> type:
        """The array class of this backend."""
        return self.xp.ndarray

    def owns(self, array: Any) -> bool:
        """Whether ``array`` is an array of this backend."""
        return isinstance(array, self.array_type)

    def zeros(self, shape: Any, dtype: Any = np.float32) -> Any:
        return self.xp.zeros(shape, dtype=dtype)

    def empty(self, shape: Any, dtype: Any = np.float32) -> Any:
        return self.xp.empty(shape, dtype=dtype)

    def full(self, shape: Any, value: float, dtype: Any = np.float32) -> Any:
        return self.xp.full(shape, value, dtype=dtype)

    pageBytes = 4096
    streamStagger = 448  # bytes between the page offsets of successive stream buffers: 7 cache lines, 9 per page

    def stream_buffer(self, size: int, dtype: Any, value: float, index: int) -> Any:
        """``full(size, value, dtype)`` for the ``index``-th buffer that one kernel streams through.

        On the host its first element sits ``index * streamStagger`` bytes (mod a page) past a page boundary.
        Large NumPy arrays all start at the same offset within a page, so the kernels' loads and stores hit
        addresses equal in their low 12 bits, which the CPU must treat as possibly dependent (4K aliasing):
        the centered-momentum step over 200,000 parameters took 129 us with five such buffers and 75 us with
        staggered ones. Device memory has no such effect: there it is plain :meth:`full`.
        """
        if self.xp is not np:
            return self.full(size, value, dtype)
        dtype = np.dtype(dtype)
        raw = np.empty(size * dtype.itemsize + 2 * self.pageBytes, np.uint8)
        start = (-raw.ctypes.data) % self.pageBytes + (index * self.streamStagger) % self.pageBytes
        out = raw[start:start + size * dtype.itemsize].view(dtype)
        out.fill(value)
        return out

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def current_device(self) -> Optional[int]:
        """Index of the current device (caches of device memory are kept per device); None on the CPU."""
        return None

    def use_local_device(self, localRank: int) -> Optional[int]:
        """Make device ``localRank % deviceCount`` current and return its index; None where there are no devices."""
        return None

    # --- layouts --------------------------------------------------------------------------------
    def make_layout(self, sizes: Sequence[int], wOffsets: Optional[Sequence[int]] = None,
                    gOffsets: Optional[Sequence[int]] = None) -> Layout:
        """Describe segments of flat buffers for the kernels.

        ``wOffsets`` default to the segments packed back to back; ``gOffsets`` default to ``wOffsets``
        (a dense update). Different ``gOffsets`` give a gather from a compact gradient (lazy rows).
        """
        sizes = np.asarray(sizes, dtype=np.int64)
        if wOffsets is None:
            wOffsets = np.cumsum(sizes) - sizes
        wOffsets = np.asarray(wOffsets, dtype=np.int64)
        gOffsets = wOffsets if gOffsets is None else np.asarray(gOffsets, dtype=np.int64)
        host = build_blocks(wOffsets, sizes, gOffsets, self.block_elems(int(sizes.sum())))
        return Layout(self.layout_blocks(host, int(sizes.size)), host, int(sizes.size), int(sizes.sum()))

    def block_elems(self, total: int) -> int:
        """Elements per layout block for segments of ``total`` elements in all (``blockElems`` here)."""
        return self.blockElems

    def layout_blocks(self, hostBlocks: np.ndarray, numSegments: int) -> Any:
        """Move a block table of ``numSegments`` segments to where this backend's kernels read it."""
        return hostBlocks

    def seg_params(self, table: np.ndarray, dtype: Any) -> Any:
        """Put a host ``(segments, 4)`` parameter table where the kernels read it, in the compute dtype."""
        return np.ascontiguousarray(table, dtype=dtype)

    # --- kernels (subclasses) -------------------------------------------------------------------
    def rmsprop_update(self, w: Any, g: Any, ms: Any, mg: Optional[Any], mom: Optional[Any],
                       layout: Layout, segParams: Any, hyper: np.ndarray) -> None:
        """Fused in-place RMSProp step over ``layout``, as :func:`.reference.rmsprop_update` states it.

        ``mg`` is None unless centered, ``mom`` None unless momentum is on. ``segParams`` comes
        from :meth:`seg_params`, ``hyper`` from :func:`hyper_vector`.
        """
        raise NotImplementedError

    def rmsprop_update_compressed(self, w: Any, g: Any, ms: Any, msScale: Optional[Any], mg: Optional[Any],
                                  mom: Optional[Any], layout: Layout, segParams: Any, hyper: np.ndarray,
                                  scaleStarts: Optional[Any], keys: np.ndarray) -> None:
        """Fused in-place RMSProp step on compressed state, as :func:`.reference.rmsprop_update_compressed`
        states it: ``ms`` uint16 (bfloat16) or uint8 (8-bit code with ``msScale`` and ``scaleStarts``), ``mg``
        and ``mom`` uint16 or None; ``keys`` from :func:`.compressed_state.state_keys`."""
        raise NotImplementedError

    def sgd_update(self, w: Any, g: Any, mom: Optional[Any], layout: Layout, segParams: Any,
                   hyper: np.ndarray) -> None:
        """In-place SGD step over ``layout`` (with a momentum buffer ``mom`` unless None), as
        :func:`.reference.sgd_update` states it."""
        raise NotImplementedError

    def segment_sumsq(self, g: Any, layout: Layout) -> np.ndarray:
        """Sum of squares of ``g`` per segment of ``layout`` (float64, on the host), in one pass.

        A segment's value is non-finite exactly when one of its elements is: this one reduction
        serves both the finiteness check and norm clipping.
        """
        raise NotImplementedError

    def segment_sumsq_many(self, pairs: Sequence[tuple[Any, Layout]]) -> list[np.ndarray]:
        """:meth:`segment_sumsq` of each ``(g, layout)`` pair; a device backend brings them all to the host in
        one copy, so that a step waits for the device once."""
        return [self.segment_sumsq(g, layout) for g, layout in pairs]

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` of two 2-D arrays; on the host on the BLAS threads that the threading policy gives its
        size (:func:`puzzle_rms.backends.threads.host_matmul`)."""
        return host_matmul(a, b) if self.xp is np else a @ b

    def segment_nonfinite(self, g: Any, layout: Layout) -> np.ndarray:
        """Whether each segment of ``layout`` in the flat ``g`` holds a NaN or an infinity (bool, on the host).

        An element is non-finite exactly when all its exponent bits are set (``bits & expMask == expMask``):
        an integer test that nothing overflows, whatever the values (a float64 sum of squares overflows to
        inf from ``|g| ~ 1e154``). This default counts the offending elements window by window (any ``xp``,
        temporaries of ``nonFiniteChunk`` elements, one transfer of the counts) and maps the few it finds to
        their blocks on the host; a backend may fuse the test into one kernel.
        """
        bad = np.zeros(layout.numSegments, dtype=bool)
        blocks = layout.hostBlocks
        if blocks.shape[0] == 0:
            return bad
        bits, mask = exponent_view(g)
        starts = blocks[:, 3]
        stops = starts + blocks[:, 1] - blocks[:, 0]
        order = np.argsort(starts, kind="stable")
        starts, stops, segments = starts[order], stops[order], blocks[order, 2]
        newRun = np.concatenate(([True], starts[1:] != stops[:-1]))
        runStops = stops[np.concatenate((newRun[1:], [True]))]
        windows = [(base, min(base + self.nonFiniteChunk, last))  # over the runs of back-to-back blocks
                   for first, last in zip(starts[newRun].tolist(), runStops.tolist())
                   for base in range(first, last, self.nonFiniteChunk)]
        xp = self.xp
        counts = [xp.count_nonzero(xp.bitwise_and(bits[a:b], mask) == mask) for a, b in windows]
        for (a, b), count in zip(windows, xp.stack(counts).tolist()):  # one transfer of the counts
            if count:  # rare: only then are the positions computed
                hits = np.asarray(xp.flatnonzero(xp.bitwise_and(bits[a:b], mask) == mask).tolist()) + a
                bad[segments[np.searchsorted(starts, hits, side="right") - 1]] = True
        return bad

    def copy_cast(self, dst: Any, src: Any) -> None:
        """``dst[...] = src`` with a dtype cast, in place."""
        dst[...] = src

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
