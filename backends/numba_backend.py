"""Numba backend: fused ``@njit(parallel=True)`` loops over flat host buffers.

Each kernel is one ``prange`` over the layout's blocks; inside a block the loop
runs over slice views from index 0 (absolute indices defeat vectorization) in
the state dtype (float32 scalars keep float32 math). ``error_model="numpy"`` is
essential for SIMD. Kernels are cached on disk (``cache=True``), so only the
first process on a machine pays the compile time, and says so on stderr
(:mod:`puzzle_rms.backends.numba_compile_notice`). Layouts smaller than
:data:`PARALLEL_MIN_ELEMENTS` run the serial twin of each kernel.

Numba has no float16 arithmetic on the CPU: float16 parameters go through
float32 scratch copies around the same kernel. Scratch buffers belong to the
calling thread, so optimizers may step concurrently from several threads.
"""
from __future__ import annotations

import importlib.util
import threading
from typing import Any, Optional

import numpy as np

from .backend import Backend, Layout

# Layouts of fewer elements run on the calling thread: a parallel launch costs ~2 us on an idle machine and
# a scheduler time slice (~10 ms) when the other cores are busy, more than such a layout takes serially.
PARALLEL_MIN_ELEMENTS = 1 << 15


def probe() -> Optional[str]:
    if importlib.util.find_spec("numba") is None:
        return "the package 'numba' is not installed (pip install numba)"
    return None


def create() -> "NumbaBackend":
    return NumbaBackend()


def _kernels():
    """Compile (or load from the disk cache) the kernels; imported lazily so that numpy-only runs skip numba."""
    from . import numba_compile_notice, numba_kernels

    numba_compile_notice.install(numba_kernels.__name__)
    return numba_kernels


class NumbaBackend(Backend):
    """Host arrays, Numba-compiled fused kernels."""

    name = "numba"
    xp = np
    blockElems = 1 << 14

    def __init__(self) -> None:
        self.kernels = _kernels()
        self._local = threading.local()  # scratch buffers of the calling thread

    def _kernel(self, name: str, layout: Layout) -> Any:
        """Kernel ``name``: its parallel version for large layouts, its serial one for small ones."""
        return getattr(self.kernels, name if layout.size >= PARALLEL_MIN_ELEMENTS else f"{name}_serial")

    def _f32(self, key: str, array: np.ndarray) -> np.ndarray:
        """A float32 copy of ``array`` in a scratch buffer of the calling thread."""
        scratch = self._local.__dict__.setdefault("scratch", {})
        buf = scratch.get(key)
        if buf is None or buf.size < array.size:
            buf = scratch[key] = np.empty(array.size, np.float32)
        out = buf[:array.size]
        np.copyto(out, array, casting="unsafe")
        return out

    def seg_params(self, table: np.ndarray, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(table, dtype=np.float32 if np.dtype(dtype) == np.float16 else dtype)

    def rmsprop_update(self, w: np.ndarray, g: np.ndarray, ms: np.ndarray, mg: Optional[np.ndarray],
                       mom: Optional[np.ndarray], layout: Layout, segParams: np.ndarray, hyper: np.ndarray) -> None:
        if layout.hostBlocks.shape[0] == 0:  # nothing to do: skip the parallel launch (and float16 copies)
            return
        half = w.dtype == np.float16
        wc = self._f32("w", w) if half else w
        gc = self._f32("g", g) if g.dtype == np.float16 else g
        empty = ms[:0]
        self._kernel("rmsprop", layout)(wc, gc, ms, empty if mg is None else mg, empty if mom is None else mom,
                                        layout.blocks, segParams, hyper.astype(ms.dtype), mg is not None,
                                        mom is not None)
        if half:
            np.copyto(w, wc, casting="unsafe")

    def rmsprop_update_compressed(self, w: np.ndarray, g: np.ndarray, ms: np.ndarray, msScale: Optional[np.ndarray],
                                  mg: Optional[np.ndarray], mom: Optional[np.ndarray], layout: Layout,
                                  segParams: np.ndarray, hyper: np.ndarray, scaleStarts: Optional[np.ndarray],
                                  keys: np.ndarray) -> None:
        if layout.hostBlocks.shape[0] == 0:
            return
        from . import numba_state_kernels as state

        half = w.dtype == np.float16
        wc = self._f32("w", w) if half else w
        gc = self._f32("g", g) if g.dtype == np.float16 else g
        none16 = np.zeros(0, np.uint16)
        serial = "_serial" if layout.size < PARALLEL_MIN_ELEMENTS else ""
        tail = (mg is not None, mom is not None)
        common = (none16 if mg is None else mg, none16 if mom is None else mom, layout.blocks, segParams,
                  hyper.astype(np.float32))
        if msScale is None:
            getattr(state, "rmsprop_bf16" + serial)(wc, gc, ms, *common, keys, *tail)
        else:
            getattr(state, "rmsprop_q8" + serial)(wc, gc, ms, msScale, *common, scaleStarts, keys, *tail)
        if half:
            np.copyto(w, wc, casting="unsafe")

    def sgd_update(self, w: np.ndarray, g: np.ndarray, mom: Optional[np.ndarray], layout: Layout,
                   segParams: np.ndarray, hyper: np.ndarray) -> None:
        if layout.hostBlocks.shape[0] == 0:
            return
        half = w.dtype == np.float16
        wc = self._f32("w", w) if half else w
        gc = self._f32("g", g) if g.dtype == np.float16 else g
        self._kernel("sgd", layout)(wc, gc, wc[:0] if mom is None else mom, layout.blocks, segParams,
                                    hyper.astype(wc.dtype), mom is not None)
        if half:
            np.copyto(w, wc, casting="unsafe")

    def segment_sumsq(self, g: np.ndarray, layout: Layout) -> np.ndarray:
        if layout.hostBlocks.shape[0] == 0:
            return np.zeros(layout.numSegments)
        nblocks = layout.hostBlocks.shape[0]
        sums = self._local.__dict__.get("blockSums")
        if sums is None or sums.size < nblocks:
            sums = self._local.blockSums = np.empty(nblocks)
        partial = sums[:nblocks]
        self._kernel("block_sumsq", layout)(g if g.dtype != np.float16 else self._f32("g", g), layout.blocks, partial)
        return np.bincount(layout.hostBlocks[:, 2], weights=partial, minlength=layout.numSegments)
