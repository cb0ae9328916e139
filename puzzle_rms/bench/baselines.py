"""What the rows are compared with: the textbook NumPy/CuPy step and ``torch.optim.RMSprop``.

The naive steps are written from the formula with a temporary for every operator, as a user would
write them; torch runs with ``foreach`` on and off, on the same device and parameters.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from puzzle_rms.bench.cases import EPSILON, FACTOR, LEARN_RATE, MOMENTUM, STATE_BUFFERS, Case
from puzzle_rms.bench.timing import Row, Subject


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
