"""How a row is timed: one callable, its byte count and its samples; rounds interleave the rows.

Interleaving the rows round by round (rather than timing each to completion) makes a noisy, shared
machine slow every row alike, so that the ratios between rows stay meaningful.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np


@dataclass
class Subject:
    """Buffers that several timed rows may step (e.g. one optimizer timed with two non-finite policies)."""

    weights: Callable[[], list[np.ndarray]]
    steps: int = 0


@dataclass
class Row:
    """One timed callable and its samples (seconds per step)."""

    label: str
    device: str
    kind: str  # probe, copy, kernel, update, naive, torch
    backend: str
    call: Callable[[], Any]
    bytes: int
    subject: Optional[Subject] = None
    prepare: Optional[Callable[[], Any]] = None  # untimed work before each call (a fresh gradient)
    activate: Callable[[], Any] = lambda: None  # untimed: make the row's backend current
    sync: Callable[[], Any] = lambda: None  # timed: wait for the device
    state: str = "-"
    nonFinite: str = "-"
    inner: int = 1
    samples: list[float] = field(default_factory=list)

    def timed(self, count: int) -> float:
        """Seconds that ``count`` calls take (each after its untimed ``prepare``)."""
        self.activate()
        total = 0.0
        for _ in range(count if self.prepare else 1):
            if self.prepare:
                self.prepare()
                self.sync()
            start = time.perf_counter()
            for _ in range(1 if self.prepare else count):
                self.call()
            self.sync()
            total += time.perf_counter() - start
        if self.subject is not None:
            self.subject.steps += count
        return total

    def summary(self) -> dict[str, Any]:
        ms = np.array(self.samples) * 1e3
        median = float(np.median(ms))
        return {"label": self.label, "device": self.device, "kind": self.kind, "backend": self.backend,
                "state": self.state, "nonFinite": self.nonFinite, "minMs": float(ms.min()), "medianMs": median,
                "maxMs": float(ms.max()), "gbps": self.bytes / (median * 1e-3) / 1e9, "callsPerRound": self.inner,
                "steps": self.subject.steps if self.subject is not None else None}


def measure(rows: list[Row], repeat: int, warmup: int, minTime: float, progress: Callable[[str], None]) -> None:
    """Warm every row up, size its rounds to last ``minTime``, then time ``repeat`` interleaved rounds."""
    for row in rows:
        if warmup:
            row.timed(warmup)
        elapsed = max(row.timed(1), 1e-7)
        row.inner = max(1, min(10_000, math.ceil(minTime / elapsed)))
    for round_ in range(repeat):
        progress(f"round {round_ + 1}/{repeat}")
        shift = round_ % len(rows)
        for row in rows[shift:] + rows[:shift]:  # rotate the order so that no row always follows the same one
            row.samples.append(row.timed(row.inner) / row.inner)
