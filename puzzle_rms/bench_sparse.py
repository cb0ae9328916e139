"""Measure the lazy row-sparse RMSProp update against the dense-equivalent one on a large Embedding.

``measureSparseUpdate()`` times ``RMSProp.update()`` for an ``Embedding(vocab, dim)`` whose gradient lists
``touched`` random rows (1,000,000 x 64 and 1,000 rows by default), once with ``sparseUpdate="lazy"``
(only those rows and their state move: one kernel call over ``touched * dim`` elements) and once with
``sparseUpdate="dense"`` (the rows are added into the dense gradient and every element takes a step).
Gradients are produced by the module's own backward pass outside the timed region; only ``update()`` is timed.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

import backends
from puzzle_rms.modules.embedding import Embedding
from puzzle_rms.optimizers.rmsprop import RMSProp


def _median_update_seconds(mode: str, vocab: int, dim: int, touched: int, repeats: int, useGlobalState: bool,
                           seed: int) -> float:
    backend = backends.current()
    gen = np.random.default_rng(seed)
    table = Embedding(vocab, dim, wscale=0.01, rng=gen)
    optimizer = RMSProp(1e-3, sparseUpdate=mode)
    optimizer.setupOn(table, useGlobalState=useGlobalState)
    # inputs and output gradients drawn up front, so that the loop between updates is short (as in training,
    # where idle worker threads would otherwise fall asleep and each first launch pays their wake-up)
    batches = [(backend.to_device(gen.choice(vocab, size=touched, replace=False).astype(np.int64)),
                backend.to_device(gen.standard_normal((touched, dim)).astype(np.float32))) for _ in range(repeats + 1)]
    times = []
    for indices, grad in batches:  # the first round warms up (kernel loading, first touch of the state pages)
        optimizer.zeroGradParams()
        table(indices)
        table.backward(grad)
        backend.synchronize()
        start = time.perf_counter()
        optimizer.update()
        backend.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def measureSparseUpdate(vocab: int = 1_000_000, dim: int = 64, touched: int = 1000, repeats: int = 20,
                        useGlobalState: bool = False, backend: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
    """Median seconds of one lazy and one dense-equivalent RMSProp update of an ``Embedding(vocab, dim)``.

    Parameters
    ----------
    vocab, dim : int
        Shape of the embedding table.
    touched : int
        Distinct rows in each step's gradient.
    repeats : int
        Timed updates per mode (after one warm-up update).
    useGlobalState : bool
        Set the optimizer up with flat global state.
    backend : str, optional
        Backend to use (default: the current one).

    Returns
    -------
    dict with ``backend``, the sizes, ``lazySeconds``, ``denseSeconds`` and ``lazyOverDense`` (their ratio).
    """
    if backend is not None:
        backends.use(backend)
    lazy = _median_update_seconds("lazy", vocab, dim, touched, repeats, useGlobalState, seed)
    dense = _median_update_seconds("dense", vocab, dim, touched, repeats, useGlobalState, seed)
    return {"backend": backends.current().name, "vocab": vocab, "dim": dim, "touched": touched,
            "useGlobalState": useGlobalState, "lazySeconds": lazy, "denseSeconds": dense,
            "lazyOverDense": lazy / dense}
