"""Shared by the golden generators: seeded inputs, float32 <-> JSON, and the file writer.

Only NumPy is used here (the generators run in each framework's own venv, and never import
puzzle_rms). The file format is described in ``tests/goldens/README.md``.
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

GOLDENS = Path(__file__).resolve().parents[2] / "tests" / "goldens"
GRAD_SCALES = (0.3, 2.0, 0.05, 1.0, 0.7)  # gradients change size from step to step


def to_json(array: Any) -> Any:
    """float32 values as nested lists of Python floats (exact in JSON); NaN/inf as strings."""
    def one(x: float) -> Any:
        x = float(np.float32(x))
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    values = np.asarray(array, dtype=np.float32)
    if values.ndim == 0:
        return one(values)
    return [to_json(v) for v in values]


def problem(seed: int, shapes: dict[str, tuple], steps: int = 4, sparse: Optional[dict[str, Sequence]] = None,
            scale: float = 1.0) -> tuple[dict[str, np.ndarray], list[dict[str, dict]]]:
    """Seeded float32 parameters and per-step gradients.

    ``sparse`` maps a parameter name to its row indices of each step (a list per step, or one list
    for every step); that parameter then gets row-sparse gradients ``{"indices", "values"}``, the
    others dense ones ``{"dense"}``. Returns (params, steps) with NumPy float32 arrays.
    """
    gen = np.random.default_rng(seed)
    sparse = sparse or {}
    params = {name: gen.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    grads = []
    for t in range(steps):
        size = scale * GRAD_SCALES[t % len(GRAD_SCALES)]
        step = {}
        for name, shape in shapes.items():
            if name in sparse:
                spec = sparse[name]
                indices = list(spec[t] if isinstance(spec[0], (list, tuple)) else spec)
                values = (size * gen.standard_normal((len(indices),) + tuple(shape[1:]))).astype(np.float32)
                step[name] = {"indices": indices, "values": values}
            else:
                step[name] = {"dense": (size * gen.standard_normal(shape)).astype(np.float32)}
        grads.append(step)
    return params, grads


def dense_of(grad: dict, shape: tuple) -> np.ndarray:
    """A step's gradient of one parameter as a dense float32 array (rows of repeated indices summed)."""
    if "dense" in grad:
        return grad["dense"]
    dense = np.zeros(shape, np.float32)
    np.add.at(dense, np.asarray(grad["indices"]), grad["values"])
    return dense


def case(id: str, call: str, preset: str, kwargs: dict, params: dict, steps: list, expected: list,
         groups: Optional[list] = None, note: str = "", deliberate: Optional[str] = None,
         tolerance: Optional[dict] = None) -> dict:
    """One optimizer case in the file format (arrays converted to JSON)."""
    return {
        "id": id, "call": call, "kind": "optimizer", "preset": preset, "kwargs": kwargs, "groups": groups,
        "names": list(params), "dtype": "float32",
        "params": {name: to_json(value) for name, value in params.items()},
        "steps": [{name: _grad_json(g) for name, g in step.items()} for step in steps],
        "expected": [{name: to_json(value) for name, value in after.items()} for after in expected],
        "tolerance": tolerance or {"atol": 1e-6, "rtol": 1e-5}, "note": note, "deliberate": deliberate,
    }


def op_case(id: str, call: str, op: str, scalars: dict, params: dict, state: dict, steps: list, expected: list,
            note: str = "", deliberate: Optional[str] = None, options: Optional[dict] = None) -> dict:
    """One raw-op case: ``params`` is {"var": ...}, ``state`` the initial state arrays ("ms", "mom", "mg"),
    ``steps`` the per-step gradient ``{"var": grad}``, ``expected`` per step ``{"var": ..., "state": {...}}``."""
    return {
        "id": id, "call": call, "kind": "op", "op": op, "scalars": scalars, "options": options or {},
        "names": ["var"], "dtype": "float32",
        "params": {name: to_json(value) for name, value in params.items()},
        "state": {name: to_json(value) for name, value in state.items()},
        "steps": [{name: _grad_json(g) for name, g in step.items()} for step in steps],
        "expected": [{"var": to_json(after["var"]), "state": {k: to_json(v) for k, v in after["state"].items()}}
                     for after in expected],
        "tolerance": {"atol": 1e-6, "rtol": 1e-5}, "note": note, "deliberate": deliberate,
    }


def _grad_json(grad: dict) -> dict:
    if "dense" in grad:
        return {"dense": to_json(grad["dense"])}
    return {"indices": [int(i) for i in grad["indices"]], "values": to_json(grad["values"])}


def write(framework: str, package: str, version: str, generator: str, cases: list[dict]) -> Path:
    """Write ``tests/goldens/<framework>.json`` deterministically (sorted keys); ids must be unique."""
    ids = [c["id"] for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids: {duplicates}")
    document = {"framework": framework, "package": package, "version": version,
                "python": platform.python_version(), "numpy": np.__version__, "generator": generator,
                "cases": cases}
    path = GOLDENS / f"{framework}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    print(f"{path}: {len(cases)} cases")
    return path
