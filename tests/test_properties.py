"""Property-based tests (hypothesis): both CPU backends' kernels agree with the library's reference, the Numba
and NumPy backends agree through the whole optimizer, and invariants hold.

Kernels: for random layouts (dense segments or lazy rows, empty to larger than a block), dtypes, per-segment
tables, options and step numbers, one step of each CPU backend equals one step of
:mod:`puzzle_rms.backends.reference` on the same inputs, within the tolerance of tests/kernel_check.py. The
state is drawn well conditioned: ``ms >= 0.01``, ``factor >= 0.1`` and, when centered, ``mg**2 <= ms / 2``
without bias correction (with it, the centered variance of a real history is a cancellation whose rounding
noise a float32 kernel cannot share with a float64 reference; tests/test_kernels.py covers that combination
from a conditioned state).

Optimizer: random variable shapes (empty, 0-d, one element, small matrices), dtypes (float16, float32, float64, mixed
in one optimizer), hyperparameters, every RMSProp option and every ``RMSProp.like`` preset; a few steps with
fresh random gradients each; local and global state. Runs are deterministic (``derandomize=True``).

Tolerance of the optimizer runs, per array, against the NumPy backend's values ``ref``::

    |numba - ref| <= RTOL * |ref| + RTOL * (1 + max|ref|)       (plus one float16 ulp for float16 parameters)

with RTOL = 5e-5 for float32 arithmetic and 1e-10 for float64. The Numba kernels compile with fast-math
(contraction into FMAs, reciprocal division, reassociation), which moves each operation by an ulp or two;
over a few steps that stays far inside these bounds, while a wrong formula moves results by O(1) relatively.
float16 parameters are computed in float32 and rounded, so one ulp of float32 difference can round to
neighbouring float16 values: hence the extra float16 ulp.

Conditioning of the optimizer runs: the centered variance ``ms - mg**2`` is at least ``factor**t * ms``
(Cauchy-Schwarz), so centered draws use ``factor >= 0.1``. With bias correction it is exactly 0 at the
first step, so any two implementations return rounding noise there: that combination draws eps inside
the root, >= 1e-3.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backend_switch import using
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_check import DTYPES as KERNEL_DTYPES
from kernel_check import assert_step_close, backend_step, reference_step

from puzzle_rms import backends
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.optimizers.presets import PRESETS
from puzzle_rms.variable import Variable

STEPS = 4
RTOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-10}
DTYPES = [np.float16, np.float32, np.float64]
SHAPES = [(0,), (), (1,), (3,), (2, 3), (0, 4), (5, 1), (17,)]
PROPERTY_SETTINGS = settings(max_examples=500, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])

pytestmark = pytest.mark.skipif(backends.unavailable_reason("numba") is not None,
                                reason=f"needs numba: {backends.unavailable_reason('numba')}")


# --- strategies ---------------------------------------------------------------------------------
def maybe(strategy: st.SearchStrategy, none: Any = None) -> st.SearchStrategy:
    return st.one_of(st.just(none), strategy)


def log_uniform(low: float, high: float) -> st.SearchStrategy:
    return st.floats(np.log10(low), np.log10(high)).map(lambda e: float(10.0 ** e))


@st.composite
def rmsprop_options(draw: Any) -> dict[str, Any]:
    """Keyword arguments covering every RMSProp option."""
    centered = draw(st.booleans())
    biasCorrection = draw(st.booleans())
    momentum = draw(st.one_of(st.just(0.0), st.floats(0.05, 0.95)))
    options = dict(
        learnRate=draw(log_uniform(1e-4, 0.1)),
        factor=draw(st.floats(0.1 if centered else 0.0, 0.999 if biasCorrection else 1.0)),
        momentum=momentum,
        lrInMomentum=draw(st.booleans()),
        nesterov=momentum > 0 and draw(st.booleans()),
        centered=centered,
        biasCorrection=biasCorrection,
        epsInSqrt=True if centered and biasCorrection else draw(st.booleans()),
        epsilon=draw(log_uniform(1e-3 if centered and biasCorrection else 1e-7, 1.0)),
        initialMeanSquare=draw(st.sampled_from([0.0, 1.0, 0.25])),
        weightDecay=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.1))),
        decoupledWeightDecay=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5))),
        wdBeforeClip=draw(st.booleans()),
        clipValue=draw(maybe(st.floats(0.05, 2.0))),
        clipNorm=draw(maybe(st.floats(0.1, 5.0))),
        globalClipNorm=draw(maybe(st.floats(0.1, 5.0))),
        clipWeights=draw(maybe(st.floats(0.5, 3.0))),
        maximize=draw(st.booleans()),
        masterWeights=draw(st.booleans()),
        lossScale=draw(st.sampled_from([1.0, 8.0, 1024.0])),
    )
    return options


@st.composite
def preset_options(draw: Any) -> tuple[str, dict[str, Any]]:
    """A preset with a random learning rate, eps and (where it has them) momentum and centered."""
    name = draw(st.sampled_from(sorted(PRESETS)))
    arguments = PRESETS[name].arguments
    kwargs: dict[str, Any] = {}
    for argument, spec in arguments.items():
        kind = spec.kind.replace("optional-", "")
        if kind == "lr":
            kwargs[argument] = draw(log_uniform(1e-4, 0.1))
        elif kind == "eps" or argument in ("eps", "epsilon"):  # also where eps=0 is allowed (kind nonneg)
            kwargs[argument] = draw(log_uniform(1e-4, 0.5))
        elif argument in ("centered", "momentum", "momRate", "weight_decay", "wd", "nesterov"):
            if kind == "bool":
                kwargs[argument] = draw(st.booleans())
            elif kind == "momentum":
                kwargs[argument] = draw(st.floats(0.0, 0.9))
            else:
                kwargs[argument] = draw(st.floats(0.0, 0.05))
    return name, kwargs


@st.composite
def problems(draw: Any) -> dict[str, Any]:
    """Variables (shapes, dtypes), gradients for every step, the state mode and a step to poison."""
    count = draw(st.integers(1, 3))
    specs = [(draw(st.sampled_from(SHAPES)), draw(st.sampled_from(DTYPES))) for _ in range(count)]
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    weights = [rng.uniform(-2, 2, shape).astype(dtype) for shape, dtype in specs]
    grads = [[(rng.standard_normal(shape) * rng.uniform(0.1, 3)).astype(np.float64) for shape, _ in specs]
             for _ in range(STEPS)]
    return dict(weights=weights, grads=grads, useGlobalState=draw(st.booleans()),
                poisonStep=draw(st.integers(0, STEPS - 1)))


@st.composite
def kernel_cases(draw: Any) -> dict[str, Any]:
    """Options (see the module docstring for the conditioning), a step number, segment sizes, lazy rows or
    not, a dtype combination and a seed for the arrays."""
    options = draw(rmsprop_options())
    options["factor"] = max(options["factor"], 0.1)
    if options["centered"]:
        options["biasCorrection"] = False
    return dict(options=options, t=draw(st.integers(1, 6)), lazy=draw(st.booleans()),
                sizes=draw(st.lists(st.sampled_from([0, 1, 5, 17, 1500, 40000]), min_size=1, max_size=4)),
                dtype=draw(st.sampled_from(sorted(KERNEL_DTYPES))), seed=draw(st.integers(0, 2 ** 32 - 1)))


def kernel_inputs(case: dict[str, Any], backend: Any) -> tuple:
    """The layout on ``backend``, the weight buffer size, the per-segment table, the arrays and the gradient."""
    gen = np.random.default_rng(case["seed"])
    options, sizes = case["options"], np.array(case["sizes"])
    wDtype, gDtype, sDtype = KERNEL_DTYPES[case["dtype"]]
    if case["lazy"]:  # the rows in a random order, with gaps, in the weights; back to back in the gradient
        order = gen.permutation(sizes.size)
        slots = sizes[order] + gen.integers(0, 4, sizes.size)
        wOffsets = np.empty(sizes.size, np.int64)
        wOffsets[order] = np.cumsum(slots) - slots
        size = int(slots.sum())
        layout = backend.make_layout(sizes, wOffsets, np.cumsum(sizes) - sizes)
    else:
        size = int(sizes.sum())
        layout = backend.make_layout(sizes)
    n = sizes.size
    lr = 10.0 ** gen.uniform(-4, -1, n)
    table = np.stack([lr, options["weightDecay"] * gen.integers(0, 2, n),
                      1.0 - lr * options["decoupledWeightDecay"], gen.choice([1.0, 0.3, 0.9], n)], axis=1)
    ms = gen.uniform(0.01, 2.0, size)
    arrays = {"w": gen.uniform(-2, 2, size).astype(wDtype), "ms": ms.astype(sDtype)}
    if options["centered"]:
        arrays["mg"] = (gen.uniform(-1, 1, size) * np.sqrt(ms / 2)).astype(sDtype)
    if options["momentum"]:
        arrays["mom"] = (0.1 * gen.standard_normal(size)).astype(sDtype)
    g = (gen.standard_normal(layout.size) * gen.uniform(0.1, 3) * options["lossScale"]).astype(gDtype)
    return layout, table, arrays, g


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(case=kernel_cases())
def test_kernels_match_the_reference_for_every_option(case):
    options = case["options"]
    hyper = RMSProp(**options).hyper(1.0 / options["lossScale"], case["t"])
    for name in ("numpy", "numba"):
        with using(name):
            backend = backends.current()
            layout, table, arrays, g = kernel_inputs(case, backend)
            want = reference_step(arrays, g, layout, table, hyper)
            got = backend_step(backend, arrays, g, layout, table, hyper)
            assert_step_close(got, want, f"{name}, {case}")


# --- running both backends ----------------------------------------------------------------------
def make_pair(weights: list[np.ndarray], build: Any, useGlobalState: bool) -> dict[str, tuple]:
    """The same variables and optimizer on each backend."""
    pair = {}
    for name in ("numpy", "numba"):
        with using(name):
            variables = [Variable(w.copy(), name=f"v{i}") for i, w in enumerate(weights)]
            optimizer = build()
            optimizer.setupOn(variables, useGlobalState=useGlobalState)
        pair[name] = (variables, optimizer)
    return pair


def set_grads(variables: list[Variable], grads: list[np.ndarray], scale: float) -> None:
    for var, g in zip(variables, grads):
        var.grad[...] = (g * scale).astype(var.dtype)


def arrays(variables: list[Variable], optimizer: Any) -> dict[str, np.ndarray]:
    out = {}
    for var in variables:
        out[f"{var.name}.data"] = np.array(var.data)
        out.update({f"{var.name}.{buf}": np.array(view) for buf, view in optimizer.stateOf(var.name).items()})
    return out


def assert_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], context: str) -> None:
    assert sorted(actual) == sorted(expected)
    for key, ref in expected.items():
        got = actual[key]
        assert got.dtype == ref.dtype and got.shape == ref.shape, key
        compute = np.dtype(np.float32) if ref.dtype == np.float16 else ref.dtype
        rtol = RTOL[compute]
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        bound = rtol * np.abs(ref64) + rtol * (1.0 + (np.abs(ref64).max() if ref64.size else 0.0))
        if ref.dtype == np.float16:
            bound = bound + np.spacing(np.abs(ref)).astype(np.float64)
        excess = np.abs(got64 - ref64) - bound
        assert not np.any(excess > 0), (f"{context}: {key} differs beyond tolerance at "
                                        f"{np.argwhere(excess > 0)[:3].tolist()}: numba {got64[excess > 0][:3]}, "
                                        f"numpy {ref64[excess > 0][:3]}")


def check_invariants(values: dict[str, np.ndarray], context: str) -> None:
    for key, value in values.items():
        assert np.isfinite(value).all(), f"{context}: {key} is not finite"
        if key.endswith(".ms"):
            assert (value >= 0).all(), f"{context}: mean square {key} went negative"


def run_and_compare(problem: dict[str, Any], build: Any, context: str) -> None:
    pair = make_pair(problem["weights"], build, problem["useGlobalState"])
    for step, grads in enumerate(problem["grads"]):
        results = {}
        for name, (variables, optimizer) in pair.items():
            set_grads(variables, grads, optimizer.lossScaleValue)
            assert optimizer.update() is True
            results[name] = arrays(variables, optimizer)
            check_invariants(results[name], f"{context}, {name}, step {step}")
        assert_close(results["numba"], results["numpy"], f"{context}, step {step}")


# --- the optimizer on both backends --------------------------------------------------------------
@PROPERTY_SETTINGS
@given(problem=problems(), options=rmsprop_options())
def test_numba_matches_numpy_for_every_option(problem, options):
    run_and_compare(problem, lambda: RMSProp(**options), f"RMSProp({options})")


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(problem=problems(), preset=preset_options())
def test_numba_matches_numpy_for_every_preset(problem, preset):
    name, kwargs = preset
    run_and_compare(problem, lambda: RMSProp.like(name, **kwargs), f"RMSProp.like({name!r}, {kwargs})")


def test_every_preset_is_drawn():
    """The preset strategy can reach every preset (sampled_from over the registry)."""
    assert sorted(PRESETS) == sorted({"puzzlelib", "puzzlelib-graves", "torch", "keras3", "keras2", "keras2-legacy",
                                      "tf1", "mindspore", "mxnet", "mxnet2", "paddle", "optax"})


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(problem=problems(), options=rmsprop_options(), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_skipped_step_leaves_everything_untouched(problem, options, bad):
    pair = make_pair(problem["weights"], lambda: RMSProp(nonFinite="skip", **options), problem["useGlobalState"])
    poisonable = [i for i, w in enumerate(problem["weights"]) if w.size]
    for name, (variables, optimizer) in pair.items():
        for step, grads in enumerate(problem["grads"]):
            set_grads(variables, grads, optimizer.lossScaleValue)
            if step == problem["poisonStep"] and poisonable:
                target = variables[poisonable[step % len(poisonable)]]
                target.grad.reshape(-1)[step % target.size] = bad
                before = {k: v.tobytes() for k, v in arrays(variables, optimizer).items()}
                assert optimizer.update() is False
                assert {k: v.tobytes() for k, v in arrays(variables, optimizer).items()} == before, name
                assert optimizer.skippedSteps == 1
            else:
                assert optimizer.update() is True
        assert optimizer.t == STEPS - (1 if poisonable else 0)
        check_invariants(arrays(variables, optimizer), f"{name} after a skipped step")


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(shape=st.sampled_from([(0,), (0, 3), (4, 0, 2)]), dtype=st.sampled_from(DTYPES),
       options=rmsprop_options(), useGlobalState=st.booleans())
def test_zero_size_variables_set_up_and_update(shape, dtype, options, useGlobalState):
    for name in ("numpy", "numba"):
        with using(name):
            empty = Variable(np.zeros(shape, dtype), name="empty")
            other = Variable(np.ones(2, np.float32), name="other")
            optimizer = RMSProp(**options)
            optimizer.setupOn([empty, other], useGlobalState=useGlobalState)
            other.grad[...] = 1.0
            assert optimizer.update() is True
            assert empty.shape == shape and all(v.shape == shape for v in optimizer.stateOf("empty").values())
            assert np.isfinite(other.data).all()
