"""RMSProp.like("torch", ...) against torch.optim.RMSprop itself (skipped when torch is not installed).

torch is imported before anything that may start numba's OpenMP pool (see performance-notes.md): the
other order makes torch load the system libgomp. Every combination of centered, momentum,
weight_decay and maximize runs five steps with changing gradients, eps = 1e-2 and a learning rate
that changes between steps (so lr placement outside the momentum buffer shows), in float64; float32
trajectories of every torch argument are in the golden suite (``tests/goldens/torch.json``).
"""
from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (CPU build: pip install torch==2.13.0 "
                                             "--index-url https://download.pytorch.org/whl/cpu)")

import numpy as np  # noqa: E402

from puzzle_rms import backends  # noqa: E402
from puzzle_rms import Variable  # noqa: E402
from puzzle_rms.optimizers import RMSProp  # noqa: E402

RATES = [0.05, 0.02, 0.08, 0.03, 0.06]
SHAPES = {"w": (6, 5), "b": (5,)}
COMBOS = list(itertools.product([False, True], [0.0, 0.9], [0.0, 0.1], [False, True]))


def problem(dtype):
    gen = np.random.default_rng(11)
    weights = {name: gen.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
    grads = [{name: (scale * gen.standard_normal(shape)).astype(dtype) for name, shape in SHAPES.items()}
             for scale in (0.3, 2.0, 0.05, 1.0, 0.7)]
    return weights, grads


def run_torch(weights, grads, **kwargs):
    params = {name: torch.tensor(w, requires_grad=True) for name, w in weights.items()}
    optimizer = torch.optim.RMSprop(list(params.values()), lr=RATES[0], **kwargs)
    for lr, step in zip(RATES, grads):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for name, p in params.items():
            p.grad = torch.tensor(step[name])
        optimizer.step()
    return {name: p.detach().numpy() for name, p in params.items()}


def run_preset(weights, grads, useGlobalState, **kwargs):
    backend = backends.current()
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    optimizer = RMSProp.like("torch", lr=lambda step: RATES[step], **kwargs)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for step in grads:
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g)
        optimizer.update()
    return {name: backend.to_host(var.data) for name, var in variables.items()}


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("centered, momentum, weight_decay, maximize", COMBOS)
def test_matches_torch_rmsprop_float64(backend_name, useGlobalState, centered, momentum, weight_decay, maximize):
    kwargs = dict(alpha=0.9, eps=1e-2, centered=centered, momentum=momentum, weight_decay=weight_decay,
                  maximize=maximize)
    weights, grads = problem(np.float64)
    want = run_torch(weights, grads, **kwargs)
    got = run_preset(weights, grads, useGlobalState, **kwargs)
    for name in SHAPES:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12, err_msg=f"{kwargs}: {name}")
