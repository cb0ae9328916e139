"""The RMSProp step on compressed state (bfloat16 or 8-bit) for the NumPy backend.

One layout block at a time, vectorized in float32: decode the block's state, take the step in the
order the Numba kernel takes it (so that both round alike), encode. The hash and the bfloat16 code
are the reference's own vectorized definitions (:mod:`puzzle_rms.backends.reference`); the 8-bit code
is encoded here for a whole layout block at once, one row per quantization block. Unlike the float32
path this one allocates temporaries per block: it is the portable fallback, and the Numba and CuPy
kernels are the fast paths.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .backend import HYPER_INDEX as H
from .compressed_state import QUANT_BLOCK
from .reference import R255, bf16_decode, bf16_encode, random_bits

_F255 = np.float32(255)
_U24 = np.float32(2.0 ** -24)


def q8_decode_rows(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Decode ``n`` codes whose quantization blocks have the float32 ``scales`` (block ``k``: codes
    ``k*QUANT_BLOCK ...``)."""
    lo = q.astype(np.float32) * R255
    return np.repeat(scales, QUANT_BLOCK)[:q.size] * (lo * lo)


def q8_encode_rows(x: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~puzzle_rms.backends.reference.q8_encode` of every quantization block of ``x`` at once:
    returns the codes and one scale per block of QUANT_BLOCK elements (the last may be shorter)."""
    n = x.size
    rows = -(-n // QUANT_BLOCK)
    padded = np.zeros(rows * QUANT_BLOCK, np.float32)  # zeros never raise a maximum of non-negative values
    padded[:n] = x
    block = padded.reshape(rows, QUANT_BLOCK)
    scales = block.max(axis=1)
    scales[np.isnan(scales)] = np.float32(np.nan)  # one NaN pattern, whichever the block held
    finite = np.isfinite(scales)
    live = finite & (scales > 0)
    safe = np.where(live, scales, np.float32(1))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        inv = np.float32(1) / safe
        y = block * inv[:, None]
        tiny = ~np.isfinite(inv)  # subnormal scales: divide instead
        y[tiny] = block[tiny] / safe[tiny, None]
        y = np.maximum(y, np.float32(0))
        q0 = np.minimum((np.sqrt(y) * _F255).astype(np.int64), 254)
    lo = q0.astype(np.float32) * R255
    hi = (q0 + 1).astype(np.float32) * R255
    a, b = lo * lo, hi * hi
    padBits = np.zeros(rows * QUANT_BLOCK, np.uint32)
    padBits[:n] = bits
    u = (padBits.reshape(rows, QUANT_BLOCK) >> np.uint32(8)).astype(np.float32) * _U24
    with np.errstate(invalid="ignore"):
        q = q0 + (u * (b - a) < y - a)
    q = np.where(live[:, None], q, np.where(finite[:, None], 0, 255))
    return q.reshape(-1)[:n].astype(np.uint8), scales


def rmsprop_compressed(w: np.ndarray, g: np.ndarray, ms: np.ndarray, msScale: Optional[np.ndarray],
                       mg: Optional[np.ndarray], mom: Optional[np.ndarray], blocks: np.ndarray, seg: np.ndarray,
                       hyper: np.ndarray, scaleStarts: Optional[np.ndarray], keys: np.ndarray) -> None:
    """The step of :func:`~puzzle_rms.backends.reference.rmsprop_update_compressed` over ``blocks``."""
    f = np.float32
    hp = {name: f(hyper[i]) for name, i in H.items()}
    zero = f(0)
    eight = ms.dtype == np.uint8
    for b in range(blocks.shape[0]):
        w0, w1, s, g0 = (int(x) for x in blocks[b])
        n = w1 - w0
        lr, wd, wScale, segGradScale = (f(x) for x in seg[s])
        gradScale = hp["gradScale"] * segGradScale
        wdPre, wdPost = wd * hp["wdPre"], wd * hp["wdPost"]
        index = np.arange(w0, w1)
        # no weight scaling, decay or clipping in this block: their neutral terms are left out, as in Numba
        bare = wd == zero and wScale == f(1) and np.isinf(hp["clipValue"]) and np.isinf(hp["clipWeights"])
        if bare:
            W = w[w0:w1].astype(np.float32)
            G = g[g0:g0 + n].astype(np.float32) * gradScale
        else:
            W = w[w0:w1].astype(np.float32) * wScale
            G = np.minimum(np.maximum(g[g0:g0 + n].astype(np.float32) * gradScale + wdPre * W, -hp["clipValue"]),
                           hp["clipValue"]) + wdPost * W
        if eight:
            first = int(scaleStarts[b])
            scales = msScale[first:first - (-n // QUANT_BLOCK)]
            M = q8_decode_rows(ms[w0:w1], scales)
        else:
            M = bf16_decode(ms[w0:w1])
        M = hp["rho"] * M + hp["oneMinusRho"] * G * G
        if mg is not None:
            A = hp["rho"] * bf16_decode(mg[w0:w1]) + hp["oneMinusRho"] * G
            mg[w0:w1] = bf16_encode(A, random_bits(index, keys[1]))
            V = np.maximum(hp["bcMs"] * M - (hp["bcMg"] * A) * (hp["bcMg"] * A), zero)
        else:
            V = hp["bcMs"] * M
        U = G / (np.sqrt(V + hp["epsIn"]) + hp["epsOut"])
        if mom is not None:
            c1 = hp["c1Lr"] * lr + hp["c1Fixed"]
            c2 = hp["c2Lr"] * lr + hp["c2Fixed"]
            MV = hp["mu"] * bf16_decode(mom[w0:w1]) + c1 * U
            mom[w0:w1] = bf16_encode(MV, random_bits(index, keys[2]))
            W = W - c2 * MV
            if hp["nesterov"] != zero:
                W = W - (hp["c3Lr"] * lr) * U
        else:
            W = W - lr * U
        w[w0:w1] = W if bare else np.minimum(np.maximum(W, -hp["clipWeights"]), hp["clipWeights"])
        if eight:
            ms[w0:w1], scales[...] = q8_encode_rows(M, random_bits(index, keys[0]))
        else:
            ms[w0:w1] = bf16_encode(M, random_bits(index, keys[0]))

