"""Golden trajectories printed by MXNet's ``mx.optimizer.RMSProp`` (1.x and 2.x), for the mxnet/mxnet2 presets.

One script for both major versions; run it once in each venv (it writes ``mxnet1.json`` under 1.x and
``mxnet2.json`` under 2.x)::

    python3 -m venv /work/venvs/fw-mxnet1 && /work/venvs/fw-mxnet1/bin/pip install mxnet==1.9.1 "numpy<1.24"
    python3 -m venv /work/venvs/fw-mxnet2 && /work/venvs/fw-mxnet2/bin/pip install mxnet==2.0.0b1 "numpy<1.24"
    /work/venvs/fw-mxnet1/bin/python tools/goldens/gen_mxnet.py
    /work/venvs/fw-mxnet2/bin/python tools/goldens/gen_mxnet.py

(both wheels are ``py3-none-manylinux`` and run on CPython 3.11; MXNet uses ``np.bool``, removed in
NumPy 1.24, hence the pin.) Each case drives the optimizer through ``mx.optimizer.get_updater`` one
parameter at a time, index ``i`` for the ``i``-th name, as Gluon's Trainer and Module do.
Learning-rate schedulers are given to the preset as the per-step list of rates the scheduler produced.
"""
from __future__ import annotations

import copy

import mxnet as mx
import numpy as np

from golden_io import case, problem, write

MAJOR = int(mx.__version__.split(".")[0])
FRAMEWORK, PRESET = ("mxnet1", "mxnet") if MAJOR == 1 else ("mxnet2", "mxnet2")
DECAY, MOMENTUM = ("gamma1", "gamma2") if MAJOR == 1 else ("rho", "momentum")
TWO = {"fc_weight": (4, 3), "fc_bias": (3,)}
NAMED = {"fc_weight": (3, 4), "fc_bias": (4,), "bn_gamma": (4,), "bn_beta": (4,)}
THREE = {"w1": (3, 5), "w2": (5,), "w3": (2, 2)}


def call_text(kwargs: dict) -> str:
    return "mx.optimizer.RMSProp(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def run(kwargs: dict, params: dict, steps: list) -> list[dict]:
    optimizer = mx.optimizer.RMSProp(**kwargs)
    updater = mx.optimizer.get_updater(optimizer)
    weights = {name: mx.nd.array(value, dtype="float32") for name, value in params.items()}
    expected = []
    for step in steps:
        for index, name in enumerate(params):
            updater(index, gradient(step[name], params[name].shape), weights[name])
        expected.append({name: weights[name].asnumpy() for name in params})
    return expected


def gradient(grad: dict, shape: tuple):
    """A dense NDArray, or a row_sparse one (MXNet wants its row indices unique and sorted)."""
    if "dense" in grad:
        return mx.nd.array(grad["dense"], dtype="float32")
    return mx.nd.sparse.row_sparse_array((grad["values"], np.array(grad["indices"], np.int64)), shape=shape,
                                         dtype="float32")


def scheduled_rates(scheduler, steps: int) -> list[float]:
    """The rate the optimizer takes at update 1..steps (num_update), from a copy of the stateful scheduler."""
    scheduler = copy.deepcopy(scheduler)
    return [float(scheduler(t)) for t in range(1, steps + 1)]


def build() -> list[dict]:
    cases = []

    def add(id: str, kwargs: dict, shapes: dict, seed: int, steps: int = 4, scale: float = 1.0,
            preset_kwargs: dict | None = None, note: str = "") -> None:
        params, grads = problem(seed, shapes, steps=steps, scale=scale)
        expected = run(kwargs, params, grads)
        cases.append(case(id, call_text(kwargs), PRESET, kwargs if preset_kwargs is None else preset_kwargs,
                          params, grads, expected, note=note))

    add("defaults", {}, TWO, 1)
    add("defaults-lr", {"learning_rate": 0.05}, TWO, 2)
    add("decay-large-eps", {"learning_rate": 0.05, DECAY: 0.5, "epsilon": 0.05}, TWO, 3)
    add("eps-1", {"learning_rate": 0.1, "epsilon": 1.0}, TWO, 4)
    add("centered-defaults", {"learning_rate": 0.05, "centered": True}, TWO, 5)
    add("centered-momentum-eps", {"learning_rate": 0.05, "centered": True, MOMENTUM: 0.5, "epsilon": 0.1}, TWO, 6)
    add("centered-momentum-0", {"learning_rate": 0.05, "centered": True, MOMENTUM: 0.0, "epsilon": 0.01}, TWO, 7)
    add("momentum-ignored-plain", {"learning_rate": 0.05, MOMENTUM: 0.5, "epsilon": 0.01}, TWO, 8,
        note=f"{MOMENTUM} only acts when centered=True")
    add("wd", {"learning_rate": 0.05, "wd": 0.1, "epsilon": 0.01}, TWO, 9)
    add("wd-clip-gradient", {"learning_rate": 0.05, "wd": 2.0, "clip_gradient": 0.3, "epsilon": 0.01}, TWO, 10)
    add("rescale-grad", {"learning_rate": 0.05, "rescale_grad": 0.25, "epsilon": 0.01}, TWO, 11, scale=4.0)
    add("rescale-wd-clip", {"learning_rate": 0.05, "wd": 2.0, "clip_gradient": 0.3, "rescale_grad": 0.5,
                            "epsilon": 0.01}, TWO, 12)
    add("clip-gradient", {"learning_rate": 0.05, "clip_gradient": 0.2, "epsilon": 0.01}, TWO, 13)
    add("clip-gradient-0-off", {"learning_rate": 0.05, "clip_gradient": 0.0, "epsilon": 0.01}, TWO, 14, scale=3.0)
    add("clip-gradient-negative-off", {"learning_rate": 0.05, "clip_gradient": -1.0, "epsilon": 0.01}, TWO, 15,
        scale=3.0)
    add("clip-weights", {"learning_rate": 0.3, "clip_weights": 0.6, "epsilon": 0.01}, TWO, 16)
    add("clip-weights-0-off", {"learning_rate": 0.3, "clip_weights": 0.0, "epsilon": 0.01}, TWO, 17)
    add("clip-weights-negative-off", {"learning_rate": 0.3, "clip_weights": -1.0, "epsilon": 0.01}, TWO, 18)
    add("centered-clip-weights-wd", {"learning_rate": 0.3, "clip_weights": 0.6, "centered": True, "wd": 0.1,
                                     "epsilon": 0.01}, TWO, 19)
    add("centered-all", {"learning_rate": 0.02, DECAY: 0.8, MOMENTUM: 0.7, "epsilon": 0.05, "centered": True,
                         "wd": 0.3, "rescale_grad": 0.5, "clip_gradient": 0.4, "clip_weights": 1.2}, THREE, 20)
    add("plain-all", {"learning_rate": 0.02, DECAY: 0.8, "epsilon": 0.05, "wd": 0.3, "rescale_grad": 0.5,
                      "clip_gradient": 0.4, "clip_weights": 1.2}, THREE, 21)
    add("three-tensors", {"learning_rate": 0.01, DECAY: 0.95, "epsilon": 1e-6}, THREE, 22, steps=5)
    add("three-tensors-centered", {"learning_rate": 0.01, "centered": True, "epsilon": 1e-6}, THREE, 23, steps=5)
    add("large-gradients", {"learning_rate": 0.01, "epsilon": 1e-8}, TWO, 24, scale=100.0)
    add("decay-0", {"learning_rate": 0.01, DECAY: 0.0, "epsilon": 0.01}, TWO, 25)
    add("decay-1", {"learning_rate": 0.01, DECAY: 1.0, "epsilon": 0.5}, TWO, 26)

    # row_sparse gradients (unique sorted rows, as MXNet requires): the rows not listed still decay n
    emb = {"emb": (6, 3), "fc_weight": (3, 2)}
    rows = [[0, 2, 5], [1, 2, 3], [0, 4, 5], [1, 2]]
    params, grads = problem(44, emb, sparse={"emb": rows})
    for id, kwargs in (("row-sparse", {"learning_rate": 0.05, "epsilon": 0.01}),
                       ("row-sparse-centered-wd-clip", {"learning_rate": 0.05, "epsilon": 0.01, "centered": True,
                                                        "wd": 0.1, "clip_gradient": 0.5, MOMENTUM: 0.5})):
        cases.append(case(id, call_text(kwargs), PRESET, kwargs, params, grads, run(kwargs, params, grads),
                          note="row_sparse gradient of emb, dense of fc_weight"))

    # learning-rate schedulers: the preset gets the rates the scheduler gave at each update
    for id, scheduler, seed in (
            ("factor-scheduler", mx.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.05), 27),
            ("multifactor-scheduler", mx.lr_scheduler.MultiFactorScheduler(step=[1, 3], factor=0.3, base_lr=0.05),
             28),
            ("cosine-scheduler", mx.lr_scheduler.CosineScheduler(max_update=4, base_lr=0.05, final_lr=0.01), 29)):
        params, grads = problem(seed, TWO, steps=5)
        rates = scheduled_rates(scheduler, 5)
        kwargs = {"learning_rate": 0.05, "lr_scheduler": scheduler, "centered": seed == 28, "epsilon": 0.01}
        expected = run(kwargs, params, grads)
        preset = {"learning_rate": rates, "centered": seed == 28, "epsilon": 0.01}
        call = call_text(kwargs).replace(repr(scheduler), f"mx.lr_scheduler.{type(scheduler).__name__}(...)")
        cases.append(case(id, call, PRESET, preset, params, grads, expected,
                          note=f"{type(scheduler).__name__} rates per update, as the preset's list: {rates}"))

    # begin_num_update shifts the scheduler's count; learning_rate=None keeps the scheduler's base_lr
    for id, kwargs, seed in (
            ("factor-scheduler-begin-num-update", {"begin_num_update": 3, "learning_rate": 0.05}, 34),
            ("factor-scheduler-lr-none", {"learning_rate": None}, 35)):
        scheduler = mx.lr_scheduler.FactorScheduler(step=2, factor=0.5, base_lr=0.08)
        params, grads = problem(seed, TWO, steps=5)
        probe = copy.deepcopy(scheduler)
        if kwargs["learning_rate"] is not None:
            probe.base_lr = kwargs["learning_rate"]
        begin = kwargs.get("begin_num_update", 0)
        rates = [float(probe(begin + t)) for t in range(1, 6)]
        full = {**kwargs, "lr_scheduler": scheduler, "epsilon": 0.01}
        expected = run(full, params, grads)
        call = call_text(full).replace(repr(scheduler), "mx.lr_scheduler.FactorScheduler(step=2, factor=0.5, "
                                                        "base_lr=0.08)")
        preset = {**{k: v for k, v in kwargs.items() if k != "learning_rate"}, "learning_rate": rates,
                  "epsilon": 0.01}
        cases.append(case(id, call, PRESET, preset, params, grads, expected,
                          note=f"FactorScheduler rates per update, as the preset's list: {rates}"))

    # weight-decay multipliers from parameter names
    idx2name = {i: name for i, name in enumerate(NAMED)}
    for id, extra, seed in (("idx2name-wd", {}, 30), ("idx2name-wd-centered", {"centered": True}, 31)):
        params, grads = problem(seed, NAMED)
        kwargs = {"learning_rate": 0.05, "wd": 0.5, "epsilon": 0.01, "param_idx2name": idx2name, **extra}
        expected = run(kwargs, params, grads)
        preset = {**kwargs, "param_idx2name": {str(i): n for i, n in idx2name.items()}}
        rule = ("1.x zeroes wd for names not ending in _weight or _gamma" if MAJOR == 1
                else "2.x applies no rule from the names")
        cases.append(case(id, call_text(kwargs), PRESET, preset, params, grads, expected, note=rule))
    params, grads = problem(32, NAMED)
    kwargs = {"learning_rate": 0.05, "wd": 0.5, "epsilon": 0.01}
    cases.append(case("no-idx2name-wd-all", call_text(kwargs), PRESET, kwargs, params, grads,
                      run(kwargs, params, grads), note="without param_idx2name every parameter is decayed"))

    if MAJOR == 2:
        for id, kwargs, seed in (
                ("unfused-plain", {"learning_rate": 0.05, "epsilon": 0.05, "use_fused_step": False}, 40),
                ("unfused-centered", {"learning_rate": 0.05, "epsilon": 0.05, "centered": True, "momentum": 0.5,
                                      "use_fused_step": False}, 41),
                ("unfused-wd-clip", {"learning_rate": 0.05, "wd": 2.0, "clip_gradient": 0.3, "rescale_grad": 0.5,
                                     "epsilon": 0.01, "use_fused_step": False}, 42),
                ("unfused-clip-weights", {"learning_rate": 0.3, "clip_weights": 0.6, "epsilon": 0.01,
                                          "use_fused_step": False}, 43)):
            add(id, kwargs, TWO, seed)
    return cases


if __name__ == "__main__":
    write(FRAMEWORK, "mxnet", mx.__version__, "tools/goldens/gen_mxnet.py", build())
