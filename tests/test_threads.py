"""Optimizers stepping concurrently from several threads give bit for bit the results of sequential runs.

Each thread owns its own Variables and optimizer; they share only the backend object. Scenarios cover every
path that needs scratch memory: skipped steps (non-finite gradients with nonFinite="skip" and a dynamic loss
scale), per-tensor and global norm clipping (the clip factors come from the sum-of-squares reduction),
float16 weights (float32 copies around the numba kernels), and many short tensors (the numpy backend gathers
them into scratch buffers). A barrier before every update makes the threads step at the same moment.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import numpy as np
import pytest

from puzzle_rms.optimizers import DynamicLossScale, RMSProp
from puzzle_rms.variable import Variable

STEPS = 40
# name -> (shape, dtype); many short tensors and a few longer ones, all below numba's parallel threshold
SHAPES = {f"s{i}": ((7 + i,), np.float32) for i in range(12)} | {"long": ((3000,), np.float32),
                                                                   "mid": ((40, 30), np.float32)}
HALF = {"h0": ((500,), np.float16), "h1": ((33,), np.float16), "h2": ((2000,), np.float16)}
DOUBLE = {"d0": ((1500,), np.float64), "d1": ((9,), np.float64)}


def _scenarios() -> dict[str, Callable[[], tuple[dict, Any, Callable[[dict, int], None]]]]:
    """name -> a builder of (variables, optimizer, gradient setter for step k); each run is seeded."""

    def grads(seed: int, scale: float = 1.0, bad: frozenset = frozenset()) -> Callable[[dict, int], None]:
        def put(variables: dict, step: int) -> None:
            rng = np.random.default_rng(seed * 1000 + step)
            for name, var in variables.items():
                var.grad[...] = (scale * rng.standard_normal(var.shape)).astype(var.dtype)
            if step in bad:  # a non-finite element in one tensor at these steps
                first = next(iter(variables.values()))
                first.grad.reshape(-1)[step % first.size] = np.nan if step % 2 else np.inf
        return put

    def make(specs: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        return {name: Variable(rng.standard_normal(shape).astype(dtype), name=name)
                for name, (shape, dtype) in specs.items()}

    bad = frozenset(range(3, STEPS, 5))
    return {
        "skip": lambda: (make(SHAPES, 1), RMSProp(0.01, centered=True, momentum=0.5, nonFinite="skip"),
                         grads(1, 1.0, bad)),
        "clipNorm": lambda: (make(SHAPES, 2), RMSProp(0.01, clipNorm=0.5), grads(2, 3.0)),
        "globalClipNorm": lambda: (make(DOUBLE, 3), RMSProp(0.02, globalClipNorm=1.0, momentum=0.9), grads(3, 5.0)),
        "fp16": lambda: (make(HALF, 4), RMSProp(0.01, masterWeights=True), grads(4)),
        "fp16-skip-clip": lambda: (make(HALF, 5), RMSProp(0.01, clipNorm=1.0, nonFinite="skip"), grads(5, 2.0, bad)),
        "dynamic": lambda: (make(SHAPES, 6), RMSProp(0.01, lossScale=DynamicLossScale(256.0, growthInterval=4)),
                            grads(6, 256.0, bad)),
        "weightDecay-clipValue": lambda: (make(SHAPES, 7), RMSProp(0.01, weightDecay=0.1, clipValue=0.3),
                                          grads(7, 2.0)),
    }


def _run(build: Callable, useGlobalState: bool, barrier: threading.Barrier | None = None) -> dict[str, bytes]:
    variables, optimizer, put = build()
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for step in range(STEPS):
        put(variables, step)
        if barrier is not None:
            barrier.wait()
        optimizer.update()
    out = {f"{name}.data": np.asarray(var.data).tobytes() for name, var in variables.items()}
    out.update({f"{name}.{buf}": np.asarray(view).tobytes()
                for name, views in optimizer.stateArrays().items() for buf, view in views.items()})
    scale = optimizer.lossScale
    out["counters"] = repr((optimizer.t, optimizer.skippedSteps, getattr(scale, "scale", scale))).encode()
    return out


PAIRS = [("skip", "clipNorm"), ("fp16", "globalClipNorm"), ("fp16-skip-clip", "dynamic"),
         ("weightDecay-clipValue", "fp16"), ("clipNorm", "fp16-skip-clip")]


@pytest.mark.parametrize("useGlobalState", [False, True])
@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_two_threads_match_sequential_runs_bit_for_bit(backend_name, useGlobalState, pair):
    scenarios = _scenarios()
    expected = [_run(scenarios[name], useGlobalState) for name in pair]
    barrier = threading.Barrier(len(pair))
    results: list[Any] = [None] * len(pair)

    def work(i: int) -> None:
        try:
            results[i] = _run(scenarios[pair[i]], useGlobalState, barrier)
        except BaseException as error:  # reported by the main thread
            results[i] = error
            barrier.abort()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pair))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    for name, want, got in zip(pair, expected, results):
        if isinstance(got, BaseException):
            raise got
        differing = sorted(key for key in want if want[key] != got[key])
        assert not differing, f"scenario {name!r}: {differing} differ from the sequential run"
