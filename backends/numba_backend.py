"""Numba backend: fused ``@njit(parallel=True)`` loops over flat host buffers.

Each kernel is one ``prange`` over the layout's blocks; inside a block the loop
runs over slice views from index 0 (absolute indices defeat vectorization) in
the state dtype (float32 scalars keep float32 math). ``error_model="numpy"`` is
essential for SIMD. Kernels are cached on disk (``cache=True``), so only the
first process on a machine pays the compile time, and says so on stderr
(:mod:`puzzle_rms.backends.numba_compile_notice`). How many threads a kernel
runs on is :mod:`puzzle_rms.backends.threads`'s policy; on one thread the
serial twin of the kernel runs and Numba's thread pool is never started.

Numba has no float16 arithmetic on the CPU: float16 parameters go through
float32 scratch copies around the same kernel. Scratch buffers belong to the
calling thread, so optimizers may step concurrently from several threads.
"""
from __future__ import annotations

import gc as gc_module
import importlib.util
import threading
from typing import Any, Optional

import numpy as np

from .backend import Backend, Layout, exponent_view
from .threads import kernel_threads



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
    _frozen = False  # gc.freeze ran after this process's first kernel call

    def __init__(self) -> None:
        import numba

        self.kernels = _kernels()
        self._numba = numba
        self._local = threading.local()  # scratch buffers of the calling thread

    def _kernel(self, name: str, layout: Layout) -> Any:
        """Kernel ``name`` on the threads the policy gives ``layout``: its serial twin on one."""
        return getattr(self.kernels, name + self._twin(layout))

    def _twin(self, layout: Layout) -> str:
        """``"_serial"`` when the threading policy gives ``layout`` one thread; else ``""``, with Numba's pool set
        to the policy's count."""
        count = kernel_threads(layout.size)
        if count == 1:
            return "_serial"
        if self._numba.get_num_threads() != count:
            self._numba.set_num_threads(count)
        return ""

    def _launch(self, name: str, layout: Layout, *args: Any) -> None:
        """Run kernel ``name`` over ``layout``. After the process's first kernel call, the objects alive then
        (Numba's import, its typing machinery, the loaded kernels) are moved out of the garbage collector's
        reach (``gc.freeze``): full collections, and the one at exit, no longer walk them (the exit's alone
        took ~0.25 s of a 1 s warm example run)."""
        self._kernel(name, layout)(*args)
        if not NumbaBackend._frozen:
            NumbaBackend._frozen = True
            gc_module.freeze()

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
        self._launch("rmsprop", layout, wc, gc, ms, empty if mg is None else mg, empty if mom is None else mom,
                     layout.blocks, segParams, hyper.astype(ms.dtype), mg is not None, mom is not None)
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
        serial = self._twin(layout)
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
        self._launch("sgd", layout, wc, gc, wc[:0] if mom is None else mom, layout.blocks, segParams,
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
        self._launch("block_sumsq", layout, g if g.dtype != np.float16 else self._f32("g", g), layout.blocks, partial)
        return np.bincount(layout.hostBlocks[:, 2], weights=partial, minlength=layout.numSegments)

    def segment_nonfinite(self, g: np.ndarray, layout: Layout) -> np.ndarray:
        bad = np.zeros(layout.numSegments, dtype=bool)
        blocks = layout.hostBlocks
        if blocks.shape[0] == 0:
            return bad
        flags = np.empty(blocks.shape[0], dtype=bool)
        bits, mask = exponent_view(g)
        self._launch("block_nonfinite", layout, bits, layout.blocks, mask, flags)
        bad[blocks[flags, 2]] = True
        return bad
