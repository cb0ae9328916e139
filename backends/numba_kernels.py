"""Numba kernels behind :mod:`puzzle_rms.backends.numba_backend` (formula: :mod:`puzzle_rms.backends.backend`).

All scalars are read from arrays of the state dtype, so float32 state keeps
the whole loop in float32 (constants are made with ``hyper.dtype.type``: a bare
``1`` would promote the loop to float64). Each block's element loop is one
inlined function; the block code calls it with literal flags (centered,
momentum, and ``bare`` when the block has no weight decay, no clipping and no
weight scaling), so every variant compiles to its own branch-free, vectorized
loop and the common case skips the unused arithmetic.

Every kernel exists twice, compiled from the same block function: with a
``prange`` over blocks (``rmsprop``, ...) and as a serial loop
(``rmsprop_serial``, ...). A parallel launch costs microseconds on an idle
machine and a scheduler time slice on a busy one, so small layouts run serially.
"""
import numpy as np
from numba import njit, prange

from .backend import HYPER_INDEX as H
from .numba_backend import FASTMATH

_GS, _CV, _WDPRE, _WDPOST = H["gradScale"], H["clipValue"], H["wdPre"], H["wdPost"]
_RHO, _OMR, _EPSIN, _EPSOUT = H["rho"], H["oneMinusRho"], H["epsIn"], H["epsOut"]
_MU, _LRIN, _NEST, _CW, _BCMS, _BCMG = H["mu"], H["lrInMomentum"], H["nesterov"], H["clipWeights"], H["bcMs"], H["bcMg"]

_INLINE = dict(inline="always", error_model="numpy", fastmath=FASTMATH)
_PARALLEL = dict(parallel=True, error_model="numpy", fastmath=FASTMATH, cache=True, nogil=True)
_SERIAL = dict(error_model="numpy", fastmath=FASTMATH, cache=True, nogil=True)


@njit(**_INLINE)
def _clip(x, bound):
    return min(max(x, -bound), bound)


@njit(**_INLINE)
def _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, centered, momentum, bare):
    """The element loop of one block: ``p`` holds the block's scalars; ``centered``, ``momentum`` and
    ``bare`` are literals at every call."""
    gradScale, wScale, wdPre, wdPost, lr, c1, c2, c3 = p
    zero = hyper.dtype.type(0)
    rho, omr, epsIn, epsOut = hyper[_RHO], hyper[_OMR], hyper[_EPSIN], hyper[_EPSOUT]
    mu, nesterov, cv, cw, bcMs, bcMg = hyper[_MU], hyper[_NEST], hyper[_CV], hyper[_CW], hyper[_BCMS], hyper[_BCMG]
    for i in range(ww.size):
        if bare:
            wi = ww[i]
            gi = gg[i] * gradScale
        else:
            wi = ww[i] * wScale
            gi = _clip(gg[i] * gradScale + wdPre * wi, cv) + wdPost * wi
        m = rho * mm[i] + omr * gi * gi
        mm[i] = m
        if centered:
            a = rho * aa[i] + omr * gi
            aa[i] = a
            v = max(bcMs * m - (bcMg * a) * (bcMg * a), zero)
        else:
            v = bcMs * m
        u = gi / (np.sqrt(v + epsIn) + epsOut)
        if momentum:
            mv = mu * vv[i] + c1 * u
            vv[i] = mv
            wi = wi - c2 * mv
            if nesterov != zero:
                wi = wi - c3 * u
        else:
            wi = wi - lr * u
        ww[i] = wi if bare else _clip(wi, cw)


@njit(**_INLINE)
def _rmsprop_block(b, w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum):
    """One RMSProp block: its segment's scalars, then the loop specialised for the variant."""
    zero = hyper.dtype.type(0)
    one = hyper.dtype.type(1)
    w0 = blocks[b, 0]
    n = blocks[b, 1] - w0
    s = blocks[b, 2]
    g0 = blocks[b, 3]
    lr, wd, wScale = seg[s, 0], seg[s, 1], seg[s, 2]
    gradScale = hyper[_GS] * seg[s, 3]
    wdPre, wdPost = wd * hyper[_WDPRE], wd * hyper[_WDPOST]
    lrIn, nesterov, mu = hyper[_LRIN], hyper[_NEST], hyper[_MU]
    c1 = lrIn * lr + (one - lrIn)
    c2 = (nesterov * mu + (one - nesterov)) * (lrIn + (one - lrIn) * lr)
    c3 = nesterov * lr
    p = (gradScale, wScale, wdPre, wdPost, lr, c1, c2, c3)
    bare = wd == zero and wScale == one and hyper[_CV] == np.inf and hyper[_CW] == np.inf
    ww = w[w0:w0 + n]
    gg = g[g0:g0 + n]
    mm = ms[w0:w0 + n]
    aa = mg[w0:w0 + n] if centered else mg
    vv = mom[w0:w0 + n] if momentum else mom
    if centered and momentum:
        if bare:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, True, True, True)
        else:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, True, True, False)
    elif centered:
        if bare:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, True, False, True)
        else:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, True, False, False)
    elif momentum:
        if bare:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, False, True, True)
        else:
            _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, False, True, False)
    elif bare:
        _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, False, False, True)
    else:
        _rmsprop_loop(ww, gg, mm, aa, vv, p, hyper, False, False, False)


@njit(**_PARALLEL)
def rmsprop(w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum):
    """One fused RMSProp step over every block, blocks spread over the threads."""
    for b in prange(blocks.shape[0]):
        _rmsprop_block(b, w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum)


@njit(**_SERIAL)
def rmsprop_serial(w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum):
    """:func:`rmsprop` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        _rmsprop_block(b, w, g, ms, mg, mom, blocks, seg, hyper, centered, momentum)


@njit(**_INLINE)
def _sgd_block(b, w, g, blocks, seg, hyper):
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


@njit(**_PARALLEL)
def sgd(w, g, blocks, seg, hyper):
    """``w = w * wScale - lr * gradScale * g`` per block."""
    for b in prange(blocks.shape[0]):
        _sgd_block(b, w, g, blocks, seg, hyper)


@njit(**_SERIAL)
def sgd_serial(w, g, blocks, seg, hyper):
    """:func:`sgd` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        _sgd_block(b, w, g, blocks, seg, hyper)


@njit(**_INLINE)
def _block_sumsq(b, g, blocks):
    g0 = blocks[b, 3]
    gg = g[g0:g0 + blocks[b, 1] - blocks[b, 0]]
    acc = 0.0
    for i in range(gg.size):
        x = np.float64(gg[i])
        acc += x * x
    return acc


@njit(**_PARALLEL)
def block_sumsq(g, blocks, out):
    """``out[b]`` = sum of squares of block ``b`` of ``g``, accumulated in float64."""
    for b in prange(blocks.shape[0]):
        out[b] = _block_sumsq(b, g, blocks)


@njit(**_SERIAL)
def block_sumsq_serial(g, blocks, out):
    """:func:`block_sumsq` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        out[b] = _block_sumsq(b, g, blocks)


@njit(**_INLINE)
def _block_nonfinite(b, bits, blocks, mask):
    g0 = blocks[b, 3]
    gg = bits[g0:g0 + blocks[b, 1] - blocks[b, 0]]
    top = mask ^ mask
    for i in range(gg.size):
        top = max(top, gg[i] & mask)
    return top == mask


@njit(**_PARALLEL)
def block_nonfinite(bits, blocks, mask, out):
    """``out[b]``: whether block ``b`` of the gradient, viewed as unsigned integers ``bits``, has an element
    with every exponent bit of ``mask`` set (a NaN or an infinity)."""
    for b in prange(blocks.shape[0]):
        out[b] = _block_nonfinite(b, bits, blocks, mask)


@njit(**_SERIAL)
def block_nonfinite_serial(bits, blocks, mask, out):
    """:func:`block_nonfinite` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        out[b] = _block_nonfinite(b, bits, blocks, mask)
