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

Compressed state (RMSProp's ``stateDtype``, :mod:`puzzle_rms.backends.compressed_state`):
:func:`rmsprop_update_compressed` decodes the state to float32, takes the step above, rounds the new
state to float32 and encodes it with the codes below, bit for bit::

    bits(i, key)   = mix32(uint32(i) ^ key)                      # i: index in the flat state buffer
    bf16_decode(u) = float32 with bit pattern u << 16
    bf16_encode(x) = (bits32(x) + (bits >> 16)) >> 16            # stochastic rounding of the magnitude;
                                                                 # NaN: (bits32(x) >> 16) | 0x40
    q8_decode(q, scale) = scale * (float32(q) * R)**2            # float32 ops, in this order; R = float32(1/255)
    q8_encode(block):   scale = max(block)  (NaN if one is NaN)  # one scale per 256 elements of a segment
                        y = x * (1 / scale)   (x / scale where 1 / scale overflows: subnormal scales)
                        q0 = min(int(sqrt(y) * 255), 254)
                        a, b = (q0 * R)**2, ((q0 + 1) * R)**2
                        q = q0 + (u * (b - a) < y - a),  u = (bits >> 8) * 2**-24
                        (scale 0: every q = 0; scale inf or NaN: every q = 255)

Both roundings are unbiased (``E[decode(encode(x))] = x``), so a slowly decaying mean square keeps
decaying instead of sticking at a code point.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np

from .backend import HYPER_INDEX, Layout
from .compressed_state import QUANT_BLOCK


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


# --- compressed state ----------------------------------------------------------------------------------------
_F255 = np.float32(255)
R255 = np.float32(1 / 255)  # 255 * R255 == 1 exactly in float32, so code 255 decodes to the scale itself
_U24 = np.float32(2.0 ** -24)


def mix32_array(x: np.ndarray) -> np.ndarray:
    """:func:`~puzzle_rms.backends.compressed_state.mix32` of each element of a uint32 array."""
    x = np.asarray(x, dtype=np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def random_bits(index: np.ndarray, key: int) -> np.ndarray:
    """The 32 random bits of the elements at flat-buffer positions ``index`` for a buffer's ``key``."""
    return mix32_array((np.asarray(index, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32) ^ np.uint32(key))


def bf16_decode(u: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32: exact."""
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_encode(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """float32 to bfloat16 bit patterns with stochastic rounding by the random ``bits`` (uint32).

    The low 16 bits of ``x`` are dropped after adding ``bits >> 16`` to them: the magnitude rounds up
    with probability (dropped part) / 2**16, so the rounding is unbiased for either sign. Infinities
    and zeros are exact; a finite value may round up to infinity above the largest bfloat16; a NaN
    stays a (quiet) NaN of its sign.
    """
    b = np.asarray(x, dtype=np.float32).view(np.uint32)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    rounded = (b + (np.asarray(bits, dtype=np.uint32) >> np.uint32(16))) >> np.uint32(16)
    return np.where(nan, (b >> np.uint32(16)) | np.uint32(0x40), rounded).astype(np.uint16)


def q8_decode(q: np.ndarray, scale: Any) -> np.ndarray:
    """8-bit codes to float32: ``scale * (q * R255)**2`` in float32 (``scale`` per element or one value)."""
    lo = np.asarray(q, dtype=np.uint8).astype(np.float32) * R255
    return np.float32(scale) * (lo * lo) if np.isscalar(scale) else np.asarray(scale, np.float32) * (lo * lo)


def q8_encode(x: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """One quantization block (at most 256 non-negative float32 values) to ``(codes, scale)``.

    ``scale = max(x)``; each value falls between two neighbouring code points ``a = scale * (q0 * R255)**2``
    and ``b = scale * ((q0+1) * R255)**2`` (``y = x * (1 / scale)``: one division per block, unless the reciprocal overflows) and takes the upper one with probability ``(x - a) / (b - a)``
    (the uniform ``u`` from ``bits``), so the rounding is unbiased. A NaN makes the block's scale NaN; a
    scale of inf or NaN codes every element 255 (each decodes to the scale); scale 0 codes 0.
    """
    x = np.asarray(x, dtype=np.float32)
    scale = np.float32(np.nan) if np.isnan(x).any() else np.float32(x.max())
    if not np.isfinite(scale):
        return np.full(x.shape, 255, np.uint8), scale
    if scale == 0:
        return np.zeros(x.shape, np.uint8), scale
    with np.errstate(over="ignore"):
        inv = np.float32(1) / scale
    y = np.maximum(x * inv if np.isfinite(inv) else x / scale, np.float32(0))
    q0 = np.minimum((np.sqrt(y) * _F255).astype(np.int64), 254)
    lo = q0.astype(np.float32) * R255
    hi = (q0 + 1).astype(np.float32) * R255
    a, b = lo * lo, hi * hi
    u = (np.asarray(bits, dtype=np.uint32) >> np.uint32(8)).astype(np.float32) * _U24
    return (q0 + (u * (b - a) < y - a)).astype(np.uint8), scale


def rmsprop_update_compressed(w: np.ndarray, g: np.ndarray, ms: np.ndarray, msScale: Optional[np.ndarray],
                              mg: Optional[np.ndarray], mom: Optional[np.ndarray], layout: Layout,
                              segParams: np.ndarray, hyper: np.ndarray, scaleStarts: Optional[np.ndarray],
                              keys: np.ndarray) -> None:
    """:func:`rmsprop_update` on compressed state, in place: decode, step, round to float32, encode.

    ``ms`` is uint16 (bfloat16) or uint8 (the 8-bit code, with ``msScale``, one float32 per quantization
    block, and ``scaleStarts``, the scale index of each layout block's first element); ``mg`` and ``mom``
    are uint16 (bfloat16) or None. ``keys`` are the uint32 hash keys of ``ms``, ``mg``, ``mom`` for this
    step (:func:`~puzzle_rms.backends.compressed_state.state_keys`). Only the elements of the layout's
    blocks change; an 8-bit block is recoded whole (layout blocks start quantization blocks).
    """
    blocks = layout.hostBlocks
    eight = ms.dtype == np.uint8
    index = np.concatenate([np.arange(a, b) for a, b in blocks[:, :2]]) if blocks.shape[0] else np.zeros(0, np.int64)
    if eight:
        msF = np.zeros(ms.shape, np.float32)
        for (wStart, wStop, _, _), first in zip(blocks, scaleStarts):
            n = int(wStop - wStart)
            perElement = msScale[first + np.arange(n) // QUANT_BLOCK]
            msF[wStart:wStop] = q8_decode(ms[wStart:wStop], perElement)
    else:
        msF = bf16_decode(ms)
    mgF = None if mg is None else bf16_decode(mg)
    momF = None if mom is None else bf16_decode(mom)
    rmsprop_update(w, g, msF, mgF, momF, layout, segParams, hyper)
    if eight:
        for (wStart, wStop, _, _), first in zip(blocks, scaleStarts):
            for k, q in enumerate(range(int(wStart), int(wStop), QUANT_BLOCK)):
                stop = min(q + QUANT_BLOCK, int(wStop))
                ms[q:stop], msScale[first + k] = q8_encode(msF[q:stop], random_bits(np.arange(q, stop), keys[0]))
    else:
        ms[index] = bf16_encode(msF[index], random_bits(index, keys[0]))
    if mg is not None:
        mg[index] = bf16_encode(mgF[index], random_bits(index, keys[1]))
    if mom is not None:
        mom[index] = bf16_encode(momF[index], random_bits(index, keys[2]))
