"""Compressed RMSProp state (``stateDtype="bfloat16"`` or ``"int8"``): the buffers of one bucket and their views.

Which buffer takes which code (:mod:`puzzle_rms.backends.compressed_state` states the codes):

    float32:   ms, mg, mom in the state dtype (float32 for float16 parameters; as without the option)
    bfloat16:  ms, mg, mom as bfloat16 bit patterns (uint16)
    int8:      ms as 8-bit codes (uint8) with one float32 scale per 256 elements (msScale); mg, mom bfloat16

``ms`` is non-negative and what the step divides by, so an unsigned code relative to its block's
maximum keeps its large values precise, and the stochastic rounding keeps its small ones unbiased.
``mg`` and ``mom`` change sign and are not bounded by their block's maximum in any useful way, so
they keep bfloat16's per-element exponent. ``master`` weights (float16 parameters) stay float32, and
so do the buffers of gradient accumulation (``acc``) and of the parameter average (``ema``).

The 8-bit ``ms`` has one float32 scale per 256 elements of each Variable (``msScale``, shape
``(ceil(size / 256),)``), so a Variable's state is the same in global and local state and a
checkpoint of either loads into the other. Compressed state needs float16 or float32 parameters (the
kernels compute in float32).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms.backends.compressed_state import scale_offsets, scale_starts
from puzzle_rms.backends.reference import bf16_encode
from puzzle_rms.optimizers.buckets import Bucket

STORAGE = {"bfloat16": np.dtype(np.uint16), "int8": np.dtype(np.uint8)}  # the dtype of ms per stateDtype
_NEAREST = np.array([0x80000000], np.uint32)  # random bits that make bf16_encode round to nearest


def bf16_pattern(value: float) -> int:
    """The bfloat16 bit pattern of ``value`` rounded to nearest (for initial state)."""
    return int(bf16_encode(np.array([value], np.float32), _NEAREST)[0])


class CompressedState:
    """Replaces a bucket's float state buffers by compressed ones and holds the 8-bit scales.

    Parameters
    ----------
    bucket : Bucket
        Its ``state`` entries ``ms``, ``mg``, ``mom`` are replaced (the others are kept).
    stateDtype : {"bfloat16", "int8"}
    stateInit : dict
        Name -> initial value (``ms`` starts at ``initialMeanSquare``, encoded exactly: bfloat16 rounds it
        to nearest, the 8-bit code stores it as the scale with code 255).
    """

    def __init__(self, bucket: Bucket, stateDtype: str, stateInit: dict[str, float]) -> None:
        backend = bucket.backend
        self.stateDtype = stateDtype
        self.eight = stateDtype == "int8"
        self.scales: Optional[Any] = None
        self.scaleStarts: Optional[Any] = None
        for name, value in stateInit.items():
            if name not in ("ms", "mg", "mom"):  # other buffers (gradient accumulation, the average) stay float
                continue
            if name == "ms" and self.eight:
                self.scaleOffsets = scale_offsets(bucket.sizes)
                bucket.state["ms"] = backend.full(bucket.size, 255 if value > 0 else 0, np.uint8)
                self.scales = backend.full(int(self.scaleOffsets[-1]), np.float32(value), np.float32)
                self.scaleStarts = backend.to_device(scale_starts(bucket.layout.hostBlocks, bucket.offsets,
                                                                  self.scaleOffsets))
            else:
                bucket.state[name] = backend.full(bucket.size, bf16_pattern(value), np.uint16)

    def scaleView(self, index: int) -> Any:
        """The ``msScale`` entries of segment ``index`` (a view), or None without the 8-bit code."""
        if self.scales is None:
            return None
        return self.scales[int(self.scaleOffsets[index]):int(self.scaleOffsets[index + 1])]

    def update(self, weights: Any, grads: Any, state: dict[str, Any], layout: Any, segParams: Any, hyper: np.ndarray,
               keys: np.ndarray, backend: Any) -> None:
        """One kernel call: :meth:`~puzzle_rms.backends.backend.Backend.rmsprop_update_compressed`."""
        backend.rmsprop_update_compressed(weights, grads, state["ms"], self.scales, state.get("mg"), state.get("mom"),
                                          layout, segParams, hyper, self.scaleStarts, keys)
