"""Numba kernels of the RMSProp step on compressed state (formula and codes: :mod:`puzzle_rms.backends.reference`).

One ``prange`` over the layout's blocks, as in :mod:`puzzle_rms.backends.numba_kernels`. Each element is
decoded, stepped in float32 and encoded in one pass; an 8-bit block goes in quantization blocks of 256
elements, whose new mean squares wait in a 256-element scratch row until their maximum (the new
scale) is known. The codes must round exactly as the reference does, so this file compiles without
fast-math (no reassociation, reciprocals or contractions); the hash runs in 32-bit integers. ``eight``, ``centered`` and ``momentum`` are literals at every call of the element loops.
"""
import numpy as np
from numba import njit, prange

from .backend import HYPER_INDEX as H
from .compressed_state import QUANT_BLOCK

_GS, _CV, _WDPRE, _WDPOST = H["gradScale"], H["clipValue"], H["wdPre"], H["wdPost"]
_RHO, _OMR, _EPSIN, _EPSOUT = H["rho"], H["oneMinusRho"], H["epsIn"], H["epsOut"]
_MU, _NEST, _CW, _BCMS, _BCMG = H["mu"], H["nesterov"], H["clipWeights"], H["bcMs"], H["bcMg"]
_C1LR, _C1FIX, _C2LR, _C2FIX, _C3LR = H["c1Lr"], H["c1Fixed"], H["c2Lr"], H["c2Fixed"], H["c3Lr"]

_EXACT = dict(error_model="numpy", nogil=True)
_INLINE = dict(inline="always", **_EXACT)
_PARALLEL = dict(parallel=True, cache=True, **_EXACT)
_SERIAL = dict(cache=True, **_EXACT)

_K1, _K2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_S8, _S15, _S16 = np.uint32(8), np.uint32(15), np.uint32(16)
_SIGNLESS, _INF_BITS, _QUIET = np.uint32(0x7FFFFFFF), np.uint32(0x7F800000), np.uint32(0x40)
_F255 = np.float32(255)
_R255 = np.float32(1 / 255)
_U24 = np.float32(2.0 ** -24)
_NAN = np.float32(np.nan)


@njit(**_EXACT)
def mix32(x):
    """:func:`~puzzle_rms.backends.compressed_state.mix32` of a uint32 (each product truncated to 32 bits, which
    LLVM turns into 32-bit vector multiplies)."""
    x = np.uint32(x ^ (x >> _S16))
    x = np.uint32(x * _K1)
    x = np.uint32(x ^ (x >> _S15))
    x = np.uint32(x * _K2)
    return np.uint32(x ^ (x >> _S16))


@njit(**_EXACT)
def bits_at(index, key):
    """The random bits of flat position ``index`` (an int64, taken modulo 2**32) for a buffer's ``key``."""
    return mix32(np.uint32(np.uint32(index) ^ key))


@njit(**_EXACT)
def bf16_decode(u):
    return np.uint32(np.uint32(u) << _S16).view(np.float32)


@njit(**_EXACT)
def bf16_encode(x, bits):
    """float32 ``x`` to a bfloat16 bit pattern, rounded up in magnitude when ``bits >> 16`` carries."""
    b = np.float32(x).view(np.uint32)
    if (b & _SIGNLESS) > _INF_BITS:
        return np.uint16(np.uint32(b >> _S16) | _QUIET)
    return np.uint16(np.uint32(b + (bits >> _S16)) >> _S16)


@njit(**_EXACT)
def q8_decode(q, scale):
    lo = np.float32(q) * _R255
    return scale * (lo * lo)


@njit(**_EXACT)
def q8_code(y, bits):
    """The code of ``y = x * (1 / scale)`` (finite scale > 0), stochastically rounded by ``bits``."""
    y = max(y, np.float32(0))
    q0 = min(np.int32(np.sqrt(y) * _F255), np.int32(254))
    lo = np.float32(q0) * _R255
    hi = np.float32(q0 + 1) * _R255
    a = lo * lo
    u = np.float32(bits >> _S8) * _U24
    return np.uint8(q0 + 1) if u * (hi * hi - a) < y - a else np.uint8(q0)


@njit(**_EXACT)
def bf16_encode_array(x, index0, key, out):
    """``out[i] = bf16_encode(x[i])`` for elements at flat positions ``index0 + i`` (for tests)."""
    k = np.uint32(key)
    for i in range(x.size):
        out[i] = bf16_encode(x[i], bits_at(index0 + i, k))


@njit(**_EXACT)
def q8_encode_array(x, index0, key, out, scales):
    """The 8-bit code of ``x`` (one segment at flat position ``index0``) into ``out`` and ``scales`` (for tests)."""
    for k in range(scales.size):
        scales[k] = _q8_store(x[k * QUANT_BLOCK:], out, k * QUANT_BLOCK, min(QUANT_BLOCK, x.size - k * QUANT_BLOCK),
                              index0, np.uint32(key))


@njit(**_EXACT)
def _q8_store(row, out, start, m, index0, key):
    """Encode ``row[:m]`` (non-negative or NaN) into ``out[start:start + m]``, flat positions ``index0 + start``
    on; returns its scale.

    The maximum is taken over the bit patterns: for non-negative floats their order is the values' order,
    and every NaN pattern lies above infinity's, so one integer reduction (which vectorizes) finds the
    largest value or a NaN.
    """
    bits = row.view(np.uint32)
    top = np.uint32(0)
    for i in range(m):
        top = max(top, bits[i])
    scale = _NAN if (top & _SIGNLESS) > _INF_BITS or top > _SIGNLESS else np.uint32(top).view(np.float32)
    if not np.isfinite(scale):
        out[start:start + m] = 255
    elif scale == np.float32(0):
        out[start:start + m] = 0
    else:
        inv = np.float32(1) / scale
        if np.isfinite(inv):
            for i in range(m):
                out[start + i] = q8_code(row[i] * inv, bits_at(index0 + start + i, key))
        else:  # a subnormal scale, whose reciprocal overflows
            for i in range(m):
                out[start + i] = q8_code(row[i] / scale, bits_at(index0 + start + i, key))
    return scale


@njit(**_EXACT)
def _clip(x, bound):
    """``x`` limited to ``[-bound, bound]``; NaN stays NaN (as NumPy's minimum(maximum(x, -bound), bound))."""
    return -bound if x < -bound else (bound if x > bound else x)


@njit(**_INLINE)
def _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, centered, momentum, bare):
    """Decode, step and encode elements ``start .. stop-1`` of a block at flat position ``w0``; with ``eight``
    the new mean squares go to ``row[i - start]`` (encoded by the caller) and ``qs`` is their scale. ``bare``:
    no weight scaling, weight decay or clipping in this block (their terms are left out, as neutral)."""
    gradScale, wScale, wdPre, wdPost, lr, c1, c2, c3 = p
    zero = np.float32(0)
    rho, omr, epsIn, epsOut = hyper[_RHO], hyper[_OMR], hyper[_EPSIN], hyper[_EPSOUT]
    mu, nesterov, cv, cw, bcMs, bcMg = hyper[_MU], hyper[_NEST], hyper[_CV], hyper[_CW], hyper[_BCMS], hyper[_BCMG]
    kMs, kMg, kMom = np.uint32(keys[0]), np.uint32(keys[1]), np.uint32(keys[2])
    for i in range(start, stop):
        index = w0 + i
        if bare:
            wi = np.float32(ww[i])
            gi = np.float32(gg[i]) * gradScale
        else:
            wi = np.float32(ww[i]) * wScale
            gi = _clip(np.float32(gg[i]) * gradScale + wdPre * wi, cv) + wdPost * wi
        if eight:
            m = rho * q8_decode(mm[i], qs) + omr * gi * gi
            row[i - start] = m
        else:
            m = rho * bf16_decode(mm[i]) + omr * gi * gi
            mm[i] = bf16_encode(m, bits_at(index, kMs))
        if centered:
            a = rho * bf16_decode(aa[i]) + omr * gi
            aa[i] = bf16_encode(a, bits_at(index, kMg))
            v = max(bcMs * m - (bcMg * a) * (bcMg * a), zero)
        else:
            v = bcMs * m
        u = gi / (np.sqrt(v + epsIn) + epsOut)
        if momentum:
            mv = mu * bf16_decode(vv[i]) + c1 * u
            vv[i] = bf16_encode(mv, bits_at(index, kMom))
            wi = wi - c2 * mv
            if nesterov != zero:
                wi = wi - c3 * u
        else:
            wi = wi - lr * u
        ww[i] = wi if bare else _clip(wi, cw)


@njit(**_INLINE)
def _variant(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, centered, momentum, bare):
    """:func:`_elements` with ``centered``, ``momentum`` and ``bare`` turned into literals."""
    if centered and momentum:
        if bare:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, True, True)
        else:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, True, False)
    elif centered:
        if bare:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, False, True)
        else:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, False, False)
    elif momentum:
        if bare:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, True, True)
        else:
            _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, True, False)
    elif bare:
        _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, False, True)
    else:
        _elements(w0, start, stop, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, False, False)


@njit(**_INLINE)
def _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, eight, centered, momentum):
    """One layout block: its segment's scalars, then the element loop (8-bit: per quantization block)."""
    w0 = blocks[b, 0]
    n = blocks[b, 1] - w0
    s = blocks[b, 2]
    g0 = blocks[b, 3]
    lr, wd, wScale = seg[s, 0], seg[s, 1], seg[s, 2]
    p = (hyper[_GS] * seg[s, 3], wScale, wd * hyper[_WDPRE], wd * hyper[_WDPOST], lr,
         hyper[_C1LR] * lr + hyper[_C1FIX], hyper[_C2LR] * lr + hyper[_C2FIX], hyper[_C3LR] * lr)
    bare = wd == np.float32(0) and wScale == np.float32(1) and hyper[_CV] == np.inf and hyper[_CW] == np.inf
    ww, gg, mm = w[w0:w0 + n], g[g0:g0 + n], ms[w0:w0 + n]
    aa = mg[w0:w0 + n] if centered else mg
    vv = mom[w0:w0 + n] if momentum else mom
    if not eight:
        _variant(w0, 0, n, ww, gg, mm, np.float32(0), aa, vv, p, hyper, keys, scales, False, centered, momentum,
                 bare)
        return
    row = np.empty(QUANT_BLOCK, np.float32)
    key = np.uint32(keys[0])
    for k in range(0, n, QUANT_BLOCK):
        m = min(QUANT_BLOCK, n - k)
        q = scaleStarts[b] + k // QUANT_BLOCK
        _variant(w0 + k, 0, m, ww[k:k + m], gg[k:k + m], mm[k:k + m], scales[q], aa[k:k + m] if centered else aa,
                 vv[k:k + m] if momentum else vv, p, hyper, keys, row, True, centered, momentum, bare)
        scales[q] = _q8_store(row, mm[k:k + m], 0, m, w0 + k, key)


@njit(**_PARALLEL)
def rmsprop_bf16(w, g, ms, mg, mom, blocks, seg, hyper, keys, centered, momentum):
    """One fused RMSProp step with bfloat16 state over every block, blocks spread over the threads."""
    none = np.zeros(0, np.float32)
    for b in prange(blocks.shape[0]):
        _block(b, w, g, ms, none, mg, mom, blocks, seg, hyper, blocks[:, 0], keys, False, centered, momentum)


@njit(**_SERIAL)
def rmsprop_bf16_serial(w, g, ms, mg, mom, blocks, seg, hyper, keys, centered, momentum):
    """:func:`rmsprop_bf16` on the calling thread alone."""
    none = np.zeros(0, np.float32)
    for b in range(blocks.shape[0]):
        _block(b, w, g, ms, none, mg, mom, blocks, seg, hyper, blocks[:, 0], keys, False, centered, momentum)


@njit(**_PARALLEL)
def rmsprop_q8(w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum):
    """One fused RMSProp step with the 8-bit mean square (and bfloat16 mg, mom) over every block, in parallel."""
    for b in prange(blocks.shape[0]):
        _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, True, centered, momentum)


@njit(**_SERIAL)
def rmsprop_q8_serial(w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum):
    """:func:`rmsprop_q8` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, True, centered, momentum)
