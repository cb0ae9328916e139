"""The ``state`` case: RMSProp's step with float32, bfloat16 and 8-bit state, and a short quality run.

Per backend and size, three optimizers (one per ``stateDtype``) step one tensor each with global state
and ``nonFinite="ignore"`` (the step itself), timed in interleaved rounds (:func:`~.timing.measure`), so
the speed-ups over float32 state are same-run ratios. The quality run trains one small MLP from the
same start with each stateDtype and reports the final loss relative to float32 state's.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.bench.cases import EPSILON, FACTOR, LEARN_RATE
from puzzle_rms.bench.timing import Row, measure
from puzzle_rms.variable import Variable

STATE_DTYPES = ("float32", "bfloat16", "int8")
STATE_SIZES = (16 << 20, 64 << 20)
TINY_STATE_SIZES = (4096,)
# bytes per parameter of the plain step: w read and written, g read, ms read and written (+ the 8-bit scales)
BYTES_PER_PARAM = {"float32": 20.0, "bfloat16": 16.0, "int8": 14.0 + 8.0 / 256}
QUALITY = {"steps": 2000, "factors": (0.9, 0.99, 0.999), "width": 32, "rows": 1024, "batch": 64, "learnRate": 1e-3}
TINY_QUALITY = {"steps": 50, "factors": (0.99,), "width": 8, "rows": 64, "batch": 16, "learnRate": 1e-3}
NOISE = 0.3  # the targets' noise: the test loss cannot go below NOISE**2 / 2 = 0.045


def _optimizer(stateDtype: str, w: np.ndarray, g: np.ndarray) -> tuple[Any, Variable]:
    from puzzle_rms.optimizers import RMSProp

    backend = backends.current()
    var = Variable(backend.to_device(w), name="w")
    optimizer = RMSProp(LEARN_RATE, factor=FACTOR, epsilon=EPSILON, nonFinite="ignore", stateDtype=stateDtype)
    optimizer.setupOn([var], useGlobalState=True)
    var.grad[...] = backend.to_device(g)
    return optimizer, var


def time_state(sizes: Sequence[int], names: Sequence[str], repeat: int, warmup: int, minTime: float, seed: int,
               progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Median step time of each stateDtype per backend and size, and its speed-up over float32 state."""
    results = []
    for size in sizes:
        gen = np.random.default_rng(seed)
        w = (0.1 * gen.standard_normal(size)).astype(np.float32)
        g = gen.standard_normal(size).astype(np.float32)
        for name in names:
            progress(f"state {size:,} on {name}")
            previous = backends.current().name
            backends.use(name)
            try:
                backend = backends.current()
                device = "gpu" if name == "cupy" else "cpu"
                rows = []
                for stateDtype in STATE_DTYPES:
                    optimizer, _ = _optimizer(stateDtype, w, g)
                    rows.append(Row(f"stateDtype={stateDtype}", device, "update", name, optimizer.update,
                                    int(BYTES_PER_PARAM[stateDtype] * size), activate=lambda n=name: backends.use(n),
                                    sync=backend.synchronize, state="global", nonFinite="ignore"))
                measure(rows, repeat, warmup, minTime, progress)
            finally:
                backends.use(previous)
            base = float(np.median(rows[0].samples))
            for stateDtype, row in zip(STATE_DTYPES, rows):
                median = float(np.median(row.samples))
                results.append({"size": size, "backend": name, "device": device, "stateDtype": stateDtype,
                                "medianMs": median * 1e3, "minMs": float(np.min(row.samples)) * 1e3,
                                "bytesPerParam": BYTES_PER_PARAM[stateDtype],
                                "gbps": BYTES_PER_PARAM[stateDtype] * size / median / 1e9,
                                "speedup": base / median})
            del rows
    return results


def quality_run(name: str, settings: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Held-out loss of an MLP (16-W-W-1, tanh, MSE) trained on minibatches of a noisy regression with each
    stateDtype from the same start; ``relative`` is that loss over float32 state's minus 1."""
    from puzzle_rms.containers import Sequential
    from puzzle_rms.cost import MSE
    from puzzle_rms.modules import Activation, Linear, tanh
    from puzzle_rms.optimizers import RMSProp

    gen = np.random.default_rng(seed)
    count = 2 * settings["rows"]  # half to train on, half held out
    x = gen.standard_normal((count, 16)).astype(np.float32)
    t = (np.sin(x[:, :4].sum(axis=1, keepdims=True)) + NOISE * gen.standard_normal((count, 1))).astype(np.float32)
    width, batch, rows = settings["width"], settings["batch"], settings["rows"]
    batches = rows // batch
    results = []
    previous = backends.current().name
    backends.use(name)
    try:
        backend = backends.current()
        xd, td = backend.to_device(x), backend.to_device(t)
        for factor in settings["factors"]:
            losses = {}
            for stateDtype in STATE_DTYPES:
                rng = np.random.default_rng(seed + 1)
                model = Sequential()
                model.extend([Linear(16, width, rng=rng), Activation(tanh), Linear(width, width, rng=rng),
                              Activation(tanh), Linear(width, 1, rng=rng)])
                optimizer = RMSProp(settings["learnRate"], factor=factor, epsilon=1e-5, stateDtype=stateDtype)
                optimizer.setupOn(model, useGlobalState=True)
                cost = MSE()
                for step in range(settings["steps"]):
                    part = slice(batch * (step % batches), batch * (step % batches + 1))
                    optimizer.zeroGradParams()
                    _, grad = cost(model(xd[part]), td[part])
                    model.backward(grad)
                    optimizer.update()
                losses[stateDtype] = float(cost(model(xd[rows:]), td[rows:])[0])
            for stateDtype in STATE_DTYPES:
                results.append({"backend": name, "factor": factor, "steps": settings["steps"], "width": width,
                                "stateDtype": stateDtype, "loss": losses[stateDtype],
                                "relative": losses[stateDtype] / losses["float32"] - 1})
    finally:
        backends.use(previous)
    return results


def run_state(sizes: Sequence[int], names: Sequence[str], repeat: int, warmup: int, minTime: float, seed: int,
              tiny: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    """The timing rows and the quality run (on the first of ``names``)."""
    settings = TINY_QUALITY if tiny else QUALITY
    progress("state: quality run")
    quality = quality_run(names[0], settings, seed)
    return {"timing": time_state(sizes, names, repeat, warmup, minTime, seed, progress), "quality": quality,
            "quality_settings": dict(settings, factors=list(settings["factors"]))}


def format_state(report: Optional[dict[str, Any]]) -> str:
    """The state case as text: one line per backend, size and stateDtype, then the quality run."""
    lines = ["== compressed optimizer state: RMSProp.update, 1 float32 tensor, global state, nonFinite=ignore, "
             "plain (torch semantics) ==",
             f"  {'backend':8} {'params':>12} {'stateDtype':10} {'B/param':>8} {'median ms':>10} {'GB/s':>7} "
             f"{'x float32':>9}"]
    for r in report["timing"]:
        lines.append(f"  {r['backend']:8} {r['size']:>12,} {r['stateDtype']:10} {r['bytesPerParam']:>8.2f} "
                     f"{r['medianMs']:>10.3f} {r['gbps']:>7.2f} {r['speedup']:>9.2f}")
    s = report["quality_settings"]
    lines.append(f"  quality: MLP 16-{s['width']}-{s['width']}-1 (tanh, MSE), {s['steps']:,} steps of minibatches of "
                 f"{s['batch']} from {s['rows']} noisy rows, lr {s['learnRate']}: loss on {s['rows']} held-out rows "
                 f"(noise floor {NOISE ** 2 / 2:.3f})")
    for q in report["quality"]:
        lines.append(f"    {q['backend']:8} factor {q['factor']:<6} {q['stateDtype']:10} loss {q['loss']:.5f} "
                     f"({q['relative']:+.2%} vs float32)")
    return "\n".join(lines)
