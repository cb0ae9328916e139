"""NumPy backend: the kernels as a chunked, allocation-free fast path in NumPy ufuncs.

The kernels compute what :mod:`puzzle_rms.backends.reference` states, and are tested
against it. To be usable without Numba they never allocate in the step: every ufunc
writes with ``out=`` into the state buffers themselves or into scratch buffers that
are reused from call to call (each thread has its own, so optimizers may step
concurrently from several threads), and the work goes in chunks of :data:`CHUNK`
elements so that the scratch buffers and the chunk's state stay in cache while
a dozen passes go over them. Terms that are neutral (no weight decay, infinite
clip bounds, a weight scale of 1, eps 0) are skipped, which leaves the result
unchanged. Short runs that share their parameters (the rows of a lazy sparse
update, many small tensors with their own learning rates) are gathered into
one chunk, computed, and scattered back, so that a step costs a dozen ufunc
calls per chunk rather than per run.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Iterator, Optional

import numpy as np

from .backend import HYPER_INDEX as H, Backend, Layout
from .numpy_state_kernels import rmsprop_compressed

CHUNK = 1 << 16
SHORT_RUN = 1 << 10  # runs shorter than this are gathered together


def probe() -> Optional[str]:
    """NumPy is a core dependency, so this backend is always usable."""
    return None


def create() -> "NumpyBackend":
    return NumpyBackend()


def _pieces(layout: Layout, segParams: np.ndarray) -> Iterator[tuple[int, Any, Any]]:
    """Yield ``(segment, wSel, gSel)``, the pieces a step computes at once, each at most about CHUNK elements.

    Neighbouring blocks that are contiguous and whose segments share parameters form runs. A long run comes
    as slices (``w[wSel]`` is a view); consecutive short runs with equal parameters come together as index
    arrays (gathered and scattered back). ``segment`` is one whose parameters the piece has.
    """
    blocks = layout.hostBlocks
    if blocks.shape[0] == 0:
        return
    seg = blocks[:, 2]
    params = segParams[seg]
    joins = ((blocks[1:, 0] == blocks[:-1, 1]) & (blocks[1:, 3] - blocks[1:, 0] == blocks[:-1, 3] - blocks[:-1, 0])
             & np.all(params[1:] == params[:-1], axis=1))
    first = np.flatnonzero(np.concatenate(([True], ~joins)))
    last = np.concatenate((first[1:], [blocks.shape[0]])) - 1
    wStart, gStart, runSeg = blocks[first, 0], blocks[first, 3], seg[first]
    size = blocks[last, 1] - wStart
    for r in np.flatnonzero(size >= SHORT_RUN).tolist():
        for c in range(0, int(size[r]), CHUNK):
            n = min(CHUNK, int(size[r]) - c)
            yield int(runSeg[r]), slice(int(wStart[r]) + c, int(wStart[r]) + c + n), \
                slice(int(gStart[r]) + c, int(gStart[r]) + c + n)
    short = np.flatnonzero(size < SHORT_RUN)
    if short.size == 0:
        return
    before = np.cumsum(size[short]) - size[short]
    shortParams = params[first[short]]
    cuts = np.flatnonzero(np.concatenate(([True], np.any(shortParams[1:] != shortParams[:-1], axis=1)
                                          | (before[1:] // CHUNK != before[:-1] // CHUNK))))
    for a, b in zip(cuts.tolist(), cuts[1:].tolist() + [short.size]):
        runs = short[a:b]
        sizes = size[runs]
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        yield int(runSeg[runs[0]]), np.repeat(wStart[runs], sizes) + within, np.repeat(gStart[runs], sizes) + within


class NumpyBackend(Backend):
    """Host arrays, NumPy ufuncs."""

    name = "numpy"
    xp = np

    def __init__(self) -> None:
        self._local = threading.local()  # scratch buffers of the calling thread

    def _buffers(self, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """Seven scratch buffers of ``dtype`` owned by the calling thread, each large enough for one piece."""
        scratch = self._local.__dict__.setdefault("scratch", {})
        if dtype not in scratch:
            scratch[dtype] = tuple(np.empty(CHUNK + SHORT_RUN, dtype) for _ in range(7))
        return scratch[dtype]

    def rmsprop_update(self, w: np.ndarray, g: np.ndarray, ms: np.ndarray, mg: Optional[np.ndarray],
                       mom: Optional[np.ndarray], layout: Layout, segParams: np.ndarray, hyper: np.ndarray) -> None:
        ct = ms.dtype.type
        hp = {name: ct(hyper[i]) for name, i in H.items()}
        clipGrad, clipWeights = math.isfinite(hp["clipValue"]), math.isfinite(hp["clipWeights"])
        mixed = w.dtype != ms.dtype
        wBuf, gBuf, den, tmp, msBuf, mgBuf, momBuf = self._buffers(ms.dtype)
        for s, wSel, gSel in _pieces(layout, segParams):
            gathered = not isinstance(wSel, slice)
            n = wSel.size if gathered else wSel.stop - wSel.start
            lr, wd, wScale, segGradScale = (ct(x) for x in segParams[s])
            gradScale = hp["gradScale"] * segGradScale
            d, t = den[:n], tmp[:n]
            # the weights in the compute dtype: the parameter itself (or its gathered elements), or a float32
            # copy of float16 ones
            if mixed:
                wc = wBuf[:n]
                np.copyto(wc, w[wSel])
            else:
                wc = _piece(w, wSel, wBuf)
            # w = w * wScale;  g = clip(g * gradScale + wdPre * wd * w) + wdPost * wd * w
            if wScale != 1:
                wc *= wScale
            if gradScale == 1 and not wd and not clipGrad and g.dtype == ms.dtype:
                gc = _piece(g, gSel, gBuf)  # the gradient as it is (only read below)
            else:
                gc = np.multiply(g[gSel], gradScale, out=gBuf[:n])
                if wd:
                    gc += np.multiply(hp["wdPre"] * wd, wc, out=t)
                if clipGrad:
                    np.clip(gc, -hp["clipValue"], hp["clipValue"], out=gc)
                if wd:
                    gc += np.multiply(hp["wdPost"] * wd, wc, out=t)
            # ms = rho * ms + (1 - rho) * g * g
            mm = _piece(ms, wSel, msBuf)
            mm *= hp["rho"]
            np.multiply(hp["oneMinusRho"], gc, out=t)
            mm += np.multiply(t, gc, out=t)
            # v = bcMs * ms, centered: max(v - (bcMg * mg)**2, 0);  den = sqrt(v + epsIn) + epsOut
            v = mm if hp["bcMs"] == 1 else np.multiply(hp["bcMs"], mm, out=d)
            if mg is not None:
                ag = _piece(mg, wSel, mgBuf)
                ag *= hp["rho"]
                ag += np.multiply(hp["oneMinusRho"], gc, out=t)
                np.square(ag if hp["bcMg"] == 1 else np.multiply(hp["bcMg"], ag, out=t), out=t)
                v = np.maximum(np.subtract(v, t, out=d), 0, out=d)
            if hp["epsIn"]:
                v = np.add(v, hp["epsIn"], out=d)
            np.sqrt(v, out=d)
            d += hp["epsOut"]
            update = np.divide(gc, d, out=d)
            # momentum: mom = mu * mom + c1 * u;  w -= c2 * mom (+ c3 * u, nesterov);  else w -= lr * u
            if mom is not None:
                c1 = hp["c1Lr"] * lr + hp["c1Fixed"]
                c2 = hp["c2Lr"] * lr + hp["c2Fixed"]
                vv = _piece(mom, wSel, momBuf)
                vv *= hp["mu"]
                vv += update if c1 == 1 else np.multiply(c1, update, out=t)
                wc -= np.multiply(c2, vv, out=t)
                if hp["nesterov"]:
                    wc -= np.multiply(hp["c3Lr"] * lr, update, out=t)
            else:
                wc -= np.multiply(lr, update, out=t)
            if clipWeights:
                np.clip(wc, -hp["clipWeights"], hp["clipWeights"], out=wc)
            if gathered:  # scatter the gathered elements back
                ms[wSel] = mm
                if mg is not None:
                    mg[wSel] = ag
                if mom is not None:
                    mom[wSel] = vv
            if gathered or mixed:
                w[wSel] = wc

    def rmsprop_update_compressed(self, w: np.ndarray, g: np.ndarray, ms: np.ndarray, msScale: Optional[np.ndarray],
                                  mg: Optional[np.ndarray], mom: Optional[np.ndarray], layout: Layout,
                                  segParams: np.ndarray, hyper: np.ndarray, scaleStarts: Optional[np.ndarray],
                                  keys: np.ndarray) -> None:
        rmsprop_compressed(w, g, ms, msScale, mg, mom, layout.hostBlocks, segParams, hyper, scaleStarts, keys)

    def sgd_update(self, w: np.ndarray, g: np.ndarray, mom: Optional[np.ndarray], layout: Layout,
                   segParams: np.ndarray, hyper: np.ndarray) -> None:
        ct = segParams.dtype.type  # the compute dtype: float32 for float16 parameters (and the momentum's)
        mixed = w.dtype != segParams.dtype
        gradScale, mu, nesterov = hyper[H["gradScale"]], ct(hyper[H["mu"]]), hyper[H["nesterov"]] != 0
        wBuf, gBuf, vBuf = self._buffers(segParams.dtype)[:3]
        for s, wSel, gSel in _pieces(layout, segParams):
            lr, _, wScale, segGradScale = segParams[s]
            if mixed:  # float16 weights: computed in a float32 copy, rounded once when written back
                ww = wBuf[:wSel.size if not isinstance(wSel, slice) else wSel.stop - wSel.start]
                np.copyto(ww, w[wSel])
            else:
                ww = w[wSel]  # a view of a slice; a copy of gathered elements, written back below
            ww *= ct(wScale)
            step = np.multiply(g[gSel], ct(lr * gradScale * segGradScale), out=gBuf[:ww.size])
            if mom is None:
                ww -= step
            else:
                vv = mom[wSel]  # mom = mu * mom + step; w -= mom, or w -= mu * mom + step (nesterov)
                vv *= mu
                vv += step
                if nesterov:
                    ahead = np.multiply(vv, mu, out=vBuf[:ww.size])
                    ahead += step
                    ww -= ahead
                else:
                    ww -= vv
                if not isinstance(wSel, slice):
                    mom[wSel] = vv
            if mixed or not isinstance(wSel, slice):
                w[wSel] = ww

    def segment_sumsq(self, g: np.ndarray, layout: Layout) -> np.ndarray:
        blocks = layout.hostBlocks
        partial = np.zeros(blocks.shape[0])
        squares = self._local.__dict__.get("squares")
        if squares is None:
            squares = self._local.squares = np.empty(CHUNK + self.blockElems)
        for first, last, start, stop in _gradient_windows(blocks):
            x = squares[:stop - start]
            np.copyto(x, g[start:stop])  # float64, so that the sums neither round badly nor overflow
            if last - first == 1:
                partial[first] = np.dot(x, x)
            else:
                partial[first:last] = np.add.reduceat(np.multiply(x, x, out=x), blocks[first:last, 3] - start)
        return np.bincount(blocks[:, 2], weights=partial, minlength=layout.numSegments)


def _gradient_windows(blocks: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(first, last, gStart, gStop)``: blocks ``first .. last-1`` lie back to back in the gradient
    over ``[gStart, gStop)``, at most ``CHUNK`` plus one block long."""
    if blocks.shape[0] == 0:
        return
    gStart = blocks[:, 3]
    gStop = gStart + blocks[:, 1] - blocks[:, 0]
    newRun = np.concatenate(([True], gStart[1:] != gStop[:-1]))
    runStart = gStart[newRun][np.cumsum(newRun) - 1]
    window = (gStart - runStart) // CHUNK
    cuts = np.flatnonzero(newRun | np.concatenate(([True], window[1:] != window[:-1])))
    for first, last in zip(cuts.tolist(), cuts[1:].tolist() + [blocks.shape[0]]):
        yield first, last, int(gStart[first]), int(gStop[last - 1])


def _piece(array: np.ndarray, sel: Any, scratch: np.ndarray) -> np.ndarray:
    """``array[sel]``: a view for a slice; for an index array, the gathered elements in ``scratch``."""
    if isinstance(sel, slice):
        return array[sel]
    return np.take(array, sel, out=scratch[:sel.size])
