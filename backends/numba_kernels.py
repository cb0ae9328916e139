"""Numba kernels behind :mod:`backends.numba_backend` (formula: :mod:`backends.backend`).

All scalars are read from arrays of the state dtype, so float32 state keeps
the whole loop in float32. Branches on ``centered``/``momentum`` sit outside
the element loops: one specialised loop per variant keeps each loop vectorizable.
"""
import numpy as np
from numba import njit, prange

from backends.backend import HYPER_INDEX as H
from backends.numba_backend import FASTMATH

_GS, _CV, _WDPRE, _WDPOST = H["gradScale"], H["clipValue"], H["wdPre"], H["wdPost"]
_RHO, _OMR, _EPSIN, _EPSOUT = H["rho"], H["oneMinusRho"], H["epsIn"], H["epsOut"]
_MU, _LRIN, _NEST, _CW, _BCMS, _BCMG = H["mu"], H["lrInMomentum"], H["nesterov"], H["clipWeights"], H["bcMs"], H["bcMg"]

_OPTIONS = dict(parallel=True, error_model="numpy", fastmath=FASTMATH, cache=True, nogil=True)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _effective_grad(w, g, wScale, gradScale, wdPre, wdPost, clipValue):
    """Decoupled decay on w, then the gradient with scale, coupled decay and value clipping."""
    w = w * wScale
    g = g * gradScale + wdPre * w
    g = min(max(g, -clipValue), clipValue)
    return w, g + wdPost * w


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _clip(x, bound):
    return min(max(x, -bound), bound)


@njit(**_OPTIONS)
def rmsprop(w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum):
    """One fused RMSProp step over every block; see the module docstring of backends.backend."""
    zero = hyper[_GS] - hyper[_GS]
    one = zero + 1
    rho, omr, epsIn, epsOut = hyper[_RHO], hyper[_OMR], hyper[_EPSIN], hyper[_EPSOUT]
    mu, lrIn, nesterov, cv, cw = hyper[_MU], hyper[_LRIN], hyper[_NEST], hyper[_CV], hyper[_CW]
    bcMs, bcMg = hyper[_BCMS], hyper[_BCMG]
    for b in prange(blocks.shape[0]):
        w0 = blocks[b, 0]
        n = blocks[b, 1] - w0
        s = blocks[b, 2]
        g0 = blocks[b, 3]
        lr, wd, wScale = seg[s, 0], seg[s, 1], seg[s, 2]
        gradScale = hyper[_GS] * seg[s, 3]
        wdPre, wdPost = wd * hyper[_WDPRE], wd * hyper[_WDPOST]
        c1 = lrIn * lr + (one - lrIn)
        c2 = (nesterov * mu + (one - nesterov)) * (lrIn + (one - lrIn) * lr)
        c3 = nesterov * lr
        ww = w[w0:w0 + n]
        gg = g[g0:g0 + n]
        mm = ms[w0:w0 + n]
        if centered and momentum:
            aa = mg[w0:w0 + n]
            vv = mom[w0:w0 + n]
            for i in range(n):
                wi, gi = _effective_grad(ww[i], gg[i], wScale, gradScale, wdPre, wdPost, cv)
                m = rho * mm[i] + omr * gi * gi
                mm[i] = m
                a = rho * aa[i] + omr * gi
                aa[i] = a
                u = gi / (np.sqrt(max(bcMs * m - (bcMg * a) * (bcMg * a), zero) + epsIn) + epsOut)
                v = mu * vv[i] + c1 * u
                vv[i] = v
                ww[i] = _clip(wi - c2 * v - c3 * u, cw)
        elif centered:
            aa = mg[w0:w0 + n]
            for i in range(n):
                wi, gi = _effective_grad(ww[i], gg[i], wScale, gradScale, wdPre, wdPost, cv)
                m = rho * mm[i] + omr * gi * gi
                mm[i] = m
                a = rho * aa[i] + omr * gi
                aa[i] = a
                u = gi / (np.sqrt(max(bcMs * m - (bcMg * a) * (bcMg * a), zero) + epsIn) + epsOut)
                ww[i] = _clip(wi - lr * u, cw)
        elif momentum:
            vv = mom[w0:w0 + n]
            for i in range(n):
                wi, gi = _effective_grad(ww[i], gg[i], wScale, gradScale, wdPre, wdPost, cv)
                m = rho * mm[i] + omr * gi * gi
                mm[i] = m
                u = gi / (np.sqrt(bcMs * m + epsIn) + epsOut)
                v = mu * vv[i] + c1 * u
                vv[i] = v
                ww[i] = _clip(wi - c2 * v - c3 * u, cw)
        else:
            for i in range(n):
                wi, gi = _effective_grad(ww[i], gg[i], wScale, gradScale, wdPre, wdPost, cv)
                m = rho * mm[i] + omr * gi * gi
                mm[i] = m
                ww[i] = _clip(wi - lr * gi / (np.sqrt(bcMs * m + epsIn) + epsOut), cw)


@njit(**_OPTIONS)
def sgd(w, g, blocks, seg, hyper):
    """``w = w * wScale - lr * gradScale * g`` per block."""
    for b in prange(blocks.shape[0]):
        w0 = blocks[b, 0]
        n = blocks[b, 1] - w0
        s = blocks[b, 2]
        g0 = blocks[b, 3]
        step = seg[s, 0] * seg[s, 3] * hyper[_GS]
        wScale = seg[s, 2]
        ww = w[w0:w0 + n]
        gg = g[g0:g0 + n]
        for i in range(n):
            ww[i] = ww[i] * wScale - step * gg[i]


@njit(**_OPTIONS)
def block_sumsq(g, blocks):
    """Per-block sum of squares, accumulated in float64."""
    out = np.empty(blocks.shape[0], np.float64)
    for b in prange(blocks.shape[0]):
        g0 = blocks[b, 3]
        gg = g[g0:g0 + blocks[b, 1] - blocks[b, 0]]
        acc = 0.0
        for i in range(gg.size):
            x = np.float64(gg[i])
            acc += x * x
        out[b] = acc
    return out
