"""Numba kernels behind :mod:`puzzle_rms.backends.numba_backend` (formula: :mod:`puzzle_rms.backends.reference`).

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

# Fast-math without 'nnan'/'ninf': infinities are the "no clipping" bounds, and NaNs must propagate. Nor
# 'contract' or 'reassoc' in the update kernels, measured: with 'contract' the centered variance
# ``bcMs*ms - (bcMg*mg)**2`` becomes an FMA whose rounding differs from NumPy's where the two terms cancel
# (a constant gradient: steps up to 1.7x NumPy's after 200-300 float32 updates in our probe, and unbounded
# in general, since the root of a rounding residual is divided by); with 'reassoc' ``(1 - rho) * g * g``
# may square first, which overflows float32 for |g| > 1.8e19 where NumPy's order does not, leaving
# ``ms = inf`` and the weight frozen for good. Without them the kernels give NumPy's numbers.
FASTMATH = {"nsz", "arcp", "afn"}
# The sum-of-squares pass may reassociate (vectorised summation): the order only changes a norm's rounding.
REDUCTION_FASTMATH = FASTMATH | {"reassoc"}

_GS, _CV, _WDPRE, _WDPOST = H["gradScale"], H["clipValue"], H["wdPre"], H["wdPost"]
_RHO, _OMR, _EPSIN, _EPSOUT = H["rho"], H["oneMinusRho"], H["epsIn"], H["epsOut"]
_MU, _NEST, _CW, _BCMS, _BCMG = H["mu"], H["nesterov"], H["clipWeights"], H["bcMs"], H["bcMg"]
_C1LR, _C1FIX, _C2LR, _C2FIX, _C3LR = H["c1Lr"], H["c1Fixed"], H["c2Lr"], H["c2Fixed"], H["c3Lr"]

_INLINE = dict(inline="always", error_model="numpy", fastmath=FASTMATH)
_PARALLEL = dict(parallel=True, error_model="numpy", fastmath=FASTMATH, cache=True, nogil=True)
_SERIAL = dict(error_model="numpy", fastmath=FASTMATH, cache=True, nogil=True)
_SUM = dict(fastmath=REDUCTION_FASTMATH)  # the sum-of-squares kernels: as above, free to reassociate the sum


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
    c1 = hyper[_C1LR] * lr + hyper[_C1FIX]
    c2 = hyper[_C2LR] * lr + hyper[_C2FIX]
    c3 = hyper[_C3LR] * lr
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
def _sgd_block(b, w, g, mom, blocks, seg, hyper, momentum):
    w0 = blocks[b, 0]
    n = blocks[b, 1] - w0
    s = blocks[b, 2]
    g0 = blocks[b, 3]
    step = seg[s, 0] * seg[s, 3] * hyper[_GS]
    wScale = seg[s, 2]
    ww = w[w0:w0 + n]
    gg = g[g0:g0 + n]
    if momentum:
        mu, nesterov = hyper[_MU], hyper[_NEST]
        one = hyper.dtype.type(1)
        vv = mom[w0:w0 + n]
        for i in range(n):
            u = step * gg[i]
            v = mu * vv[i] + u
            vv[i] = v
            ww[i] = ww[i] * wScale - ((nesterov * mu + (one - nesterov)) * v + nesterov * u)
    else:
        for i in range(n):
            ww[i] = ww[i] * wScale - step * gg[i]


@njit(**_PARALLEL)
def sgd(w, g, mom, blocks, seg, hyper, momentum):
    """``w = w * wScale - lr * gradScale * g`` per block, or its momentum form (see ``Backend.sgd_update``)."""
    for b in prange(blocks.shape[0]):
        _sgd_block(b, w, g, mom, blocks, seg, hyper, momentum)


@njit(**_SERIAL)
def sgd_serial(w, g, mom, blocks, seg, hyper, momentum):
    """:func:`sgd` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        _sgd_block(b, w, g, mom, blocks, seg, hyper, momentum)


@njit(**{**_INLINE, **_SUM})
def _block_sumsq(b, g, blocks):
    g0 = blocks[b, 3]
    gg = g[g0:g0 + blocks[b, 1] - blocks[b, 0]]
    acc = 0.0
    for i in range(gg.size):
        x = np.float64(gg[i])
        acc += x * x
    return acc


@njit(**{**_PARALLEL, **_SUM})
def block_sumsq(g, blocks, out):
    """``out[b]`` = sum of squares of block ``b`` of ``g``, accumulated in float64."""
    for b in prange(blocks.shape[0]):
        out[b] = _block_sumsq(b, g, blocks)


@njit(**{**_SERIAL, **_SUM})
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
