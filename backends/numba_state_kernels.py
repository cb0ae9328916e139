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
        lo = k * QUANT_BLOCK
        hi = min(lo + QUANT_BLOCK, x.size)
        scales[k] = _q8_store(x[lo:hi], out[lo:hi], index0 + lo, np.uint32(key))


@njit(**_EXACT)
def _q8_store(row, out, index0, key):
    """Encode one quantization block ``row`` (non-negative or NaN) into ``out``; returns its scale.

    The maximum is taken over the bit patterns: for non-negative floats their order is the values' order,
    and every NaN pattern lies above infinity's, so one integer reduction (which vectorizes) finds the
    largest value or a NaN.
    """
    bits = row.view(np.uint32)
    top = np.uint32(0)
    for i in range(bits.size):
        top = max(top, bits[i])
    scale = _NAN if (top & _SIGNLESS) > _INF_BITS or top > _SIGNLESS else np.uint32(top).view(np.float32)
    if not np.isfinite(scale):
        out[:] = 255
    elif scale == np.float32(0):
        out[:] = 0
    else:
        inv = np.float32(1) / scale
        if np.isfinite(inv):
            for i in range(row.size):
                out[i] = q8_code(row[i] * inv, bits_at(index0 + i, key))
        else:  # a subnormal scale, whose reciprocal overflows
            for i in range(row.size):
                out[i] = q8_code(row[i] / scale, bits_at(index0 + i, key))
    return scale


@njit(**_INLINE)
def _elements(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, centered, momentum):
    """Decode, step and encode elements ``0 .. n-1`` of a block at flat position ``w0``; with ``eight`` the
    new mean squares go to ``row`` (encoded by the caller) and ``qs`` is the block's scale."""
    gradScale, wScale, wdPre, wdPost, lr, c1, c2, c3 = p
    zero = np.float32(0)
    rho, omr, epsIn, epsOut = hyper[_RHO], hyper[_OMR], hyper[_EPSIN], hyper[_EPSOUT]
    mu, nesterov, cv, cw, bcMs, bcMg = hyper[_MU], hyper[_NEST], hyper[_CV], hyper[_CW], hyper[_BCMS], hyper[_BCMG]
    kMs, kMg, kMom = np.uint32(keys[0]), np.uint32(keys[1]), np.uint32(keys[2])
    for i in range(n):
        index = w0 + i
        wi = np.float32(ww[i]) * wScale
        gi = min(max(np.float32(gg[i]) * gradScale + wdPre * wi, -cv), cv) + wdPost * wi
        if eight:
            m = rho * q8_decode(mm[i], qs) + omr * gi * gi
            row[i] = m
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
        ww[i] = min(max(wi, -cw), cw)


@njit(**_INLINE)
def _variant(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, centered, momentum):
    """:func:`_elements` with ``centered`` and ``momentum`` turned into literals."""
    if centered and momentum:
        _elements(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, True)
    elif centered:
        _elements(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, True, False)
    elif momentum:
        _elements(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, True)
    else:
        _elements(w0, n, ww, gg, mm, qs, aa, vv, p, hyper, keys, row, eight, False, False)


@njit(**_INLINE)
def _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum):
    w0 = blocks[b, 0]
    n = blocks[b, 1] - w0
    s = blocks[b, 2]
    g0 = blocks[b, 3]
    lr, wd, wScale = seg[s, 0], seg[s, 1], seg[s, 2]
    p = (hyper[_GS] * seg[s, 3], wScale, wd * hyper[_WDPRE], wd * hyper[_WDPOST], lr,
         hyper[_C1LR] * lr + hyper[_C1FIX], hyper[_C2LR] * lr + hyper[_C2FIX], hyper[_C3LR] * lr)
    aa = mg[w0:w0 + n] if centered else mg
    vv = mom[w0:w0 + n] if momentum else mom
    if scales.size == 0:  # bfloat16 mean square
        _variant(w0, n, w[w0:w0 + n], g[g0:g0 + n], ms[w0:w0 + n], np.float32(0), aa, vv, p, hyper, keys,
                 scales, False, centered, momentum)
        return
    row = np.empty(QUANT_BLOCK, np.float32)
    key = np.uint32(keys[0])
    for k in range(0, n, QUANT_BLOCK):
        m = min(QUANT_BLOCK, n - k)
        q = scaleStarts[b] + k // QUANT_BLOCK
        a = w0 + k
        _variant(a, m, w[a:a + m], g[g0 + k:g0 + k + m], ms[a:a + m], scales[q],
                 mg[a:a + m] if centered else mg, mom[a:a + m] if momentum else mom, p, hyper, keys, row, True,
                 centered, momentum)
        scales[q] = _q8_store(row[:m], ms[a:a + m], a, key)


@njit(**_PARALLEL)
def rmsprop_compressed(w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum):
    """One fused RMSProp step on compressed state over every block, blocks spread over the threads."""
    for b in prange(blocks.shape[0]):
        _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum)


@njit(**_SERIAL)
def rmsprop_compressed_serial(w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum):
    """:func:`rmsprop_compressed` on the calling thread alone."""
    for b in range(blocks.shape[0]):
        _block(b, w, g, ms, scales, mg, mom, blocks, seg, hyper, scaleStarts, keys, centered, momentum)
