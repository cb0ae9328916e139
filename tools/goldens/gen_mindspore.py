"""Golden trajectories printed by MindSpore on CPU: ``nn.RMSProp`` and the raw ops ``ops.ApplyRMSProp``,
``ops.ApplyCenteredRMSProp`` and ``ops.SparseApplyRMSProp``, for the mindspore preset and ``puzzle_rms.ops``::

    python3 -m venv /work/venvs/fw-mindspore && /work/venvs/fw-mindspore/bin/pip install mindspore==2.10.0
    /work/venvs/fw-mindspore/bin/python tools/goldens/gen_mindspore.py

Two behaviours of MindSpore's CPU kernels differ from its documentation, and puzzle_rms follows the
documentation; the generator finds them by running the documented formula in NumPy next to the kernel:

- ``mindspore-cpu-eps-split``: ``ApplyRMSProp``'s CPU kernel puts eps outside the root
  (``sqrt(ms) + eps``) in its vectorised loop and inside (``sqrt(ms + eps)``) only for the tail
  elements. Where that shows (large eps), the case records the documented trajectory as
  ``expected_puzzle_rms``; the generator checks that every element follows one of the two placements.
- ``mindspore-cpu-centered-negative``: where the centered variance ``ms - mg**2`` is negative, the
  CPU kernel leaves that element's ``var`` and ``mom`` unchanged (documented formula: NaN);
  puzzle_rms clamps the variance at 0 and takes the step.

MindSpore's CPU ``SparseApplyRMSProp`` applies a repeated index once per occurrence, in order (its
documentation calls repeats undefined): its cases run ``sparseApplyRMSProp(..., duplicates="apply")``.
``SparseApplyCenteredRMSProp`` runs only on Ascend (no CPU kernel) and has no golden here.
A learning-rate list shorter than the number of steps makes MindSpore raise (``Gather`` index out of
range) once the steps outrun it, so the lists here cover every step. Learning-rate schedules
(``nn.ExponentialDecayLR`` ...) are given to the preset as the per-step list of
rates they produced (MindSpore's own list form).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from golden_io import case, op_case, problem, to_json, write

ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")

NAMED = {"fc.weight": (4, 5), "fc.bias": (5,), "bn.gamma": (5,), "bn.beta": (5,)}
TWO = {"dense.weight": (4, 5), "dense.bias": (5,)}
THREE = {"w1": (3, 6), "w2": (6, 2), "w3": (7,)}
F32 = np.float32


# --- documented formulas (NumPy, float32) -----------------------------------------------------------------
def documented_step(var, ms_, mg, mom, g, lr, decay, momentum, eps, clamp):
    """MindSpore's documented ApplyRMSProp / ApplyCenteredRMSProp; ``clamp`` applies puzzle_rms's clamp."""
    ms_ = decay * ms_ + (1 - decay) * g * g
    if mg is None:
        den = ms_
    else:
        mg = decay * mg + (1 - decay) * g
        den = ms_ - mg * mg
        if clamp:
            den = np.maximum(den, 0)
    with np.errstate(invalid="ignore"):
        mom = momentum * mom + lr * g / np.sqrt(den + eps)
    return (var - mom).astype(F32), ms_.astype(F32), None if mg is None else mg.astype(F32), mom.astype(F32)


def eps_outside_step(var, ms_, mg, mom, g, lr, decay, momentum, eps):
    ms_ = decay * ms_ + (1 - decay) * g * g
    mom = momentum * mom + lr * g / (np.sqrt(ms_) + eps)
    return (var - mom).astype(F32), ms_.astype(F32), mg, mom.astype(F32)


def close(a, b) -> np.ndarray:
    return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) <= 1e-6 + 1e-5 * np.abs(np.asarray(b))


# --- nn.RMSProp ---------------------------------------------------------------------------------------------
def call_text(kwargs: dict, groups: bool = False) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"mindspore.nn.RMSProp({'group_params' if groups else 'params'}{', ' if args else ''}{args})"


def run_nn(kwargs: dict, params: dict, steps: list, groups: list | None = None) -> list[dict]:
    parameters = {name: Parameter(Tensor(value.copy()), name=name) for name, value in params.items()}
    if groups is None:
        target = list(parameters.values())
    else:
        target = [{**{k: v for k, v in g.items() if k != "params"}, "params": [parameters[n] for n in g["params"]]}
                  for g in groups]
    optimizer = nn.RMSProp(target, **kwargs)
    order = [p.name for p in optimizer.parameters]
    expected = []
    for step in steps:
        optimizer(tuple(Tensor(step[name]["dense"]) for name in order))
        expected.append({name: parameters[name].asnumpy().copy() for name in params})
    return expected


def nn_reference(kwargs: dict, params: dict, steps: list, place: str) -> list[dict]:
    """nn.RMSProp as documented (``place`` = "inside") or with eps outside the root, no groups."""
    lr_spec = kwargs.get("learning_rate", 0.1)
    decay, momentum = kwargs.get("decay", 0.9), kwargs.get("momentum", 0.0)
    eps, centered = kwargs.get("epsilon", 1e-10), kwargs.get("centered", False)
    scale, wd = kwargs.get("loss_scale", 1.0), kwargs.get("weight_decay", 0.0)
    state = {n: [v.astype(F32), np.ones_like(v, F32), np.zeros_like(v, F32) if centered else None,
                 np.zeros_like(v, F32)] for n, v in params.items()}
    out = []
    for t, step in enumerate(steps):
        lr = lr_spec[min(t, len(lr_spec) - 1)] if isinstance(lr_spec, list) else lr_spec
        for n in params:
            var, ms_, mg, mom = state[n]
            g = step[n]["dense"]
            if wd > 0 and "beta" not in n and "gamma" not in n:
                g = g + F32(wd * scale) * var
            g = (g * F32(1.0 / scale)).astype(F32)
            if place == "inside":
                state[n] = list(documented_step(var, ms_, mg, mom, g, lr, decay, momentum, eps, clamp=True))
            else:
                state[n] = list(eps_outside_step(var, ms_, mg, mom, g, lr, decay, momentum, eps))
        out.append({n: state[n][0].copy() for n in params})
    return out


def classify_eps_split(expected: list[dict], inside: list[dict], outside: list[dict]) -> bool:
    """True when the kernel's numbers differ from the documented ones, every element following eps inside or
    eps outside over the whole trajectory; raises when neither explains an element."""
    names = list(expected[0])
    matches_inside = all(close(e[n], i[n]).all() for e, i in zip(expected, inside) for n in names)
    if matches_inside:
        return False
    for n in names:
        inside_ok = np.logical_and.reduce([close(e[n], i[n]) for e, i in zip(expected, inside)])
        outside_ok = np.logical_and.reduce([close(e[n], o[n]) for e, o in zip(expected, outside)])
        if not (inside_ok | outside_ok).all():
            raise AssertionError(f"{n}: MindSpore's numbers follow neither eps placement")
    return True


def build_nn() -> list[dict]:
    cases = []

    def add(id, kwargs, shapes, seed, steps=4, scale=1.0, preset_kwargs=None, groups=None, note="",
            check_split=True):
        params, grads = problem(seed, shapes, steps=steps, scale=scale)
        expected = run_nn(kwargs, params, grads, groups)
        deliberate, extra = None, {}
        if check_split and groups is None and not kwargs.get("centered", False):
            inside = nn_reference(preset_kwargs or kwargs, params, grads, "inside")
            outside = nn_reference(preset_kwargs or kwargs, params, grads, "outside")
            if classify_eps_split(expected, inside, outside):
                deliberate = "mindspore-cpu-eps-split"
                extra = {"expected_puzzle_rms": [{n: to_json(v) for n, v in a.items()} for a in inside]}
        c = case(id, call_text(kwargs, groups is not None), "mindspore",
                 kwargs if preset_kwargs is None else preset_kwargs, params, grads, expected,
                 groups=groups, note=note, deliberate=deliberate)
        c.update(extra)
        cases.append(c)

    add("defaults", {}, TWO, 101, scale=0.1)
    add("decay-large-eps", {"learning_rate": 0.05, "decay": 0.5, "epsilon": 0.05}, TWO, 102)
    add("eps-1", {"learning_rate": 0.05, "epsilon": 1.0}, TWO, 103)
    add("momentum", {"learning_rate": 0.05, "momentum": 0.9, "epsilon": 1e-6}, TWO, 104)
    add("momentum-large-eps", {"learning_rate": 0.05, "momentum": 0.5, "epsilon": 0.1}, TWO, 105)
    add("centered", {"learning_rate": 0.05, "centered": True, "epsilon": 1e-6}, TWO, 106)
    add("centered-momentum-eps", {"learning_rate": 0.05, "centered": True, "momentum": 0.5, "epsilon": 0.1},
        TWO, 107)
    add("centered-eps-1", {"learning_rate": 0.05, "centered": True, "epsilon": 1.0}, TWO, 108)
    add("weight-decay-filter", {"learning_rate": 0.05, "weight_decay": 0.1, "epsilon": 1e-6}, NAMED, 109,
        note="the default filter skips names containing beta or gamma")
    add("weight-decay-loss-scale", {"learning_rate": 0.05, "weight_decay": 0.5, "loss_scale": 64.0,
                                    "epsilon": 1e-6}, NAMED, 110, scale=64.0,
        note="gradients as received, scaled by 64; MindSpore multiplies weight_decay by loss_scale")
    add("loss-scale", {"learning_rate": 0.05, "loss_scale": 128.0, "epsilon": 1e-6}, TWO, 111, scale=128.0)
    add("loss-scale-wd-centered-momentum", {"learning_rate": 0.02, "loss_scale": 16.0, "weight_decay": 0.2,
                                            "centered": True, "momentum": 0.7, "decay": 0.8, "epsilon": 1e-4},
        NAMED, 112, scale=16.0)
    add("use-locking", {"learning_rate": 0.05, "use_locking": True, "momentum": 0.5, "epsilon": 1e-6}, TWO, 113)
    add("three-tensors", {"learning_rate": 0.01, "decay": 0.95, "momentum": 0.3, "epsilon": 1e-8}, THREE, 114,
        steps=5)
    add("three-tensors-centered", {"learning_rate": 0.01, "centered": True, "epsilon": 1e-8}, THREE, 115, steps=5)
    add("decay-1", {"learning_rate": 0.05, "decay": 1.0, "epsilon": 1e-6}, TWO, 116)
    add("decay-0", {"learning_rate": 0.05, "decay": 0.0, "epsilon": 1e-6}, TWO, 117, steps=2,
        note="two steps with growing gradients: MindSpore's ms += (1 - decay) * (g*g - ms) cancels in float32 "
             "when the gradient then shrinks 40-fold, an error of rounding, not of the formula")
    add("decay-above-1", {"learning_rate": 0.05, "decay": 1.05, "epsilon": 1e-6}, TWO, 118, scale=0.5,
        note="MindSpore checks decay >= 0 only")
    add("momentum-1", {"learning_rate": 0.01, "momentum": 1.0, "epsilon": 1e-6}, TWO, 119)
    add("momentum-above-1", {"learning_rate": 0.01, "momentum": 1.5, "epsilon": 1e-6}, TWO, 120,
        note="MindSpore checks momentum >= 0 only")
    add("large-gradients", {"learning_rate": 0.01, "epsilon": 1e-10}, TWO, 121, scale=100.0)
    add("lr-list", {"learning_rate": [0.05, 0.01, 0.08, 0.02], "momentum": 0.9, "epsilon": 1e-6}, TWO, 122)
    add("lr-list-centered", {"learning_rate": [0.05, 0.01, 0.08, 0.02], "centered": True, "momentum": 0.5,
                             "epsilon": 1e-6}, TWO, 123)

    # learning-rate schedules, given to the preset as the rates they produced at global steps 0, 1, ...
    for id, schedule, seed in (
            ("exponential-decay-lr", nn.ExponentialDecayLR(0.05, 0.7, 2), 130),
            ("exponential-decay-lr-stair", nn.ExponentialDecayLR(0.05, 0.7, 2, is_stair=True), 131),
            ("cosine-decay-lr", nn.CosineDecayLR(0.01, 0.05, 3), 132),
            ("polynomial-decay-lr", nn.PolynomialDecayLR(0.05, 0.01, 3, power=2.0), 133),
            ("inverse-decay-lr", nn.InverseDecayLR(0.05, 0.5, 1), 134)):
        rates = [float(np.float32(schedule(Tensor(t, ms.int32)).asnumpy())) for t in range(5)]
        params, grads = problem(seed, TWO, steps=5)
        kwargs = {"learning_rate": schedule, "momentum": 0.5, "epsilon": 1e-6}
        expected = run_nn(kwargs, params, grads)
        call = call_text({"momentum": 0.5, "epsilon": 1e-6}).replace(
            "params, ", f"params, learning_rate=nn.{type(schedule).__name__}(...), ")
        cases.append(case(id, call, "mindspore", {"learning_rate": rates, "momentum": 0.5, "epsilon": 1e-6},
                          params, grads, expected, note=f"{type(schedule).__name__} rates per step: {rates}"))

    # parameter groups: per-group lr and weight_decay; groups decay every parameter whose group wd > 0
    add("groups-lr-wd", {"learning_rate": 0.05, "weight_decay": 0.01, "epsilon": 1e-6}, NAMED, 140,
        groups=[{"params": ["fc.weight", "bn.gamma"], "lr": 0.02, "weight_decay": 0.3},
                {"params": ["fc.bias", "bn.beta"]}],
        note="in groups the beta/gamma filter is off: bn.gamma is decayed with 0.3, bn.beta with 0.01")
    add("groups-wd-0", {"learning_rate": 0.05, "weight_decay": 0.2, "momentum": 0.5, "epsilon": 1e-6}, NAMED, 141,
        groups=[{"params": ["fc.weight"], "weight_decay": 0.0}, {"params": ["fc.bias", "bn.gamma", "bn.beta"]}])
    add("groups-lr-list-centered", {"learning_rate": 0.05, "centered": True, "epsilon": 1e-6}, THREE, 142,
        groups=[{"params": ["w1"], "lr": [0.01, 0.03, 0.02, 0.05]}, {"params": ["w2", "w3"], "lr": 0.02}])
    add("groups-grad-centralization-off", {"learning_rate": 0.05, "weight_decay": 0.1, "epsilon": 1e-6}, NAMED, 144,
        groups=[{"params": ["fc.weight"], "grad_centralization": False, "lr": 0.03},
                {"params": ["fc.bias", "bn.gamma", "bn.beta"], "grad_centralization": False}])
    add("groups-loss-scale-wd", {"learning_rate": 0.05, "loss_scale": 8.0, "weight_decay": 0.1, "epsilon": 1e-6},
        NAMED, 143, scale=8.0,
        groups=[{"params": ["fc.weight", "fc.bias"], "weight_decay": 0.4}, {"params": ["bn.gamma", "bn.beta"]}])
    return cases


def check_centered_negative(var, state, g, decay, momentum, lr, eps, kernel, clamped) -> None:
    """At step 1 the kernel differs from the clamped formula only where ``v = ms - mg**2`` is negative: where
    ``v + eps < 0`` it leaves ``var`` and ``mom`` unchanged, where ``v + eps >= 0`` it takes
    ``sqrt(v + eps)`` unclamped (the documented formula)."""
    ms1 = decay * state["ms"] + (1 - decay) * g * g
    mg1 = decay * state["mg"] + (1 - decay) * g
    v = ms1 - mg1 * mg1
    differs = ~close(kernel["var"], clamped["var"])
    assert (v < 0).any() and not (differs & (v >= 0)).any(), "differences outside the negative variance"
    skipped = v + eps < 0
    assert (kernel["var"][skipped] == var[skipped]).all(), "var changed where v + eps < 0"
    assert (kernel["state"]["mom"][skipped] == state["mom"][skipped]).all(), "mom changed where v + eps < 0"
    unclamped = documented_step(var, state["ms"], state["mg"], state["mom"], g, lr, decay, momentum, eps, False)
    taken = (v < 0) & ~skipped
    assert close(kernel["var"][taken], unclamped[0][taken]).all(), "not the unclamped formula where v + eps >= 0"


# --- raw ops --------------------------------------------------------------------------------------------------
def op_problem(seed: int, shape: tuple, steps: int, rows: list | None = None, state_scale: float = 1.0,
               consistent: bool = True):
    """Seeded var, state and gradients; ``consistent`` keeps ``ms >= mg**2`` as any history of gradients does."""
    gen = np.random.default_rng(seed)
    var = gen.standard_normal(shape).astype(F32)
    spread = state_scale * np.abs(gen.standard_normal(shape))
    mom = 0.1 * gen.standard_normal(shape)
    mg = 0.3 * gen.standard_normal(shape)
    state = {"ms": (spread + mg * mg if consistent else spread).astype(F32), "mom": mom.astype(F32),
             "mg": mg.astype(F32)}
    grads = []
    for t in range(steps):
        if rows is None:
            grads.append({"dense": ((0.3, 2.0, 0.05, 1.0, 0.7)[t] * gen.standard_normal(shape)).astype(F32)})
        else:
            idx = rows[t] if isinstance(rows[0], list) else rows
            grads.append({"indices": list(idx),
                          "values": gen.standard_normal((len(idx),) + shape[1:]).astype(F32)})
    return var, state, grads


def build_ops() -> list[dict]:
    cases = []

    def dense(id, centered, shape, seed, lr, decay, momentum, eps, steps=3, state_scale=1.0, consistent=True,
              note=""):
        var, state, grads = op_problem(seed, shape, steps, state_scale=state_scale, consistent=consistent)
        names = ["ms", "mg", "mom"] if centered else ["ms", "mom"]
        params = {n: Parameter(Tensor(state[n].copy()), name=n) for n in names}
        v = Parameter(Tensor(var.copy()), name="var")
        op = ops.ApplyCenteredRMSProp() if centered else ops.ApplyRMSProp()
        lrs = lr if isinstance(lr, list) else [lr] * steps
        expected, documented, outside = [], [], []
        ref = [var, state["ms"], state["mg"] if centered else None, state["mom"]]
        out = [var, state["ms"], None, state["mom"]]
        for t, g in enumerate(grads):
            if centered:
                op(v, params["mg"], params["ms"], params["mom"], Tensor(g["dense"]), Tensor(F32(lrs[t])),
                   decay, momentum, eps)
            else:
                op(v, params["ms"], params["mom"], Tensor(F32(lrs[t])), Tensor(g["dense"]), decay, momentum, eps)
            expected.append({"var": v.asnumpy().copy(), "state": {n: params[n].asnumpy().copy() for n in names}})
            ref = list(documented_step(*ref, g["dense"], lrs[t], decay, momentum, eps, clamp=True))
            documented.append({"var": ref[0], "state": {"ms": ref[1], "mom": ref[3], **({"mg": ref[2]} if centered
                                                                                          else {})}})
            if not centered:
                out = list(eps_outside_step(*out, g["dense"], lrs[t], decay, momentum, eps))
                outside.append({"var": out[0], "state": {"ms": out[1], "mom": out[3]}})
        deliberate = None
        flat = lambda a: {"var": a["var"], **{f"state.{k}": v for k, v in a["state"].items()}}  # noqa: E731
        if not all(close(flat(e)[k], flat(d)[k]).all() for e, d in zip(expected, documented) for k in flat(e)):
            if centered:
                deliberate = "mindspore-cpu-centered-negative"
                check_centered_negative(var, state, grads[0]["dense"], decay, momentum, lrs[0], eps, expected[0],
                                        documented[0])
            else:
                deliberate = "mindspore-cpu-eps-split" if classify_eps_split(
                    [flat(e) for e in expected], [flat(d) for d in documented], [flat(o) for o in outside]) else None
        call = ("ops.ApplyCenteredRMSProp()(var, mg, ms, mom, grad, lr, decay, momentum, epsilon)" if centered
                else "ops.ApplyRMSProp()(var, ms, mom, lr, grad, decay, momentum, epsilon)")
        c = op_case(id, call, "applyCenteredRMSProp" if centered else "applyRMSProp",
                    {"learningRate": lr, "decay": decay, "momentum": momentum, "epsilon": eps}, {"var": var},
                    {n: state[n] for n in names}, [{"var": g} for g in grads], expected, note=note,
                    deliberate=deliberate)
        if deliberate:
            c["expected_puzzle_rms"] = [{"var": to_json(d["var"]), "state": {k: to_json(x) for k, x in
                                                                             d["state"].items()}} for d in documented]
        cases.append(c)

    dense("apply-rmsprop-small-eps", False, (4, 5), 201, 0.01, 0.9, 0.5, 1e-8)
    dense("apply-rmsprop-large-eps", False, (4, 5), 202, 0.01, 0.9, 0.5, 0.5)
    dense("apply-rmsprop-large-eps-13", False, (13,), 203, 0.05, 0.8, 0.0, 1.0)
    dense("apply-rmsprop-lr-per-step", False, (3, 7), 204, [0.01, 0.05, 0.02], 0.5, 0.9, 1e-6)
    dense("apply-centered-small-eps", True, (4, 5), 205, 0.01, 0.9, 0.5, 1e-8)
    dense("apply-centered-large-eps", True, (4, 5), 206, 0.01, 0.9, 0.5, 0.5)
    dense("apply-centered-lr-per-step", True, (3, 7), 207, [0.01, 0.05, 0.02], 0.5, 0.9, 1e-6)
    dense("apply-centered-negative-variance", True, (4, 5), 208, 0.01, 0.9, 0.5, 1e-6, state_scale=0.01,
          consistent=False, note="initial ms below mg**2 (no history of gradients gives that): the centered "
                                 "variance is negative at some elements, below -eps at most of those")
    dense("apply-centered-negative-variance-large-eps", True, (4, 5), 209, 0.01, 0.9, 0.5, 0.5, state_scale=0.2,
          consistent=False, note="negative centered variance above -eps: MindSpore takes sqrt(v + eps) unclamped")

    def sparse(id, shape, rows, seed, lr, rho, momentum, eps, steps=3, zero_elements=False, note=""):
        var, state, grads = op_problem(seed, shape, steps, rows=rows)
        if zero_elements:  # some gradient elements of listed rows exactly 0
            for g in grads:
                g["values"][:, ::2] = 0
        params = {n: Parameter(Tensor(state[n].copy()), name=n) for n in ("ms", "mom")}
        v = Parameter(Tensor(var.copy()), name="var")
        op = ops.SparseApplyRMSProp(rho, momentum, eps)
        expected = []
        for g in grads:
            op(v, params["ms"], params["mom"], Tensor(F32(lr)), Tensor(g["values"]),
               Tensor(np.array(g["indices"], np.int32)))
            expected.append({"var": v.asnumpy().copy(), "state": {n: params[n].asnumpy().copy() for n in params}})
        cases.append(op_case(id, f"ops.SparseApplyRMSProp(rho={rho}, momentum={momentum}, epsilon={eps})"
                                 f"(var, ms, mom, lr, grad, indices)", "sparseApplyRMSProp",
                             {"learningRate": lr, "decay": rho, "momentum": momentum, "epsilon": eps}, {"var": var},
                             {"ms": state["ms"], "mom": state["mom"]}, [{"var": g} for g in grads], expected,
                             note=note, options={"duplicates": "apply"}))

    # MindSpore wants one index per row of var (grad has var's shape); indices may repeat and skip rows
    sparse("sparse-rmsprop", (4, 3), [[0, 2, 3, 1], [3, 1, 2, 0], [2, 0, 1, 3]], 301, 0.01, 0.9, 0.5, 1e-6)
    sparse("sparse-rmsprop-large-eps", (4, 3), [[0, 2, 3, 1], [1, 0, 2, 3], [3, 2, 1, 0]], 302, 0.05, 0.8, 0.0, 0.5)
    sparse("sparse-rmsprop-zero-elements", (4, 4), [[0, 2, 3, 1], [1, 2, 3, 0], [3, 0, 2, 1]], 303, 0.01, 0.9, 0.5,
           1e-6, zero_elements=True,
           note="gradient elements that are exactly 0 in listed rows: MindSpore leaves ms there undecayed")
    sparse("sparse-rmsprop-repeated", (5, 3), [[0, 2, 0, 4, 4], [3, 3, 1, 3, 0], [2, 2, 2, 2, 2]], 304, 0.01, 0.9,
           0.5, 1e-6, note="repeated indices (MindSpore documents them as undefined); rows not listed keep theirs")
    sparse("sparse-rmsprop-unsorted-1d", (6,), [[5, 1, 4, 0, 2, 3], [2, 5, 3, 5, 1, 0], [4, 0, 0, 1, 5, 3]], 305,
           0.02, 0.5, 0.9, 1e-6)
    return cases


if __name__ == "__main__":
    write("mindspore", "mindspore", ms.__version__, "tools/goldens/gen_mindspore.py", build_nn() + build_ops())
