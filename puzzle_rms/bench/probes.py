"""The ceiling each row is compared with: a fused loop with the step's own access pattern and byte count.

Numba on the CPU; on the GPU a CuPy kernel, and a device copy of the same bytes. The arithmetic is trivial
and bounded, so the probe's time is the memory traffic alone. STREAM triad would not do: it pays
write-allocate, which an in-place update does not. The CPU probe gets what the library's kernels get: its
buffers at staggered page offsets (``Backend.stream_buffer``) and the threads the threading policy gives
its size.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends.backend import Backend
from puzzle_rms.backends.threads import kernel_threads
from puzzle_rms.bench.cases import STATE_BUFFERS, Case
from puzzle_rms.bench.timing import Row


@lru_cache(maxsize=None)
def _numba_probes() -> tuple[Callable, Callable]:
    """Fused CPU loops with the step's access pattern and trivial, bounded arithmetic (compiled on first use)."""
    from numba import njit, prange

    from puzzle_rms.backends.numba_kernels import FASTMATH

    @njit(parallel=True, error_model="numpy", fastmath=FASTMATH)
    def plain(w, g, ms, half):  # reads w, g, ms; writes w, ms
        for i in prange(w.size):
            m = half * ms[i] + g[i]
            ms[i] = m
            w[i] = half * w[i] - m

    @njit(parallel=True, error_model="numpy", fastmath=FASTMATH)
    def centered_momentum(w, g, ms, mg, mom, half):  # reads w, g, ms, mg, mom; writes w, ms, mg, mom
        for i in prange(w.size):
            gi = g[i]
            m = half * ms[i] + gi
            a = half * mg[i] + gi
            v = half * mom[i] + m
            ms[i] = m
            mg[i] = a
            mom[i] = v
            w[i] = half * w[i] - v + a

    return plain, centered_momentum


def cpu_probe(case: Case, n: int) -> Optional[Row]:
    """The fused-pattern probe over ``n`` elements, or None without Numba (NumPy cannot fuse a loop)."""
    if backends.unavailable_reason("numba") is not None:
        return None
    import numba

    plain, centeredMomentum = _numba_probes()
    host = Backend()
    buffers = [host.stream_buffer(n, np.float32, 0.5, i) for i in range(2 + STATE_BUFFERS[case.variant])]
    half = np.float32(0.5)
    call = (lambda: plain(*buffers, half)) if case.variant == "plain" else (lambda: centeredMomentum(*buffers, half))
    reads, writes = len(buffers), len(buffers) - 1
    threads = kernel_threads(n)
    return Row(f"probe: fused {reads} reads + {writes} writes (numba)", "cpu", "probe", "numba", call,
               n * case.bytesPerParam, activate=lambda: numba.set_num_threads(threads))


def gpu_probes(case: Case, n: int) -> list[Row]:
    """The fused-pattern probe as a CuPy kernel, and a device copy of the same byte count."""
    import cupy

    dtype = np.dtype(case.dtype)
    state = np.float32 if dtype == np.float16 else dtype
    w, g = cupy.full(n, 0.5, dtype), cupy.full(n, 0.5, dtype)
    sync = cupy.cuda.get_current_stream().synchronize
    if case.variant == "plain":
        ms = cupy.full(n, 0.5, state)
        kernel = cupy.ElementwiseKernel(
            "G g", "T w, S ms", "S m = ms * (S)0.5 + (S)g; ms = m; w = (T)((S)w * (S)0.5 - m);", "rmsprop_probe_plain")
        args = (g, w, ms)
    else:
        ms, mg, mom = (cupy.full(n, 0.5, state) for _ in range(3))
        kernel = cupy.ElementwiseKernel(
            "G g", "T w, S ms, S mg, S mom",
            "S m = ms * (S)0.5 + (S)g; S a = mg * (S)0.5 + (S)g; S v = mom * (S)0.5 + m; ms = m; mg = a; mom = v;"
            " w = (T)((S)w * (S)0.5 - v + a);", "rmsprop_probe_centered_momentum")
        args = (g, w, ms, mg, mom)
    stepBytes = n * case.bytesPerParam
    src, dst = cupy.zeros(stepBytes // 8, np.float32), cupy.zeros(stepBytes // 8, np.float32)
    rows = [Row("probe: fused same-pattern kernel (cupy)", "gpu", "probe", "cupy", lambda: kernel(*args), stepBytes),
            Row("probe: device copy of the same bytes", "gpu", "copy", "cupy", lambda: cupy.copyto(dst, src),
                stepBytes)]
    for row in rows:
        row.sync = sync
    return rows
