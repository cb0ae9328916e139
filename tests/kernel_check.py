"""One kernel step on a backend and on the library's reference from the same inputs, and the tolerance between them.

Tolerance: one step in the compute dtype (float32 for float16 parameters), relative to ``|value| + 1``,
plus one float16 ulp where the values are float16 (the reference rounds once from float64, a backend
once from float32).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from puzzle_rms.backends import reference

# (weights, gradient, state): float16 parameters have float32 state; with master weights the kernel
# updates the float32 copy and reads the float16 gradient
DTYPES = {
    "float32": (np.float32, np.float32, np.float32),
    "float64": (np.float64, np.float64, np.float64),
    "float16": (np.float16, np.float16, np.float32),
    "float16-master": (np.float32, np.float16, np.float32),
}
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}


def reference_step(arrays: dict, g: np.ndarray, layout: Any, table: np.ndarray, hyper: np.ndarray) -> dict:
    """Copies of ``arrays`` (``w``, ``ms`` and, where present, ``mg``, ``mom``) after one reference step."""
    out = {name: a.copy() for name, a in arrays.items()}
    reference.rmsprop_update(out["w"], g, out["ms"], out.get("mg"), out.get("mom"), layout, table, hyper)
    return out


def backend_step(backend: Any, arrays: dict, g: np.ndarray, layout: Any, table: np.ndarray,
                 hyper: np.ndarray) -> dict:
    """Host copies of ``arrays`` after one step of ``backend``'s kernel (the table in the state dtype, as a bucket
    passes it)."""
    dev = {name: backend.to_device(a.copy()) for name, a in arrays.items()}
    segParams = backend.seg_params(table, arrays["ms"].dtype)
    backend.rmsprop_update(dev["w"], backend.to_device(g), dev["ms"], dev.get("mg"), dev.get("mom"), layout,
                           segParams, hyper)
    return {name: backend.to_host(a) for name, a in dev.items()}


def excess(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """How far each element of ``got`` lies beyond the tolerance around ``expected`` (> 0: too far)."""
    compute = np.dtype(np.float32) if expected.dtype == np.float16 else expected.dtype
    ref = expected.astype(np.float64)
    bound = RTOL[compute] * (np.abs(ref) + 1.0)
    if expected.dtype == np.float16:
        bound = bound + np.spacing(np.abs(expected)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) - bound


def assert_step_close(got: dict, want: dict, context: str) -> None:
    """Every array of ``got`` has the dtype of its ``want`` twin and lies within the tolerance of it."""
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        assert got[name].dtype == expected.dtype, f"{context}: {name} dtype"
        bad = np.flatnonzero(excess(got[name], expected) > 0)
        assert bad.size == 0, (f"{context}: {name} differs at {bad[:3].tolist()}: got "
                               f"{got[name][bad[:3]]}, reference {expected[bad[:3]]}")
