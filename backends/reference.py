"""The kernel contract in plain NumPy: what every backend's fused kernels compute.

:func:`rmsprop_update`, :func:`sgd_update` and :func:`segment_sumsq` take the arguments of the
:class:`~puzzle_rms.backends.backend.Backend` methods of the same names, as host arrays: flat
buffers, a :class:`~puzzle_rms.backends.backend.Layout` from any backend's ``make_layout``, the
host ``segParams`` table (columns ``lr, wd, wScale, segGradScale``) and ``hyper`` from
:func:`~puzzle_rms.backends.backend.hyper_vector` (``hyper.x`` below is its field ``x``). They go
one segment at a time, in float64, with no chunking and no skipped terms, and round once, when
they store the results in the arrays' own dtypes. Every backend is tested against them on the same
inputs (tests/test_kernels.py); tests/test_reference.py checks them against the textbook formula
and closed forms.

RMSProp, per element of segment ``s``, with ``lr, wd, wScale, segGradScale = segParams[s]``::

    w   = wScale * w                                   # decoupled weight decay: wScale = 1 - lr * decay
    g   = hyper.gradScale * segGradScale * g           # 1/lossScale, -1 to maximize, a norm-clip factor
    g   = g + hyper.wdPre * wd * w                     # coupled weight decay before the value clip ...
    g   = clip(g, -hyper.clipValue, hyper.clipValue)
    g   = g + hyper.wdPost * wd * w                    # ... or after it
    ms  = hyper.rho * ms + hyper.oneMinusRho * g * g
    mg  = hyper.rho * mg + hyper.oneMinusRho * g       # centered (mg given)
    v   = max(hyper.bcMs * ms - (hyper.bcMg * mg)**2, 0)    if centered
    v   = hyper.bcMs * ms                                   otherwise
    u   = g / (sqrt(v + hyper.epsIn) + hyper.epsOut)
    w   = w - lr * u                                   # no momentum (mom is None)
    mom = mu * mom + lr * u;  w = w - mom              # lrInMomentum
    mom = mu * mom + u;       w = w - lr * mom         # not lrInMomentum
    w   = w - (mu * mom + lr * u)                      # nesterov, lrInMomentum, instead of w - mom
    w   = w - (mu * lr * mom + lr * u)                 # nesterov, not lrInMomentum, instead of w - lr * mom
    w   = clip(w, -hyper.clipWeights, hyper.clipWeights)

(``mu = hyper.mu``; lrInMomentum and nesterov are hyper's flags, 0 or 1. The kernels run the momentum
lines as ``mom = mu * mom + c1 * u; w -= c2 * mom + c3 * u`` with constants that ``hyper`` carries, from
:func:`~puzzle_rms.backends.backend.momentum_constants`.)

SGD, per element of segment ``s`` (momentum as in :func:`sgd_update`); and the sum of squares per
segment, in float64::

    w = wScale * w - lr * hyper.gradScale * segGradScale * g
    sumsq[s] = sum(g**2)
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from .backend import HYPER_INDEX, Layout


def _segments(layout: Layout) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(segment, wIndex, gIndex)``: each segment's element indices in the weights (and state) and in
    the gradient, its blocks joined in order."""
    blocks = layout.hostBlocks
    for s in range(layout.numSegments):
        own = blocks[blocks[:, 2] == s]
        wIndex = [np.arange(wStart, wStop) for wStart, wStop, _, _ in own]
        gIndex = [np.arange(gStart, gStart + wStop - wStart) for wStart, wStop, _, gStart in own]
        if wIndex:
            yield s, np.concatenate(wIndex), np.concatenate(gIndex)


def rmsprop_update(w: np.ndarray, g: np.ndarray, ms: np.ndarray, mg: Optional[np.ndarray],
                   mom: Optional[np.ndarray], layout: Layout, segParams: np.ndarray, hyper: np.ndarray) -> None:
    """One RMSProp step over ``layout``, in place, as this module's docstring states it.

    ``mg`` is None unless centered, ``mom`` None without momentum.
    """
    h = {name: float(hyper[i]) for name, i in HYPER_INDEX.items()}
    mu = h["mu"]
    for s, wi, gi in _segments(layout):
        lr, wd, wScale, segGradScale = (float(x) for x in segParams[s])
        W = w[wi].astype(np.float64)
        G = g[gi].astype(np.float64)
        MS = ms[wi].astype(np.float64)

        W = wScale * W
        G = h["gradScale"] * segGradScale * G
        G = G + h["wdPre"] * wd * W
        G = np.clip(G, -h["clipValue"], h["clipValue"])
        G = G + h["wdPost"] * wd * W
        MS = h["rho"] * MS + h["oneMinusRho"] * G * G
        if mg is not None:
            MG = h["rho"] * mg[wi].astype(np.float64) + h["oneMinusRho"] * G
            V = np.maximum(h["bcMs"] * MS - (h["bcMg"] * MG) ** 2, 0.0)
            mg[wi] = MG
        else:
            V = h["bcMs"] * MS
        U = G / (np.sqrt(V + h["epsIn"]) + h["epsOut"])
        if mom is None:
            W = W - lr * U
        elif h["lrInMomentum"]:
            MOM = mu * mom[wi].astype(np.float64) + lr * U
            W = W - (mu * MOM + lr * U) if h["nesterov"] else W - MOM
            mom[wi] = MOM
        else:
            MOM = mu * mom[wi].astype(np.float64) + U
            W = W - (mu * lr * MOM + lr * U) if h["nesterov"] else W - lr * MOM
            mom[wi] = MOM
        W = np.clip(W, -h["clipWeights"], h["clipWeights"])
        ms[wi] = MS
        w[wi] = W


def sgd_update(w: np.ndarray, g: np.ndarray, mom: Optional[np.ndarray], layout: Layout, segParams: np.ndarray,
               hyper: np.ndarray) -> None:
    """One SGD step over ``layout``, in place, with ``u = lr * gradScale * segGradScale * g``::

        w   = wScale * w - u                          # no momentum (mom is None)
        mom = mu * mom + u;  w = wScale * w - mom     # momentum (PuzzleLib's MomentumSGD)
        mom = mu * mom + u;  w = wScale * w - (mu * mom + u)   # nesterov (PuzzleLib's NesterovSGD)
    """
    gradScale, mu = float(hyper[HYPER_INDEX["gradScale"]]), float(hyper[HYPER_INDEX["mu"]])
    nesterov = hyper[HYPER_INDEX["nesterov"]] != 0
    for s, wi, gi in _segments(layout):
        lr, _, wScale, segGradScale = (float(x) for x in segParams[s])
        u = lr * gradScale * segGradScale * g[gi].astype(np.float64)
        w64 = wScale * w[wi].astype(np.float64)
        if mom is None:
            w[wi] = w64 - u
            continue
        m = mu * mom[wi].astype(np.float64) + u
        mom[wi] = m
        w[wi] = w64 - (mu * m + u if nesterov else m)


def segment_sumsq(g: np.ndarray, layout: Layout) -> np.ndarray:
    """Sum of squares of ``g`` per segment of ``layout``, in float64."""
    sums = np.zeros(layout.numSegments)
    for s, _, gi in _segments(layout):
        sums[s] = np.sum(g[gi].astype(np.float64) ** 2)
    return sums
