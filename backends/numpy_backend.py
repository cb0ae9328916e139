"""NumPy backend: the readable reference every other backend is tested against.

The kernels follow the formula in :mod:`backends.backend` line by line. To be
usable without Numba they avoid temporaries: ufuncs write into a reused
scratch buffer with ``out=``, in chunks of :data:`CHUNK` elements so that the
scratch stays in cache.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np

from backends.backend import HYPER_INDEX as H, Backend, Layout

CHUNK = 1 << 15


def probe() -> Optional[str]:
    """NumPy is a core dependency, so this backend is always usable."""
    return None


def create() -> "NumpyBackend":
    return NumpyBackend()


def _runs(layout: Layout, segParams: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(wStart, wStop, gStart, segment)`` runs: neighbouring blocks merged when contiguous and
    their segments share parameters, then cut into chunks of at most CHUNK elements."""
    blocks = layout.hostBlocks
    if blocks.shape[0] == 0:
        return
    seg = blocks[:, 2]
    params = segParams[seg]
    joins = ((blocks[1:, 0] == blocks[:-1, 1]) & (blocks[1:, 3] - blocks[1:, 0] == blocks[:-1, 3] - blocks[:-1, 0])
             & np.all(params[1:] == params[:-1], axis=1))
    starts = np.flatnonzero(np.concatenate(([True], ~joins)))
    stops = np.concatenate((starts[1:], [blocks.shape[0]])) - 1
    for first, last in zip(starts.tolist(), stops.tolist()):
        w0, w1, s, g0 = blocks[first, 0], blocks[last, 1], blocks[first, 2], blocks[first, 3]
        for c in range(w0, w1, CHUNK):
            yield int(c), int(min(c + CHUNK, w1)), int(g0 + c - w0), int(s)


class NumpyBackend(Backend):
    """Host arrays, NumPy ufuncs."""

    name = "numpy"
    xp = np

    def __init__(self) -> None:
        self._scratch: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    def _buffers(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        if dtype not in self._scratch:
            self._scratch[dtype] = (np.empty(CHUNK, dtype), np.empty(CHUNK, dtype))
        return self._scratch[dtype]

    def rmsprop_update(self, w: np.ndarray, g: np.ndarray, ms: np.ndarray, mg: Optional[np.ndarray],
                       mom: Optional[np.ndarray], layout: Layout, segParams: np.ndarray, hyper: np.ndarray) -> None:
        ct = ms.dtype.type
        hp = {name: ct(hyper[i]) for name, i in H.items()}
        mixed = w.dtype != ms.dtype
        a, b = self._buffers(ms.dtype)
        for w0, w1, g0, s in _runs(layout, segParams):
            n = w1 - w0
            lr, wd, wScale, segGradScale = (ct(x) for x in segParams[s])
            ww, mm = w[w0:w1], ms[w0:w1]
            wc = a[:n]  # weights in the compute dtype
            gc = b[:n]  # the gradient as the kernel sees it
            np.multiply(ww, wScale, out=wc)
            np.multiply(g[g0:g0 + n], hp["gradScale"] * segGradScale, out=gc)
            if wd:
                gc += (hp["wdPre"] * wd) * wc
                np.clip(gc, -hp["clipValue"], hp["clipValue"], out=gc)
                gc += (hp["wdPost"] * wd) * wc
            else:
                np.clip(gc, -hp["clipValue"], hp["clipValue"], out=gc)
            # ms = rho * ms + (1 - rho) * g * g
            mm *= hp["rho"]
            mm += hp["oneMinusRho"] * gc * gc
            # den = sqrt(v + epsIn) + epsOut, with v the (centered, bias-corrected) mean square
            den = hp["bcMs"] * mm
            if mg is not None:
                ag = mg[w0:w1]
                ag *= hp["rho"]
                ag += hp["oneMinusRho"] * gc
                den -= np.square(hp["bcMg"] * ag)
                np.maximum(den, 0, out=den)
            den += hp["epsIn"]
            np.sqrt(den, out=den)
            den += hp["epsOut"]
            update = np.divide(gc, den, out=den)
            if mom is not None:
                nesterov, lrIn = hp["nesterov"], hp["lrInMomentum"]
                c1 = lr if lrIn else ct(1)
                c2 = (hp["mu"] if nesterov else ct(1)) * (ct(1) if lrIn else lr)
                vv = mom[w0:w1]
                vv *= hp["mu"]
                vv += c1 * update
                wc -= c2 * vv
                if nesterov:
                    wc -= lr * update
            else:
                wc -= lr * update
            np.clip(wc, -hp["clipWeights"], hp["clipWeights"], out=wc)
            if mixed:
                ww[...] = wc
            else:
                np.copyto(ww, wc)

    def sgd_update(self, w: np.ndarray, g: np.ndarray, layout: Layout, segParams: np.ndarray,
                   hyper: np.ndarray) -> None:
        gradScale = hyper[H["gradScale"]]
        for w0, w1, g0, s in _runs(layout, segParams):
            lr, _, wScale, segGradScale = segParams[s]
            ww = w[w0:w1]
            ww *= w.dtype.type(wScale)
            ww -= w.dtype.type(lr * gradScale * segGradScale) * g[g0:g0 + w1 - w0]

    def segment_sumsq(self, g: np.ndarray, layout: Layout) -> np.ndarray:
        sums = np.zeros(layout.numSegments)
        for w0, w1, s, g0 in layout.hostBlocks.tolist():
            piece = g[g0:g0 + w1 - w0].astype(np.float64, copy=False)
            sums[s] += np.dot(piece, piece)
        return sums
