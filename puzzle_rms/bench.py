"""``python -m puzzle_rms.bench``: the RMSProp step against the memory-bandwidth ceiling, naive NumPy and torch.

An RMSProp step is memory-bound: the plain variant reads ``w, g, ms`` and writes ``w, ms`` (20 bytes per
float32 parameter); centered with momentum reads 5 and writes 4 buffers (36 bytes). For every case the
benchmark times, in one process and interleaved round by round (so that a noisy machine slows every row
alike):

* a *probe*: a fused loop with the step's own access pattern and byte count and trivial arithmetic, on
  the same device (Numba on the CPU, a CuPy kernel on the GPU; plus a plain device copy on the GPU). It is
  the ceiling: STREAM triad would ignore write-allocate, which an in-place update does not pay;
* the backend's raw kernel (``Backend.rmsprop_update`` on the optimizer's own buffers);
* the real optimizer, ``RMSProp.update()`` after ``setupOn(..., useGlobalState=True)``, with the default
  ``nonFinite="raise"`` (one extra reduction pass reading ``g``) and with ``nonFinite="ignore"``; for
  many small tensors also with local state and, for reference, one flat tensor of the same total size;
* the same step written the textbook way with NumPy (or CuPy) temporaries, and ``torch.optim.RMSprop``
  with ``foreach`` on and off on the same device, when torch is installed.

Every row reports min/median/max milliseconds per step over ``--repeat`` rounds (after ``--warmup``
calls; a round repeats the call until it lasts ``--min-time``), the effective bandwidth counted with the
step's own bytes, and the fraction of the probe. The cases: plain and centered+momentum; 1M, 16M and 64M
parameters in one tensor; 200 x 1,000 and 2,000 x 100 tensors; float16 parameters (GPU only); the lazy
row-sparse update of an Embedding. Numba's cold start (compiling, empty cache) and warm start (disk cache
hit) are measured in fresh subprocesses.

torch is imported before anything can start Numba's thread pool: the other order makes torch's CPU
kernels pick up the wrong OpenMP runtime and run up to ~100x slower.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

import numpy as np

# The step every row computes: PyTorch's RMSprop semantics (eps outside the root, lr outside momentum).
LEARN_RATE, FACTOR, EPSILON, MOMENTUM = 1e-3, 0.9, 1e-5, 0.9
VARIANTS = ("plain", "centered-momentum")
STATE_BUFFERS = {"plain": 1, "centered-momentum": 3}  # ms; ms, mg, mom
FAMILIES = ("single", "multi", "fp16", "sparse")
DEFAULT_SIZES = (1 << 20, 16 << 20, 64 << 20)
DEFAULT_TENSORS = ((200, 1000), (2000, 100))
DEFAULT_EMBEDDING = (1_000_000, 64, 1000)  # vocab, dim, rows touched per step
TINY_SIZES = (4096,)
TINY_TENSORS = ((8, 64), (32, 16))
TINY_EMBEDDING = (512, 8, 32)
FP16_SIZE = 16 << 20


# --- cases ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One benchmark case: ``tensors`` parameters of ``tensorSize`` elements (or an embedding table)."""

    name: str
    variant: str
    tensors: int
    tensorSize: int
    dtype: str = "float32"
    embedding: Optional[tuple[int, int, int]] = None  # (vocab, dim, touched rows)

    @property
    def params(self) -> int:
        return self.tensors * self.tensorSize

    @property
    def family(self) -> str:
        if self.embedding is not None:
            return "sparse"
        if self.dtype == "float16":
            return "fp16"
        return "single" if self.tensors == 1 else "multi"

    @property
    def bytesPerParam(self) -> int:
        """Bytes one step moves per parameter: w read and written, g read, each state buffer read and written."""
        item = np.dtype(self.dtype).itemsize
        state = 4 if item == 2 else item
        return 2 * item + item + 2 * state * STATE_BUFFERS[self.variant]

    def title(self) -> str:
        if self.embedding is not None:
            vocab, dim, touched = self.embedding
            return (f"{self.variant}, Embedding({vocab:,}, {dim}) with {touched:,} rows touched per step "
                    f"({touched * dim:,} of {vocab * dim:,} parameters)")
        shape = "1 tensor" if self.tensors == 1 else f"{self.tensors:,} tensors x {self.tensorSize:,}"
        return f"{self.variant}, {self.params:,} {self.dtype} parameters in {shape}, {self.bytesPerParam} B/param"


def build_cases(sizes: Sequence[int], tensors: Sequence[tuple[int, int]], embedding: tuple[int, int, int],
                fp16Size: int, variants: Sequence[str], families: Sequence[str]) -> list[Case]:
    """Every case of the chosen families, in family order, each size with each variant."""
    cases = []
    for family in (f for f in FAMILIES if f in families):
        for variant in variants:
            if family == "single":
                cases += [Case(_size_name(n), variant, 1, n) for n in sizes]
            elif family == "multi":
                cases += [Case(f"{count}x{size}", variant, count, size) for count, size in tensors]
            elif family == "fp16":
                cases.append(Case(f"fp16-{_size_name(fp16Size)}", variant, 1, fp16Size, dtype="float16"))
            else:
                cases.append(Case("embedding", variant, 1, embedding[0] * embedding[1], embedding=embedding))
    return cases


def case_arrays(case: Case, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded host ``(w, g)`` pairs, one per tensor: w ~ N(0, 0.1^2), g ~ N(0, 1), in the case's dtype."""
    gen = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype)
    return [((0.1 * gen.standard_normal(case.tensorSize)).astype(dtype),
             gen.standard_normal(case.tensorSize).astype(dtype)) for _ in range(case.tensors)]


def _size_name(n: int) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def parse_size(text: str) -> int:
    """``"16M"`` -> 16 * 2**20, ``"4K"`` -> 4096, ``"1000"`` -> 1000."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a positive integer with optional K or M suffix")
    return int(digits) * scale


def parse_shape(text: str) -> tuple[int, int]:
    """``"2000x100"`` -> (2000, 100)."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"tensors {text!r}: expected COUNTxSIZE, e.g. 2000x100")
    return parse_size(parts[0]), parse_size(parts[1])


# --- what is timed ----------------------------------------------------------------------------------
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


# --- probes -----------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _numba_probes() -> tuple[Callable, Callable]:
    """Fused CPU loops with the step's access pattern and trivial, bounded arithmetic (compiled on first use)."""
    from numba import njit, prange

    from puzzle_rms.backends.numba_kernels import FASTMATH

    @njit(parallel=True, error_model="numpy", fastmath=FASTMATH)
    def plain(w, g, ms, half):  # reads w, g, ms; writes w, ms
        for i in prange(w.size):
            m = half * ms[i] + g[i]
            ms[i] = m
            w[i] = half * w[i] - m

    @njit(parallel=True, error_model="numpy", fastmath=FASTMATH)
    def centered_momentum(w, g, ms, mg, mom, half):  # reads w, g, ms, mg, mom; writes w, ms, mg, mom
        for i in prange(w.size):
            gi = g[i]
            m = half * ms[i] + gi
            a = half * mg[i] + gi
            v = half * mom[i] + m
            ms[i] = m
            mg[i] = a
            mom[i] = v
            w[i] = half * w[i] - v + a

    return plain, centered_momentum


def cpu_probe(case: Case, n: int) -> Optional[Row]:
    """The fused-pattern probe over ``n`` elements, or None without Numba (NumPy cannot fuse a loop)."""
    from puzzle_rms import backends

    if backends.unavailable_reason("numba") is not None:
        return None
    plain, centeredMomentum = _numba_probes()
    buffers = [np.full(n, 0.5, np.float32) for _ in range(2 + STATE_BUFFERS[case.variant])]
    half = np.float32(0.5)
    call = (lambda: plain(*buffers, half)) if case.variant == "plain" else (lambda: centeredMomentum(*buffers, half))
    reads, writes = len(buffers), len(buffers) - 1
    return Row(f"probe: fused {reads} reads + {writes} writes (numba)", "cpu", "probe", "numba", call,
               n * case.bytesPerParam)


def gpu_probes(case: Case, n: int) -> list[Row]:
    """The fused-pattern probe as a CuPy kernel, and a device copy of the same byte count."""
    import cupy

    dtype = np.dtype(case.dtype)
    state = np.float32 if dtype == np.float16 else dtype
    w, g = cupy.full(n, 0.5, dtype), cupy.full(n, 0.5, dtype)
    sync = cupy.cuda.get_current_stream().synchronize
    if case.variant == "plain":
        ms = cupy.full(n, 0.5, state)
        kernel = cupy.ElementwiseKernel(
            "G g", "T w, S ms", "S m = ms * (S)0.5 + (S)g; ms = m; w = (T)((S)w * (S)0.5 - m);", "rmsprop_probe_plain")
        args = (g, w, ms)
    else:
        ms, mg, mom = (cupy.full(n, 0.5, state) for _ in range(3))
        kernel = cupy.ElementwiseKernel(
            "G g", "T w, S ms, S mg, S mom",
            "S m = ms * (S)0.5 + (S)g; S a = mg * (S)0.5 + (S)g; S v = mom * (S)0.5 + m; ms = m; mg = a; mom = v;"
            " w = (T)((S)w * (S)0.5 - v + a);", "rmsprop_probe_centered_momentum")
        args = (g, w, ms, mg, mom)
    stepBytes = n * case.bytesPerParam
    src, dst = cupy.zeros(stepBytes // 8, np.float32), cupy.zeros(stepBytes // 8, np.float32)
    rows = [Row("probe: fused same-pattern kernel (cupy)", "gpu", "probe", "cupy", lambda: kernel(*args), stepBytes),
            Row("probe: device copy of the same bytes", "gpu", "copy", "cupy", lambda: cupy.copyto(dst, src),
                stepBytes)]
    for row in rows:
        row.sync = sync
    return rows


# --- rows of one case -------------------------------------------------------------------------------
def rmsprop_options(variant: str) -> dict[str, Any]:
    """Keyword arguments of :class:`~puzzle_rms.optimizers.rmsprop.RMSProp` for a variant (torch semantics)."""
    options: dict[str, Any] = {"learnRate": LEARN_RATE, "factor": FACTOR, "epsilon": EPSILON}
    if variant == "centered-momentum":
        options.update(centered=True, momentum=MOMENTUM, lrInMomentum=False)
    return options


def optimizer_rows(case: Case, backendName: str, arrays: list[tuple[np.ndarray, np.ndarray]],
                   device: str) -> list[Row]:
    """Raw kernel and ``RMSProp.update()`` rows of one backend (global, local and flat state as the case needs)."""
    from puzzle_rms import backends
    from puzzle_rms.optimizers.rmsprop import RMSProp
    from puzzle_rms.variable import Variable

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
                               bucket.layout, segParams, hyper)

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


def naive_row(case: Case, xp: Any, arrays: list[tuple[np.ndarray, np.ndarray]], device: str,
              sync: Callable[[], Any]) -> Row:
    """The step as a textbook loop over the tensors, with a temporary for every operator."""
    ws = [xp.array(w) for w, _ in arrays]
    gs = [xp.array(g) for _, g in arrays]
    ms = [xp.zeros_like(w) for w in ws]
    mg = [xp.zeros_like(w) for w in ws]
    mom = [xp.zeros_like(w) for w in ws]
    lr, rho, eps, mu = LEARN_RATE, FACTOR, EPSILON, MOMENTUM

    def plain() -> None:
        for i, g in enumerate(gs):
            ms[i] = rho * ms[i] + (1 - rho) * g * g
            ws[i] = ws[i] - lr * g / (xp.sqrt(ms[i]) + eps)

    def centered_momentum() -> None:
        for i, g in enumerate(gs):
            ms[i] = rho * ms[i] + (1 - rho) * g * g
            mg[i] = rho * mg[i] + (1 - rho) * g
            mom[i] = mu * mom[i] + g / (xp.sqrt(ms[i] - mg[i] * mg[i]) + eps)
            ws[i] = ws[i] - lr * mom[i]

    host = (lambda a: a.get()) if xp is not np else (lambda a: a)
    subject = Subject(lambda: [host(w) for w in ws])
    row = Row(f"naive {xp.__name__} (textbook, temporaries)", device, "naive", xp.__name__,
              plain if case.variant == "plain" else centered_momentum, case.params * case.bytesPerParam, subject,
              sync=sync)
    return row


def torch_rows(case: Case, torch: Any, arrays: list[tuple[np.ndarray, np.ndarray]], device: str) -> list[Row]:
    """``torch.optim.RMSprop`` with foreach on and off, on the same parameters (each with its own state)."""
    params = []
    for w, g in arrays:
        p = torch.tensor(w, device=device, requires_grad=True)
        p.grad = torch.tensor(g, device=device)
        params.append(p)
    options = dict(lr=LEARN_RATE, alpha=FACTOR, eps=EPSILON)
    if case.variant == "centered-momentum":
        options.update(centered=True, momentum=MOMENTUM)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    for foreach in (True, False):
        optimizer = torch.optim.RMSprop(params, foreach=foreach, **options)
        rows.append(Row(f"torch.optim.RMSprop foreach={foreach} ({device})", "gpu" if device == "cuda" else "cpu",
                        "torch", "torch", optimizer.step, case.params * case.bytesPerParam, sync=sync))
    return rows


def embedding_rows(case: Case, backendName: str, device: str, seed: int) -> list[Row]:
    """Lazy and dense-equivalent ``RMSProp.update()`` of an Embedding whose backward touched a few rows."""
    from puzzle_rms import backends
    from puzzle_rms.modules.embedding import Embedding
    from puzzle_rms.optimizers.rmsprop import RMSProp

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


def naive_embedding_row(case: Case, xp: Any, device: str, seed: int, sync: Callable[[], Any]) -> Row:
    """The lazy row update written with NumPy fancy indexing (gather, textbook step, scatter)."""
    vocab, dim, touched = case.embedding
    gen = np.random.default_rng(seed)
    w = xp.asarray((0.1 * gen.standard_normal((vocab, dim))).astype(np.float32))
    state = [xp.zeros_like(w) for _ in range(STATE_BUFFERS[case.variant])]
    rows = xp.asarray(np.sort(gen.choice(vocab, size=touched, replace=False)).astype(np.int64))
    g = xp.asarray(gen.standard_normal((touched, dim)).astype(np.float32))
    lr, rho, eps, mu = LEARN_RATE, FACTOR, EPSILON, MOMENTUM

    def plain() -> None:
        ms = state[0]
        ms[rows] = rho * ms[rows] + (1 - rho) * g * g
        w[rows] -= lr * g / (xp.sqrt(ms[rows]) + eps)

    def centered_momentum() -> None:
        ms, mg, mom = state
        ms[rows] = rho * ms[rows] + (1 - rho) * g * g
        mg[rows] = rho * mg[rows] + (1 - rho) * g
        mom[rows] = mu * mom[rows] + g / (xp.sqrt(ms[rows] - mg[rows] ** 2) + eps)
        w[rows] -= lr * mom[rows]

    row = Row(f"naive {xp.__name__} lazy rows (fancy indexing)", device, "naive", xp.__name__,
              plain if case.variant == "plain" else centered_momentum, touched * dim * case.bytesPerParam, sync=sync)
    return row


# --- timing -----------------------------------------------------------------------------------------
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


@dataclass
class CaseResult:
    case: Case
    rows: list[Row]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        """The case and its rows as plain data; ``ofProbe`` = probe time / row time on the same device."""
        rows = [row.summary() for row in self.rows]
        probes = {r["device"]: r["medianMs"] for r in rows if r["kind"] == "probe"}
        copies = {r["device"]: r["medianMs"] for r in rows if r["kind"] == "copy"}
        for r in rows:
            dense = self.case.embedding is None and r["kind"] not in ("probe", "copy")
            r["ofProbe"] = probes[r["device"]] / r["medianMs"] if dense and r["device"] in probes else None
            r["ofCopy"] = copies[r["device"]] / r["medianMs"] if dense and r["device"] in copies else None
        return {"name": self.case.name, "family": self.case.family, "variant": self.case.variant,
                "params": self.case.params, "tensors": self.case.tensors, "tensorSize": self.case.tensorSize,
                "dtype": self.case.dtype, "bytesPerParam": self.case.bytesPerParam,
                "embedding": list(self.case.embedding) if self.case.embedding else None,
                "title": self.case.title(), "rows": rows, "speedups": speedups(rows), "notes": self.notes}


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How many times faster each global-state update row is than the naive, torch, local-state and flat rows
    of its device (the ratio of median times)."""
    out = []
    for r in rows:
        if r["kind"] != "update" or r["state"] != "global":
            continue
        for base in rows:
            sameBackend = (base["backend"] == r["backend"] and base["kind"] == "update"
                           and base["state"] in ("local", "flat") and base["nonFinite"] == r["nonFinite"])
            if base["device"] == r["device"] and (base["kind"] in ("naive", "torch") or sameBackend):
                out.append({"backend": r["backend"], "row": r["label"], "baseline": base["label"],
                            "baselineBackend": base["backend"], "ratio": base["medianMs"] / r["medianMs"]})
    return out


# The targets, checked on whichever of their cases ran: (device, case, backend, what, threshold).
TARGETS = (
    ("cpu", "16M", "numba", "ofProbe", 0.9),
    ("cpu", "16M", "numba", "torch.optim.RMSprop foreach=True (cpu)", 6.0),
    ("cpu", "16M", "numba", "naive numpy (textbook, temporaries)", 8.0),
    ("cpu", "2000x100", "numba", "torch.optim.RMSprop foreach=True (cpu)", 100.0),
    ("cpu", "2000x100", "numba", "flat", 1 / 1.5),
    ("cpu", "16M", "numpy", "naive numpy (textbook, temporaries)", 2.0),
    ("gpu", "64M", "cupy", "ofCopy", 0.9),
    ("gpu", "2000x100", "cupy", "torch.optim.RMSprop foreach=True (cuda)", 10.0),
)


def target_checks(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against the global-state update rows (nonFinite ignore and raise) of the cases that ran."""
    checks = []
    for device, name, backend, what, threshold in TARGETS:
        for case in (c for c in cases if c["name"] == name):
            for r in (r for r in case["rows"] if r["device"] == device and r["backend"] == backend
                      and r["kind"] == "update" and r["state"] == "global"):
                if what in ("ofProbe", "ofCopy"):
                    value = r[what]
                else:
                    found = [s["ratio"] for s in case["speedups"] if s["row"] == r["label"] and s["backend"] == backend
                             and (s["baseline"] == what or (what == "flat" and "flat tensor" in s["baseline"]))]
                    value = found[0] if found else None
                if value is not None:
                    checks.append({"case": name, "variant": case["variant"], "backend": backend, "row": r["label"],
                                   "what": what, "threshold": threshold, "value": value, "met": value >= threshold})
    return checks


def run_case(case: Case, backendNames: Sequence[str], torch: Any, repeat: int, warmup: int, minTime: float,
             naive: bool, seed: int, progress: Callable[[str], None]) -> CaseResult:
    """Build every row of ``case`` for the chosen backends, time them per device, and return the result."""
    from puzzle_rms import backends

    notes: list[str] = []
    arrays = case_arrays(case, seed) if case.embedding is None else []
    devices = {"cpu": [b for b in backendNames if b != "cupy"], "gpu": [b for b in backendNames if b == "cupy"]}
    if case.dtype == "float16" and not devices["gpu"]:
        return CaseResult(case, [], ["skipped: float16 parameters are timed on the GPU only (the cupy backend is "
                                     f"{'not selected' if 'cupy' not in backendNames else 'not usable'}); Numba has "
                                     "no float16 arithmetic and converts through float32 copies"])
    allRows: list[Row] = []
    for device, names in devices.items():
        if not names or (case.dtype == "float16" and device == "cpu"):
            continue
        rows: list[Row] = []
        if device == "cpu":
            xp, sync, torchDevice = np, (lambda: None), "cpu"
        else:
            xp = backends.use("cupy").xp
            sync, torchDevice = xp.cuda.get_current_stream().synchronize, "cuda"
        if case.embedding is None:
            if device == "cpu":
                probe = cpu_probe(case, case.params)
                if probe is None:
                    notes.append("no CPU probe: Numba is not installed (NumPy cannot fuse the pattern loop)")
                rows += [probe] if probe is not None else []
            else:
                rows += gpu_probes(case, case.params)
            for name in names:
                rows += optimizer_rows(case, name, arrays, device)
            if naive:
                rows.append(naive_row(case, xp, arrays, device, sync))
            if torch is not None and (device == "cpu" or torch.cuda.is_available()):
                rows += torch_rows(case, torch, arrays, torchDevice)
        else:
            for name in names:
                rows += embedding_rows(case, name, device, seed)
            if naive:
                rows.append(naive_embedding_row(case, xp, device, seed, sync))
        measure(rows, repeat, warmup, minTime, lambda text: progress(f"{device}: {text}"))
        allRows += rows
    if case.embedding is not None:
        notes.append("no torch row: torch.optim.RMSprop does not accept sparse gradients")
    elif torch is None:
        notes.append("no torch rows: torch is not installed (pip install torch) or --no-torch was given")
    return CaseResult(case, allRows, notes)


# --- numba start-up ---------------------------------------------------------------------------------
_STARTUP_SCRIPT = r"""
import json, time
start = time.perf_counter()
import numpy as np
from puzzle_rms import backends
backends.use("numba")
from puzzle_rms.optimizers.rmsprop import RMSProp
from puzzle_rms.variable import Variable
imported = time.perf_counter()
firsts = {}
# a small model runs the serial kernels, a large one the parallel ones: each first update loads or compiles its own
for label, size in (("small", 1000), ("large", 1 << 17)):
    variables = [Variable(np.ones(size, np.float32)), Variable(np.ones(10, np.float32))]
    optimizer = RMSProp(1e-3, nonFinite="raise")
    optimizer.setupOn(variables, useGlobalState=True)
    begin = time.perf_counter()
    optimizer.update()
    firsts[label] = time.perf_counter() - begin
print(json.dumps({"importSeconds": imported - start, "firstUpdateSeconds": firsts,
                  "totalSeconds": time.perf_counter() - start}))
"""


def numba_startup() -> dict[str, Any]:
    """A fresh process's first updates with an empty Numba cache (compiling) and again with it filled (loading).

    Returns ``{"cold": ..., "warm": ...}``, each with the import time, the first update of a small model
    (serial kernels) and of a large one (parallel kernels), and the process total, in seconds.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="puzzle_rms_numba_cache_") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        for label in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT], env=env, capture_output=True, text=True,
                                  timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"the numba start-up subprocess failed:\n{done.stderr}")
            result[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- report -----------------------------------------------------------------------------------------
def machine_info(torch: Any) -> dict[str, Any]:
    """Date, CPU, core count, load and library versions, for the header and the JSON file."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "nproc": os.cpu_count(),
                            "python": platform.python_version(), "numpy": np.__version__,
                            "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
                            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")}
    if "numba" in sys.modules:
        import numba

        info["numba"] = numba.__version__
        info["numbaThreads"] = numba.get_num_threads()
        try:
            info["numbaThreadingLayer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel ran yet
            info["numbaThreadingLayer"] = None
    if torch is not None:
        info["torch"] = torch.__version__
        info["torchThreads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["torchGpu"] = torch.cuda.get_device_name()
    if "cupy" in sys.modules:
        import cupy

        info["cupy"] = cupy.__version__
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def format_case(summary: dict[str, Any]) -> str:
    """A fixed-width table of one case, its speed-ups and its notes."""
    lines = [f"== {summary['name']}: {summary['title']} =="]
    if summary["rows"]:
        header = (f"{'dev':3} {'backend':7} {'row':62} {'min ms':>9} {'median ms':>10} {'max ms':>9} {'GB/s':>6} "
                  f"{'of probe':>8}")
        lines += [header, "-" * len(header)]
        for r in summary["rows"]:
            ofProbe = r["ofProbe"] if r["ofProbe"] is not None else r["ofCopy"]
            lines.append(f"{r['device']:3} {r['backend']:7} {r['label'][:62]:62} {r['minMs']:9.3f} "
                         f"{r['medianMs']:10.3f} {r['maxMs']:9.3f} {r['gbps']:6.1f} "
                         f"{'' if ofProbe is None else f'{ofProbe:.0%}':>8}")
        byRow: dict[tuple[str, str], list[str]] = {}
        for s in summary["speedups"]:
            byRow.setdefault((s["backend"], s["row"]), []).append(f"{s['ratio']:.1f}x {s['baseline']}")
        for (backend, row), parts in byRow.items():
            lines.append(f"  speed-up of {backend} {row}: " + "; ".join(parts))
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def format_targets(checks: list[dict[str, Any]]) -> str:
    lines = ["== targets (issue 4) =="]
    for c in checks:
        what = {"ofProbe": "of the same-run probe", "ofCopy": "of the same-run device copy",
                "flat": "flat-tensor time / this time (within 1.5x means >= 0.67)"}.get(c["what"],
                                                                                      f"x faster than {c['what']}")
        lines.append(f"  {'met   ' if c['met'] else 'MISSED'} {c['case']} {c['variant']} {c['backend']} {c['row']}: "
                     f"{c['value']:.2f} (target >= {c['threshold']:.2f}) {what}")
    return "\n".join(lines)


def format_startup(startup: dict[str, Any]) -> str:
    lines = ["== numba start-up: fresh processes, NUMBA_CACHE_DIR in a new temporary directory =="]
    for label, what in (("cold", "empty cache, compiles"), ("warm", "cache hit, loads")):
        r = startup[label]
        lines.append(f"  {label} ({what}): import {r['importSeconds']:.2f} s; first update of a small model (serial "
                     f"kernels) {r['firstUpdateSeconds']['small']:.2f} s, of a large one (parallel kernels) "
                     f"{r['firstUpdateSeconds']['large']:.2f} s; process total {r['totalSeconds']:.2f} s")
    return "\n".join(lines)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def _choices(allowed: Sequence[str], what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        text = text.strip()
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected one of {', '.join(allowed)}")
        return text
    return check


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m puzzle_rms.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=_csv(_choices(("numpy", "numba", "cupy"), "backend")),
                        help="comma-separated backends to time (default: every usable one)")
    parser.add_argument("--cases", type=_csv(_choices(FAMILIES, "case family")), default=list(FAMILIES),
                        help="case families: single, multi, fp16, sparse (default: all)")
    parser.add_argument("--variants", type=_csv(_choices(VARIANTS, "variant")), default=list(VARIANTS),
                        help="plain, centered-momentum (default: both)")
    parser.add_argument("--sizes", type=_csv(parse_size),
                        help="parameters of the single-tensor cases (default 1M,16M,64M)")
    parser.add_argument("--tensors", type=_csv(parse_shape),
                        help="COUNTxSIZE multi-tensor cases (default 200x1000,2000x100)")
    parser.add_argument("--repeat", type=int, help="timed rounds per row (default 11; tiny 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls per row first (default 2; tiny 1)")
    parser.add_argument("--min-time", type=float,
                        help="seconds a round lasts at least, repeating the call (default 0.02)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim.RMSprop even when installed")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive NumPy/CuPy rows")
    parser.add_argument("--no-startup", action="store_true", help="skip the numba cold/warm start measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes, few rounds, no start-up measurement (a smoke test, not a measurement)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.sizes = args.sizes or list(TINY_SIZES if tiny else DEFAULT_SIZES)
    args.tensors = args.tensors or list(TINY_TENSORS if tiny else DEFAULT_TENSORS)
    args.embedding = TINY_EMBEDDING if tiny else DEFAULT_EMBEDDING
    args.fp16Size = TINY_SIZES[0] if tiny else FP16_SIZE
    args.repeat = args.repeat if args.repeat is not None else (3 if tiny else 11)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    args.min_time = args.min_time if args.min_time is not None else (0.0 if tiny else 0.02)
    for name in ("repeat", "warmup"):
        if getattr(args, name) < (1 if name == "repeat" else 0):
            parser.error(f"--{name} must be >= {1 if name == 'repeat' else 0}, got {getattr(args, name)}")
    if args.min_time < 0:
        parser.error(f"--min-time must be >= 0, got {args.min_time}")
    return args


def import_torch(wanted: bool) -> Any:
    """torch, imported before Numba starts its threads, or None (not wanted or not installed)."""
    if not wanted:
        return None
    if "numba" in sys.modules:
        print("warning: numba was imported before torch in this process; torch's CPU timings may be invalid "
              "(run the benchmark as its own process)", file=sys.stderr)
    try:
        import torch
    except ImportError:
        return None
    return torch


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; print one table per case (and the numba start-up); return the exit status."""
    args = parse_args(argv)
    torch = import_torch(not args.no_torch)
    from puzzle_rms import backends

    names = args.backends or backends.available()
    missing = [name for name in names if backends.unavailable_reason(name) is not None]
    for name in missing:
        print(f"error: backend {name!r} is not usable here: {backends.unavailable_reason(name)}", file=sys.stderr)
    if missing:
        return 2
    progress = (lambda text: None) if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    cases = build_cases(args.sizes, args.tensors, args.embedding, args.fp16Size, args.variants, args.cases)
    report: dict[str, Any] = {"machine": None, "options": {k: v for k, v in vars(args).items() if k != "json"},
                              "startup": None, "cases": []}
    loadBefore = os.getloadavg() if hasattr(os, "getloadavg") else None
    if "numba" in names and not args.no_startup and not args.tiny:
        progress("numba start-up: cold and warm processes")
        report["startup"] = numba_startup()
    for index, case in enumerate(cases, 1):
        if not args.quiet:
            print(f"[{index}/{len(cases)}] {case.name} {case.variant}", file=sys.stderr, flush=True)
        result = run_case(case, names, torch, args.repeat, args.warmup, args.min_time, not args.no_naive,
                          args.seed, progress)
        report["cases"].append(result.summary())
        del result
        gc.collect()
    report["machine"] = machine_info(torch)
    report["machine"]["loadavgBefore"] = loadBefore
    info = report["machine"]
    print(f"puzzle_rms.bench {info['date']} | {info['cpu']} | nproc {info['nproc']} | load before/after "
          f"{_load(loadBefore)} / {_load(info['loadavg'])} | numpy {info['numpy']}"
          + (f" | numba {info['numba']} ({info['numbaThreads']} threads, {info['numbaThreadingLayer']})"
             if "numba" in info else "")
          + (f" | torch {info['torch']} ({info['torchThreads']} threads)" if "torch" in info else "")
          + (f" | GLIBC_TUNABLES={info['GLIBC_TUNABLES']}" if info["GLIBC_TUNABLES"] else ""))
    print("GB/s counts the step's own bytes (nonFinite=raise reads g once more); 'of probe' = probe time / row time.")
    if report["startup"] is not None:
        print(format_startup(report["startup"]))
    for summary in report["cases"]:
        print(format_case(summary))
    report["targets"] = target_checks(report["cases"])
    if report["targets"]:
        print(format_targets(report["targets"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=_json_default)
    return 0


def _load(load: Optional[Sequence[float]]) -> str:
    return "n/a" if load is None else f"{load[0]:.2f}"


def _json_default(value: Any) -> Any:
    """NumPy scalars as Python numbers (json writes lists, tuples and dicts itself)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
