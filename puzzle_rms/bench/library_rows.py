"""The rows under test: puzzle_rms's raw kernel and ``RMSProp.update()``, dense and on an Embedding."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from puzzle_rms import backends
from puzzle_rms.bench.cases import Case, rmsprop_options
from puzzle_rms.bench.timing import Row, Subject
from puzzle_rms.modules.embedding import Embedding
from puzzle_rms.optimizers.rmsprop import RMSProp
from puzzle_rms.variable import Variable


def optimizer_rows(case: Case, backendName: str, arrays: list[tuple[np.ndarray, np.ndarray]],
                   device: str) -> list[Row]:
    """Raw kernel and ``RMSProp.update()`` rows of one backend (global, local and flat state as the case needs)."""
    backend = backends.use(backendName)

    def setup(pairs: list[tuple[np.ndarray, np.ndarray]], useGlobalState: bool) -> tuple[Any, list[Any]]:
        variables = [Variable(backend.to_device(w.copy()), grad=backend.to_device(g.copy()), name=f"p{i}")
                     for i, (w, g) in enumerate(pairs)]  # copies: local state updates the arrays it is given
        optimizer = RMSProp(**rmsprop_options(case.variant), nonFinite="ignore")
        optimizer.setupOn(variables, useGlobalState=useGlobalState)
        return optimizer, variables

    def update_with(optimizer: Any, policy: str) -> Callable[[], Any]:
        def call() -> Any:
            optimizer.nonFinite = policy
            return optimizer.update()
        return call

    stepBytes = case.params * case.bytesPerParam
    optimizer, variables = setup(arrays, True)
    subject = Subject(lambda: [backend.to_host(v.data).reshape(-1) for v in variables])
    bucket = optimizer.buckets[0]
    segParams = bucket.segParams(optimizer.currentLearnRates(), np.zeros(1), np.zeros(1), None)
    hyper = optimizer.hyper(1.0, 1)
    state = bucket.state

    def kernel() -> None:
        backend.rmsprop_update(bucket.weights(), bucket.grads(), state["ms"], state.get("mg"), state.get("mom"),
                               bucket.kernelLayout, segParams, hyper)

    rows = [Row("raw kernel (Backend.rmsprop_update)", device, "kernel", backendName, kernel, stepBytes, subject,
                state="global"),
            Row("RMSProp.update, global state, nonFinite=ignore", device, "update", backendName,
                update_with(optimizer, "ignore"), stepBytes, subject, state="global", nonFinite="ignore"),
            Row("RMSProp.update, global state, nonFinite=raise (+1 read of g)", device, "update", backendName,
                update_with(optimizer, "raise"), stepBytes, subject, state="global", nonFinite="raise")]
    if case.tensors > 1:  # the same parameters as separate buckets, and as one tensor of the same total size
        flatPair = [(np.concatenate([w for w, _ in arrays]), np.concatenate([g for _, g in arrays]))]
        for stateKind, what, pairs, useGlobalState in (("local", "local state", arrays, False),
                                                       ("flat", f"1 flat tensor of {case.params:,}", flatPair, True)):
            other, otherVars = setup(pairs, useGlobalState)
            otherSubject = Subject(lambda otherVars=otherVars: [backend.to_host(v.data).reshape(-1) for v in otherVars])
            rows += [Row(f"RMSProp.update, {what}, nonFinite={policy}", device, "update", backendName,
                         update_with(other, policy), stepBytes, otherSubject, state=stateKind, nonFinite=policy)
                     for policy in ("ignore", "raise")]
    for row in rows:
        row.activate, row.sync = (lambda: backends.use(backendName)), backend.synchronize
    return rows


def embedding_rows(case: Case, backendName: str, device: str, seed: int) -> list[Row]:
    """Lazy and dense-equivalent ``RMSProp.update()`` of an Embedding whose backward touched a few rows."""
    vocab, dim, touched = case.embedding
    backend = backends.use(backendName)
    gen = np.random.default_rng(seed)
    batches = [backend.to_device(gen.choice(vocab, size=touched, replace=False).astype(np.int64)) for _ in range(8)]
    grads = [backend.to_device(gen.standard_normal((touched, dim)).astype(np.float32)) for _ in range(8)]
    rows = []
    for mode in ("lazy", "dense"):
        table = Embedding(vocab, dim, wscale=0.1, rng=np.random.default_rng(seed))
        optimizer = RMSProp(**rmsprop_options(case.variant), nonFinite="ignore", sparseUpdate=mode)
        optimizer.setupOn(table, useGlobalState=True)
        counter = iter(range(10**12))

        def prepare(table: Any = table, optimizer: Any = optimizer, counter: Any = counter) -> None:
            k = next(counter) % len(batches)
            optimizer.zeroGradParams()
            table(batches[k])
            table.backward(grads[k])

        elems = touched * dim if mode == "lazy" else vocab * dim
        rows.append(Row(f"RMSProp.update, sparseUpdate={mode}, global state", device, "update", backendName,
                        optimizer.update, elems * case.bytesPerParam, prepare=prepare,
                        activate=lambda: backends.use(backendName), sync=backend.synchronize, state="global",
                        nonFinite="ignore"))
    return rows
