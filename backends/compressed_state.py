"""The host side of the compressed optimizer state contract: codes, the per-step hash keys, the scale table.

RMSProp's ``stateDtype`` chooses how the state buffers are stored (:data:`STATE_DTYPES`):

- ``"float32"``: as today, in the state dtype (:func:`~puzzle_rms.backends.backend.state_dtype`).
- ``"bfloat16"``: ``ms``, ``mg`` and ``mom`` as bfloat16 bit patterns in uint16 arrays, written with
  stochastic rounding.
- ``"int8"``: ``ms`` as uint8 codes of an unsigned sqrt-linear code with one float32 scale per
  :data:`QUANT_BLOCK` elements of a segment, written with stochastic rounding; ``mg`` and ``mom`` as
  bfloat16 (they change sign and hold small values next to large ones in one block, which a linear
  per-block code would flush to zero).

The codes themselves are stated bit-exactly in :mod:`puzzle_rms.backends.reference`
(``bf16_encode``, ``bf16_decode``, ``q8_encode``, ``q8_decode``). Stochastic rounding draws its
random bits from a counter-based hash of ``(seed, step, buffer, element index)``: :func:`state_keys`
turns ``(seed, step)`` into one 32-bit key per buffer on the host, and a kernel computes
``mix32(index ^ key)`` per element (``index`` is the element's position in the flat state buffer,
modulo 2**32). The result depends on nothing else, so every backend and every data-parallel rank
draws the same bits.
"""
from __future__ import annotations

import numpy as np

STATE_DTYPES = ("float32", "bfloat16", "int8")
STATE_DTYPE_ALIASES = {"8bit": "int8"}
QUANT_BLOCK = 256  # elements of a segment per float32 scale of the 8-bit code
STREAMS = {"ms": 1, "mg": 2, "mom": 3}  # one hash stream per state buffer
_M32 = 0xFFFFFFFF


def mix32(x: int) -> int:
    """A 32-bit integer hash (a bijection of ``[0, 2**32)``; xorshift-multiply, constants of "lowbias32")::

        x ^= x >> 16;  x *= 0x7feb352d;  x ^= x >> 15;  x *= 0x846ca68b;  x ^= x >> 16     (mod 2**32)
    """
    x &= _M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M32
    x ^= x >> 16
    return x


def state_keys(seed: int, step: int) -> np.ndarray:
    """The uint32 keys ``[ms, mg, mom]`` of update number ``step``: ``mix32(mix32(mix32(seed) ^ step) ^ stream)``
    with ``stream`` 1, 2, 3 (:data:`STREAMS`); seed and step are taken modulo 2**32."""
    base = mix32(mix32(seed) ^ (step & _M32))
    return np.array([mix32(base ^ STREAMS[name]) for name in ("ms", "mg", "mom")], dtype=np.uint32)


def scale_offsets(sizes: np.ndarray) -> np.ndarray:
    """Index of each segment's first scale in the scale table: segment ``s`` has ``ceil(sizes[s] / QUANT_BLOCK)``
    scales, back to back; the last entry is the table's length."""
    counts = -(-np.asarray(sizes, dtype=np.int64) // QUANT_BLOCK)
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def scale_starts(hostBlocks: np.ndarray, segOffsets: np.ndarray, scaleOffsets: np.ndarray) -> np.ndarray:
    """For each layout block, the scale index of its first element.

    Segment ``s`` starts at ``segOffsets[s]`` in the flat buffers; its element ``j`` has the scale
    ``scaleOffsets[s] + j // QUANT_BLOCK``. Every block must start a quantization block (a multiple of
    QUANT_BLOCK elements into its segment: true of dense layouts, whose ``blockElems`` are multiples of it).
    """
    seg = hostBlocks[:, 2]
    within = hostBlocks[:, 0] - np.asarray(segOffsets, dtype=np.int64)[seg]
    if np.any(within % QUANT_BLOCK):
        raise ValueError(f"scale_starts: every block must start a multiple of {QUANT_BLOCK} elements into its "
                         f"segment; blocks at {within[within % QUANT_BLOCK != 0][:4].tolist()} do not")
    return np.asarray(scaleOffsets, dtype=np.int64)[seg] + within // QUANT_BLOCK
