"""Golden trajectories printed by ``paddle.optimizer.RMSProp`` (dygraph, CPU), for the paddle preset::

    python3 -m venv /work/venvs/fw-paddle && /work/venvs/fw-paddle/bin/pip install paddlepaddle==3.3.1
    /work/venvs/fw-paddle/bin/python tools/goldens/gen_paddle.py

Gradients are given exactly: each step's loss is ``sum(p * G)`` per parameter, whose gradient is ``G``;
row-sparse gradients come from an ``nn.Embedding(sparse=True)`` lookup whose output is weighted by one
row of values per looked-up index (Paddle then hands the optimizer a SelectedRows gradient). Gradient
clipping is written in the preset's form ``{"type": "<class name>", <its arguments>}``; learning-rate
schedulers (stepped after every optimizer step) as the per-step list of rates they gave.
``ClipGradByValue`` on a SelectedRows gradient aborts Paddle 3.3.1 (``_C_ops.clip``), so it has no
sparse case.
"""
from __future__ import annotations

import numpy as np
import paddle

from golden_io import case, problem, to_json, write

paddle.set_device("cpu")
TWO = {"w": (4, 5), "b": (5,)}
THREE = {"w1": (3, 6), "w2": (6, 2), "w3": (7,)}


def call_text(kwargs: dict, extra: dict | None = None) -> str:
    shown = {**kwargs, **(extra or {})}
    return "paddle.optimizer.RMSProp(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ", parameters=params)"


def clip_object(spec: dict | None):
    if spec is None:
        return None
    args = {k: v for k, v in spec.items() if k != "type"}
    return getattr(paddle.nn, spec["type"])(**args)


def run(kwargs: dict, params: dict, steps: list, groups: list | None = None, scheduler=None) -> list[dict]:
    """Paddle's parameters after each step; ``kwargs`` in the preset's form (grad_clip as a dict)."""
    tensors = {}
    embeddings = {}
    sparse = {name for step in steps for name, g in step.items() if "indices" in g}
    for name, value in params.items():
        if name in sparse:
            layer = paddle.nn.Embedding(value.shape[0], value.shape[1], sparse=True)
            layer.weight.set_value(value)
            embeddings[name] = layer
            tensors[name] = layer.weight
        else:
            tensors[name] = paddle.create_parameter(list(value.shape), "float32",
                                                    default_initializer=paddle.nn.initializer.Assign(value))
    options = {k: v for k, v in kwargs.items() if k != "grad_clip"}
    if scheduler is not None:
        options["learning_rate"] = scheduler
    if groups is None:
        target = list(tensors.values())
    else:
        target = [{**{k: v for k, v in g.items() if k != "params"}, "params": [tensors[n] for n in g["params"]]}
                  for g in groups]
    optimizer = paddle.optimizer.RMSProp(parameters=target, grad_clip=clip_object(kwargs.get("grad_clip")),
                                         **options)
    expected = []
    for step in steps:
        loss = 0
        for name, g in step.items():
            if "dense" in g:
                loss = loss + (tensors[name] * paddle.to_tensor(g["dense"])).sum()
            else:
                rows = embeddings[name](paddle.to_tensor(np.array(g["indices"], np.int64)))
                loss = loss + (rows * paddle.to_tensor(g["values"])).sum()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        if scheduler is not None:
            scheduler.step()
        expected.append({name: t.numpy().copy() for name, t in tensors.items()})
    return expected


def binary_search_finds(rows: list[int], row: int) -> bool:
    """Whether a binary search over ``rows`` (as Paddle's kernel searches its merged rows, probing the middle
    element for equality) finds ``row``; it may not when ``rows`` is unsorted."""
    low, high = 0, len(rows) - 1
    while low <= high:
        middle = (low + high) // 2
        if rows[middle] == row:
            return True
        if rows[middle] < row:
            low = middle + 1
        else:
            high = middle - 1
    return False


def documented(kwargs: dict, params: dict, steps: list, emulate_search: bool) -> list[dict]:
    """Paddle's documented update in NumPy float32 (no grad_clip): rows of repeated indices summed; with
    ``emulate_search`` a listed row that the binary search over the rows in first-occurrence order misses
    gets a zero gradient, as Paddle's CPU SelectedRows kernel does."""
    lr, rho, eps = kwargs["learning_rate"], kwargs.get("rho", 0.95), kwargs.get("epsilon", 1e-6)
    mu, centered, wd = kwargs.get("momentum", 0.0), kwargs.get("centered", False), kwargs.get("weight_decay") or 0.0
    f32 = np.float32
    state = {n: [v.astype(f32), np.zeros_like(v), np.zeros_like(v), np.zeros_like(v)] for n, v in params.items()}
    out = []
    for step in steps:
        for n, g in step.items():
            w, ms, mg, mom = state[n]
            if "dense" in g:
                grad = g["dense"]
            else:
                grad = np.zeros_like(w)
                np.add.at(grad, np.asarray(g["indices"]), g["values"])
                if emulate_search:
                    rows = list(dict.fromkeys(g["indices"]))
                    for r in rows:
                        if not binary_search_finds(rows, r):
                            grad[r] = 0
            grad = (grad + f32(wd) * w).astype(f32)
            ms = (rho * ms + (1 - rho) * grad * grad).astype(f32)
            den = ms
            if centered:
                mg = (rho * mg + (1 - rho) * grad).astype(f32)
                den = ms - mg * mg
            mom = (mu * mom + lr * grad / np.sqrt(den + eps)).astype(f32)
            state[n] = [(w - mom).astype(f32), ms, mg, mom]
        out.append({n: s[0].copy() for n, s in state.items()})
    return out


def close(a, b) -> bool:
    return bool(np.all(np.abs(np.asarray(a, np.float64) - b) <= 1e-6 + 1e-5 * np.abs(np.asarray(b, np.float64))))


def same(x: list[dict], y: list[dict]) -> bool:
    return all(close(a[n], b[n]) for a, b in zip(x, y) for n in a)


def build() -> list[dict]:
    cases = []

    def add(id, kwargs, shapes, seed, steps=4, scale=1.0, groups=None, sparse=None, call_extra=None, note=""):
        params, grads = problem(seed, shapes, steps=steps, scale=scale, sparse=sparse)
        expected = run(kwargs, params, grads, groups)
        deliberate, extra = None, {}
        if sparse and "grad_clip" not in kwargs:
            reference = documented(kwargs, params, grads, emulate_search=False)
            if not same(expected, reference):
                assert same(expected, documented(kwargs, params, grads, emulate_search=True)), id
                deliberate = "paddle-cpu-sparse-unsorted-rows"
                extra = {"expected_puzzle_rms": [{n: to_json(v) for n, v in a.items()} for a in reference]}
        c = case(id, call_text(kwargs, call_extra), "paddle", kwargs, params, grads, expected, groups=groups,
                 note=note, deliberate=deliberate)
        c.update(extra)
        cases.append(c)

    add("defaults", {"learning_rate": 0.01}, TWO, 1)
    add("rho-large-eps", {"learning_rate": 0.05, "rho": 0.5, "epsilon": 0.1}, TWO, 2)
    add("eps-1", {"learning_rate": 0.05, "epsilon": 1.0}, TWO, 3)
    add("eps-0", {"learning_rate": 0.05, "epsilon": 0.0}, TWO, 4)
    add("momentum", {"learning_rate": 0.05, "momentum": 0.9}, TWO, 5)
    add("momentum-large-eps", {"learning_rate": 0.05, "momentum": 0.5, "epsilon": 0.5}, TWO, 6)
    add("centered", {"learning_rate": 0.05, "centered": True}, TWO, 7)
    add("centered-momentum-eps", {"learning_rate": 0.05, "centered": True, "momentum": 0.5, "epsilon": 0.1}, TWO, 8)
    add("weight-decay", {"learning_rate": 0.05, "weight_decay": 0.1}, TWO, 9)
    add("weight-decay-l2decay", {"learning_rate": 0.05, "weight_decay": 0.2, "momentum": 0.5}, TWO, 10,
        call_extra={"weight_decay": "paddle.regularizer.L2Decay(0.2)"},
        note="L2Decay(coeff) is what a float weight_decay means; run with the L2Decay object")
    add("clip-by-norm", {"learning_rate": 0.05, "grad_clip": {"type": "ClipGradByNorm", "clip_norm": 0.5}},
        THREE, 11, call_extra={"grad_clip": "paddle.nn.ClipGradByNorm(clip_norm=0.5)"})
    add("clip-by-global-norm", {"learning_rate": 0.05,
                                "grad_clip": {"type": "ClipGradByGlobalNorm", "clip_norm": 0.5}},
        THREE, 12, call_extra={"grad_clip": "paddle.nn.ClipGradByGlobalNorm(clip_norm=0.5)"})
    add("clip-by-value", {"learning_rate": 0.05, "grad_clip": {"type": "ClipGradByValue", "max": 0.2}}, TWO, 13,
        call_extra={"grad_clip": "paddle.nn.ClipGradByValue(max=0.2)"})
    add("clip-by-value-min", {"learning_rate": 0.05, "grad_clip": {"type": "ClipGradByValue", "max": 0.3,
                                                                   "min": -0.3}}, TWO, 14,
        call_extra={"grad_clip": "paddle.nn.ClipGradByValue(max=0.3, min=-0.3)"})
    add("clip-value-then-weight-decay", {"learning_rate": 0.05, "weight_decay": 2.0,
                                         "grad_clip": {"type": "ClipGradByValue", "max": 0.3}}, TWO, 15,
        call_extra={"grad_clip": "paddle.nn.ClipGradByValue(max=0.3)"},
        note="Paddle clips first, then adds the L2 term")
    add("global-norm-centered-momentum-wd", {"learning_rate": 0.02, "rho": 0.8, "momentum": 0.7, "epsilon": 0.01,
                                             "centered": True, "weight_decay": 0.3,
                                             "grad_clip": {"type": "ClipGradByGlobalNorm", "clip_norm": 1.0}},
        THREE, 16, call_extra={"grad_clip": "paddle.nn.ClipGradByGlobalNorm(clip_norm=1.0)"})
    add("norm-centered-wd", {"learning_rate": 0.02, "centered": True, "weight_decay": 0.1,
                             "grad_clip": {"type": "ClipGradByNorm", "clip_norm": 0.8}}, THREE, 17,
        call_extra={"grad_clip": "paddle.nn.ClipGradByNorm(clip_norm=0.8)"})
    add("three-tensors", {"learning_rate": 0.01, "rho": 0.9, "momentum": 0.3, "epsilon": 1e-8}, THREE, 18, steps=5)
    add("rho-1", {"learning_rate": 0.05, "rho": 1.0, "epsilon": 0.5}, TWO, 19)
    add("rho-0", {"learning_rate": 0.05, "rho": 0.0, "epsilon": 1e-4}, TWO, 20, steps=2)
    add("momentum-above-1", {"learning_rate": 0.01, "momentum": 1.5}, TWO, 21, note="Paddle checks momentum >= 0 only")
    add("large-gradients", {"learning_rate": 0.01}, TWO, 22, scale=100.0)

    for id, make, seed in (
            ("exponential-decay", lambda: paddle.optimizer.lr.ExponentialDecay(0.05, gamma=0.7), 30),
            ("step-decay", lambda: paddle.optimizer.lr.StepDecay(0.05, step_size=2, gamma=0.5), 31),
            ("cosine-annealing", lambda: paddle.optimizer.lr.CosineAnnealingDecay(0.05, T_max=4), 32),
            ("piecewise", lambda: paddle.optimizer.lr.PiecewiseDecay([2, 3], [0.05, 0.01, 0.03]), 33)):
        params, grads = problem(seed, TWO, steps=5)
        probe = make()
        rates = []
        for _ in range(5):
            rates.append(float(np.float32(probe())))
            probe.step()
        scheduler = make()
        kwargs = {"momentum": 0.5, "epsilon": 1e-4}
        expected = run({"learning_rate": 0.0, **kwargs}, params, grads, scheduler=scheduler)
        cases.append(case(id, call_text({"learning_rate": f"paddle.optimizer.lr.{type(scheduler).__name__}(...)",
                                         **kwargs}), "paddle", {"learning_rate": rates, **kwargs}, params, grads,
                          expected, note=f"scheduler stepped after every optimizer step; rates {rates}"))

    # parameter groups: a group's learning_rate scales the optimizer's
    add("groups-lr-scale-wd", {"learning_rate": 0.05, "weight_decay": 0.01}, THREE, 40,
        groups=[{"params": ["w1", "w3"], "learning_rate": 0.5, "weight_decay": 0.3}, {"params": ["w2"]}],
        note="group learning_rate multiplies the optimizer's")
    add("groups-momentum-centered", {"learning_rate": 0.05, "momentum": 0.5, "centered": True, "epsilon": 0.01},
        THREE, 41, groups=[{"params": ["w1"], "learning_rate": 2.0}, {"params": ["w2", "w3"], "weight_decay": 0.2}])

    # row-sparse gradients (nn.Embedding(sparse=True) -> SelectedRows)
    emb = {"emb": (6, 3)}
    add("sparse", {"learning_rate": 0.05}, emb, 50, sparse={"emb": [[0, 2, 5], [1, 2, 3], [5, 0, 4], [2, 3, 1]]})
    add("sparse-sorted-momentum", {"learning_rate": 0.05, "momentum": 0.5}, emb, 57,
        sparse={"emb": [[0, 2, 5], [1, 2, 3], [0, 4, 5], [1, 2, 3]]})
    add("sparse-unsorted-momentum-centered", {"learning_rate": 0.05, "momentum": 0.5, "centered": True}, emb, 58,
        sparse={"emb": [[5, 2, 0], [3, 1, 2], [4, 0, 5], [2, 3, 1]]})
    add("sparse-repeated", {"learning_rate": 0.05}, emb, 51,
        sparse={"emb": [[0, 2, 0], [3, 3, 1], [5, 5, 5], [1, 0, 1]]})
    add("sparse-repeated-momentum-centered", {"learning_rate": 0.05, "momentum": 0.5, "centered": True,
                                              "epsilon": 0.1}, emb, 52,
        sparse={"emb": [[0, 2, 0], [3, 3, 1], [5, 5, 5], [1, 0, 1]]})
    add("sparse-repeated-weight-decay", {"learning_rate": 0.05, "weight_decay": 0.1, "momentum": 0.5}, emb, 53,
        sparse={"emb": [[0, 2, 0], [3, 3, 1], [5, 5, 5], [1, 0, 1]]})
    add("sparse-and-dense-global-norm", {"learning_rate": 0.05,
                                         "grad_clip": {"type": "ClipGradByGlobalNorm", "clip_norm": 0.7}},
        {"emb": (6, 3), "w": (3, 2)}, 54, sparse={"emb": [[0, 2, 0], [3, 3, 1], [5, 5, 5], [1, 0, 1]]},
        call_extra={"grad_clip": "paddle.nn.ClipGradByGlobalNorm(clip_norm=0.7)"})
    add("sparse-clip-by-norm", {"learning_rate": 0.05, "grad_clip": {"type": "ClipGradByNorm", "clip_norm": 0.5}},
        emb, 56, sparse={"emb": [[0, 2, 0], [3, 3, 1], [5, 5, 5], [1, 0, 1]]},
        call_extra={"grad_clip": "paddle.nn.ClipGradByNorm(clip_norm=0.5)"})
    return cases


if __name__ == "__main__":
    write("paddle", "paddlepaddle", paddle.__version__, "tools/goldens/gen_paddle.py", build())
