"""The ``train`` case: a whole training step of an MLP, puzzle_rms against the same network in torch.

The network is 256-W-W-1 (Linear, relu, Linear, relu, Linear), the cost the halved mean squared error
(PuzzleLib's MSE; ``0.5 * mse_loss`` in torch) and the optimizer RMSProp with torch's semantics, in the
configuration a user gets from the README's loop: ``setupOn(net, useGlobalState=True)``, the default
non-finite check and threading, and ``net.backward(grad, updGrad=False)`` as PuzzleLib's trainer calls it
(the data input needs no gradient). torch runs ``zero_grad``, forward, ``backward`` and ``step`` with its
default threads and foreach. Each step also records its phases (forward with the cost, backward, update),
so that the table says where the time goes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.bench.cases import EPSILON, FACTOR, LEARN_RATE
from puzzle_rms.bench.timing import Row, measure

INPUTS = 256
DEFAULT_WIDTHS = (64, 512, 2048)
DEFAULT_BATCHES = (64, 256)
TINY_WIDTHS = (16,)
TINY_BATCHES = (8,)
BATCHES_CYCLED = 4  # distinct seeded batches the steps cycle through
PHASES = ("forward", "backward", "update")
TORCH_LABEL = "torch training step (cpu)"


@dataclass
class PhaseClock:
    """Seconds spent in each phase since the last :meth:`reset`, and the number of steps."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    steps: int = 0

    def reset(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.steps = 0

    def record(self, start: float, forward: float, backward: float, end: float) -> None:
        """Add one step whose phases ended at ``forward``, ``backward`` and ``end`` (``perf_counter`` times)."""
        seconds = self.seconds
        seconds["forward"] += forward - start
        seconds["backward"] += backward - forward
        seconds["update"] += end - backward
        self.steps += 1

    def perStepMs(self) -> dict[str, float]:
        return {phase: 1e3 * s / max(self.steps, 1) for phase, s in self.seconds.items()}


def mlp_weights(width: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded ``(W, b)`` of the three layers, W of shape (in, out), uniform in +-sqrt(6 / (in + out))."""
    gen = np.random.default_rng(seed)
    sizes = [(INPUTS, width), (width, width), (width, 1)]
    return [(gen.uniform(-np.sqrt(6 / (i + o)), np.sqrt(6 / (i + o)), size=(i, o)).astype(np.float32),
             np.zeros(o, np.float32)) for i, o in sizes]


def mlp_batches(batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded ``(x, target)`` pairs of shapes (batch, 256) and (batch, 1)."""
    gen = np.random.default_rng(seed + 1)
    return [(gen.standard_normal((batch, INPUTS)).astype(np.float32),
             gen.standard_normal((batch, 1)).astype(np.float32)) for _ in range(BATCHES_CYCLED)]


def puzzle_step(backendName: str, width: int, batch: int, seed: int) -> tuple[Callable[[], float], Any, PhaseClock]:
    """A puzzle_rms training step ``step() -> loss``, its network and its phase clock."""
    from puzzle_rms.containers import Sequential
    from puzzle_rms.cost import MSE
    from puzzle_rms.modules import Activation, Linear, relu
    from puzzle_rms.optimizers import RMSProp
    from puzzle_rms.variable import Variable

    backend = backends.use(backendName)
    net = Sequential()
    for i, (W, b) in enumerate(mlp_weights(width, seed)):
        layer = Linear(W.shape[0], W.shape[1])
        layer.setVar("W", Variable(W.copy()))
        layer.setVar("b", Variable(b.copy()))
        net.extend([layer] if i == 2 else [layer, Activation(relu)])
    cost = MSE()
    optimizer = RMSProp(learnRate=LEARN_RATE, factor=FACTOR, epsilon=EPSILON)
    optimizer.setupOn(net, useGlobalState=True)
    data = [(backend.to_device(x), backend.to_device(y)) for x, y in mlp_batches(batch, seed)]
    clock = PhaseClock()
    clockTime = time.perf_counter

    def step() -> float:
        x, y = data[clock.steps % BATCHES_CYCLED]
        start = clockTime()
        error, grad = cost(net(x), y)
        forward = clockTime()
        optimizer.zeroGradParams()
        net.backward(grad, updGrad=False)
        backward = clockTime()
        optimizer.update()
        clock.record(start, forward, backward, clockTime())
        return error

    return step, net, clock


def torch_step(torch: Any, width: int, batch: int, seed: int) -> tuple[Callable[[], float], Any, PhaseClock]:
    """The same step in torch on the CPU: ``step() -> loss``, the ``nn.Sequential`` and its phase clock."""
    layers = []
    for i, (W, b) in enumerate(mlp_weights(width, seed)):
        linear = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear] if i == 2 else [linear, torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers)
    optimizer = torch.optim.RMSprop(net.parameters(), lr=LEARN_RATE, alpha=FACTOR, eps=EPSILON)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in mlp_batches(batch, seed)]
    mse = torch.nn.functional.mse_loss
    clock = PhaseClock()
    clockTime = time.perf_counter

    def step() -> float:
        x, y = data[clock.steps % BATCHES_CYCLED]
        start = clockTime()
        loss = 0.5 * mse(net(x), y)
        forward = clockTime()
        optimizer.zero_grad()
        loss.backward()
        backward = clockTime()
        optimizer.step()
        clock.record(start, forward, backward, clockTime())
        return loss.item()

    return step, net, clock


def train_case(width: int, batch: int, backendNames: Sequence[str], torch: Any, repeat: int, warmup: int,
               minTime: float, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Time the training step of every CPU backend and of torch, interleaved; return the case as plain data."""
    rows: list[Row] = []
    clocks: list[PhaseClock] = []
    for name in (n for n in backendNames if n != "cupy"):
        step, _, clock = puzzle_step(name, width, batch, seed)
        rows.append(Row(f"puzzle_rms training step ({name})", "cpu", "train", name, step, 0, state="global",
                        activate=lambda name=name: backends.use(name)))
        clocks.append(clock)
    if torch is not None:
        step, _, clock = torch_step(torch, width, batch, seed)
        rows.append(Row(TORCH_LABEL, "cpu", "torch", "torch", step, 0))
        clocks.append(clock)

    def reset_clocks(text: str) -> None:
        if text.startswith("round 1/"):
            for c in clocks:  # phases count the timed rounds only
                c.reset()
        progress(text)

    measure(rows, repeat, warmup, minTime, reset_clocks)
    summaries = []
    for row, clock in zip(rows, clocks):
        summary = row.summary()
        del summary["gbps"]
        summary["phasesMs"] = clock.perStepMs()
        summaries.append(summary)
    torchRow = next((r for r in summaries if r["kind"] == "torch"), None)
    speedups = [{"backend": r["backend"], "row": r["label"], "baseline": TORCH_LABEL, "baselineBackend": "torch",
                 "ratio": torchRow["medianMs"] / r["medianMs"]} for r in summaries if torchRow and r["kind"] == "train"]
    notes = [] if torch is not None else ["no torch row: torch is not installed (pip install torch) or --no-torch"]
    return {"name": f"mlp{width}-b{batch}", "family": "train", "variant": "plain", "width": width, "batch": batch,
            "params": sum(W.size + b.size for W, b in mlp_weights(width, seed)),
            "title": f"training step, MLP {INPUTS}-{width}-{width}-1 (relu, MSE, RMSProp), batch {batch}",
            "rows": summaries, "speedups": speedups, "notes": notes}


def format_train_case(summary: dict[str, Any]) -> str:
    """A table of one train case: each row's step time, its phases and its speed-up over torch."""
    lines = [f"== {summary['name']}: {summary['title']}, {summary['params']:,} parameters =="]
    header = (f"{'row':36} {'min ms':>8} {'median ms':>10} {'max ms':>8} "
              + " ".join(f"{phase + ' ms':>11}" for phase in PHASES))
    lines += [header, "-" * len(header)]
    for r in summary["rows"]:
        lines.append(f"{r['label'][:36]:36} {r['minMs']:8.3f} {r['medianMs']:10.3f} {r['maxMs']:8.3f} "
                     + " ".join(f"{r['phasesMs'][phase]:11.3f}" for phase in PHASES))
    for s in summary["speedups"]:
        lines.append(f"  speed-up of {s['row']}: {s['ratio']:.2f}x {s['baseline']}")
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def train_shapes(widths: Optional[Sequence[int]], batches: Optional[Sequence[int]],
                 tiny: bool) -> list[tuple[int, int]]:
    """Every (width, batch) of the train case, widths outer."""
    widths = widths or (TINY_WIDTHS if tiny else DEFAULT_WIDTHS)
    batches = batches or (TINY_BATCHES if tiny else DEFAULT_BATCHES)
    return [(w, b) for w in widths for b in batches]
