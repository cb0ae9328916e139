"""Non-finite gradients: raise (default), skip or ignore; nothing changes on raise or skip; dynamic loss scaling.

Every test warms the optimizer up with finite steps first, so that its state buffers (ms, mg, mom, float32
master weights) hold non-trivial values that an accidental write would change.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms.optimizers import SGD, DynamicLossScale, NonFiniteGradientError, RMSProp
from puzzle_rms.variable import Variable

# Mixed dtypes give three buckets in global state (float32: a, c; float64: b; float16: d), whose order
# differs from the order the variables were given in.
SPECS = {"a": ((3, 4), np.float32), "b": ((5,), np.float64), "c": ((2, 2, 2), np.float32), "d": ((6,), np.float16)}
BAD_VALUES = [np.nan, np.inf, -np.inf]


def make_variables(seed: int = 0) -> dict[str, Variable]:
    rng = np.random.default_rng(seed)
    return {name: Variable(rng.standard_normal(shape).astype(dtype), name=name)
            for name, (shape, dtype) in SPECS.items()}


def set_grads(variables: dict[str, Variable], seed: int, scale: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    for var in variables.values():
        var.grad[...] = (scale * rng.standard_normal(var.shape)).astype(var.dtype)


def build(useGlobalState: bool, **options: Any) -> tuple[dict[str, Variable], RMSProp]:
    """Variables and an RMSProp with every state buffer, after two finite updates."""
    variables = make_variables()
    optimizer = RMSProp(0.01, centered=True, momentum=0.9, masterWeights=True, **options)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for seed in (1, 2):
        set_grads(variables, seed, optimizer.lossScaleValue)
        assert optimizer.update()
    return variables, optimizer


def snapshot(variables: dict[str, Variable], optimizer: Any) -> dict[str, bytes]:
    """The bytes of every parameter and state buffer, and the optimizer's counters."""
    out = {f"{name}.data": np.asarray(var.data).tobytes() for name, var in variables.items()}
    for name in variables:
        out.update({f"{name}.{buf}": np.asarray(view).tobytes() for buf, view in optimizer.stateOf(name).items()})
    scale = optimizer.lossScale
    out["counters"] = repr((optimizer.t, optimizer.skippedSteps,
                            (scale.scale, scale.goodSteps) if isinstance(scale, DynamicLossScale) else scale)).encode()
    return out


def poison(variables: dict[str, Variable], name: str, value: float, index: int = -1) -> None:
    variables[name].grad.reshape(-1)[index] = value


@pytest.fixture(params=[False, True], ids=["local", "global"])
def useGlobalState(request: pytest.FixtureRequest) -> bool:
    return request.param


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_raise_names_the_first_offending_variable_and_changes_nothing(backend_name, useGlobalState, bad):
    variables, optimizer = build(useGlobalState)
    set_grads(variables, 3)
    poison(variables, "c", bad)
    poison(variables, "b", bad, index=0)
    before = snapshot(variables, optimizer)
    with pytest.raises(NonFiniteGradientError) as info:
        optimizer.update()
    # 'b' comes before 'c' in the order the variables were given, whatever the buckets' order
    assert "variable 'b'" in str(info.value) and "'c'" not in str(info.value)
    assert "nothing was updated" in str(info.value) and "nonFinite='skip'" in str(info.value)
    assert snapshot(variables, optimizer) == before
    assert optimizer.t == 2 and optimizer.skippedSteps == 0


@pytest.mark.parametrize("name", list(SPECS))
def test_each_variable_and_dtype_is_checked(backend_name, useGlobalState, name):
    variables, optimizer = build(useGlobalState)
    set_grads(variables, 3)
    poison(variables, name, np.inf)
    with pytest.raises(NonFiniteGradientError, match=f"variable '{name}'"):
        optimizer.update()


def test_float16_overflow_is_caught(backend_name, useGlobalState):
    variables, optimizer = build(useGlobalState)
    set_grads(variables, 3)
    half = variables["d"].grad
    half[0] = np.float16(60000)
    with np.errstate(over="ignore"):
        half[0] = half[0] * np.float16(2)  # overflows float16 to inf
    assert np.isinf(half[0])
    with pytest.raises(NonFiniteGradientError, match="variable 'd'"):
        optimizer.update()


def test_skip_counts_changes_nothing_and_is_as_if_the_step_never_happened(backend_name, useGlobalState):
    variables, optimizer = build(useGlobalState, nonFinite="skip")
    set_grads(variables, 3)
    poison(variables, "a", np.nan)
    before = snapshot(variables, optimizer)
    assert optimizer.update() is False
    after = snapshot(variables, optimizer)
    assert after.pop("counters") != before.pop("counters") and after == before
    assert optimizer.skippedSteps == 1 and optimizer.t == 2
    set_grads(variables, 4)
    assert optimizer.update() is True

    referenceVars, reference = build(useGlobalState, nonFinite="skip")
    set_grads(referenceVars, 4)
    reference.update()
    expected, actual = snapshot(referenceVars, reference), snapshot(variables, optimizer)
    assert actual.pop("counters") != expected.pop("counters")  # only skippedSteps differs
    assert actual == expected


def test_ignore_runs_no_check_and_lets_the_value_through(backend_name, useGlobalState, monkeypatch):
    variables, optimizer = build(useGlobalState, nonFinite="ignore")
    calls = []
    backend = backends.current()
    monkeypatch.setattr(backend, "segment_sumsq", lambda g, layout: calls.append(g.size))
    monkeypatch.setattr(backend, "segment_nonfinite", lambda g, layout: calls.append(g.size))
    set_grads(variables, 3)
    poison(variables, "b", np.nan, index=2)
    assert optimizer.update() is True and optimizer.t == 3
    assert calls == []
    data = np.asarray(variables["b"].data)
    assert np.isnan(data[2]) and np.isfinite(np.delete(data, 2)).all()
    assert all(np.isfinite(np.asarray(var.data, dtype=np.float64)).all() for n, var in variables.items() if n != "b")


def test_the_check_is_one_reduction_per_bucket_and_no_host_copy(backend_name, useGlobalState, monkeypatch):
    variables, optimizer = build(useGlobalState)
    backend = backends.current()
    calls, copies = [], []
    real = type(backend).segment_nonfinite
    monkeypatch.setattr(backend, "segment_nonfinite",
                        lambda g, layout: calls.append(g.size) or real(backend, g, layout))
    monkeypatch.setattr(backend, "segment_sumsq", lambda g, layout: pytest.fail("no clipping: no norms needed"))
    monkeypatch.setattr(backend, "to_host", lambda array: copies.append(array) or np.asarray(array))
    set_grads(variables, 3)
    optimizer.update()
    assert len(calls) == (3 if useGlobalState else 4)  # one per dtype, or one per variable
    assert sum(calls) == sum(var.size for var in variables.values()) and copies == []


@pytest.mark.parametrize("clipping", [{"clipNorm": 1.0}, {"globalClipNorm": 1.0}])
def test_clipping_does_not_hide_a_nan(backend_name, useGlobalState, clipping):
    variables, optimizer = build(useGlobalState, nonFinite="skip", **clipping)
    set_grads(variables, 3)
    poison(variables, "c", np.nan)
    before = snapshot(variables, optimizer)
    assert optimizer.update() is False
    after = snapshot(variables, optimizer)
    assert after.pop("counters") != before.pop("counters") and after == before


def test_sgd_follows_the_same_policy(backend_name, useGlobalState):
    variables = make_variables()
    optimizer = SGD(0.1)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    set_grads(variables, 3)
    poison(variables, "a", np.nan)
    before = snapshot(variables, optimizer)
    with pytest.raises(NonFiniteGradientError, match="variable 'a'"):
        optimizer.update()
    assert snapshot(variables, optimizer) == before


# --- dynamic loss scaling -----------------------------------------------------------------------
def test_dynamic_loss_scale_backs_off_grows_and_never_goes_below_its_floor(backend_name, useGlobalState):
    lossScale = DynamicLossScale(initialScale=8.0, growthFactor=4.0, backoffFactor=0.25, growthInterval=3,
                                 minScale=1.0)
    variables, optimizer = build(useGlobalState, lossScale=lossScale)  # two good steps: goodSteps == 2
    assert (lossScale.scale, lossScale.goodSteps) == (8.0, 2)
    expected = [(2.0, 0), (1.0, 0), (1.0, 0), (1.0, 1), (1.0, 2), (4.0, 0), (4.0, 1), (1.0, 0)]
    bad = [True, True, True, False, False, False, False, True]
    for step, (isBad, (scale, good)) in enumerate(zip(bad, expected)):
        set_grads(variables, 10 + step, optimizer.lossScaleValue)
        if isBad:
            poison(variables, "d", np.inf)
            before = snapshot(variables, optimizer)
        applied = optimizer.update()  # a dynamic scale skips even with the default nonFinite="raise"
        assert applied is (not isBad)
        if isBad:
            after = snapshot(variables, optimizer)
            assert after.pop("counters") != before.pop("counters") and after == before
        assert (lossScale.scale, lossScale.goodSteps) == (scale, good), step
    assert optimizer.skippedSteps == 4 and optimizer.t == 2 + 4


def test_loss_scale_is_divided_out_exactly(backend_name, useGlobalState):
    """With a power-of-two scale, (g * S) / S == g exactly, so the updates equal the unscaled ones bit for bit."""
    scaled = DynamicLossScale(initialScale=2.0 ** 10, growthInterval=2)
    variables, optimizer = build(useGlobalState, lossScale=scaled)
    referenceVars, reference = build(useGlobalState)
    for seed in (5, 6, 7):
        set_grads(variables, seed, optimizer.lossScaleValue)
        set_grads(referenceVars, seed)
        optimizer.update()
        reference.update()
    assert scaled.scale == 2.0 ** 12  # grew twice: after the warm-up and after two more steps
    actual, expected = snapshot(variables, optimizer), snapshot(referenceVars, reference)
    actual.pop("counters"), expected.pop("counters")
    assert actual == expected


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the NumPy kernel's g * g, as in the reference
@pytest.mark.parametrize("nonFinite", ["raise", "skip"])
def test_huge_finite_float64_gradients_are_not_a_false_alarm(backend_name, useGlobalState, nonFinite):
    """|g| = 1e200 is finite in float64 although its square overflows: the default check lets the step through
    (a float64 sum of squares called it non-finite) and the step is RMSProp's: w -= lr * g / (sqrt(ms) + eps)."""
    w = np.array([1.0, -2.0, 3.0])
    g = np.array([1e200, -1e160, 1.0])
    var = Variable(w.copy(), name="w")
    optimizer = RMSProp(learnRate=0.01, factor=0.9, epsilon=1e-8, nonFinite=nonFinite)
    optimizer.setupOn([var], useGlobalState=useGlobalState)
    optimizer.zeroGradParams()
    var.grad[...] = backends.current().to_device(g)
    assert optimizer.update() is True and optimizer.skippedSteps == 0
    with np.errstate(over="ignore"):
        ms = 0.1 * g * g  # overflows to inf for the two large elements: their step is lr * g / inf = 0
    want = w - 0.01 * g / (np.sqrt(ms) + 1e-8)
    assert want[:2].tolist() == [1.0, -2.0]
    np.testing.assert_allclose(np.asarray(var.data), want, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_segment_nonfinite_matches_isfinite_per_segment(backend_name, dtype):
    """Per segment of a layout with empty segments and a gap, NaN/inf anywhere and the largest finite values."""
    backend = backends.current()
    rng = np.random.default_rng(7)
    sizes = [5, 0, 70_000, 1, 300_000, 64]
    offsets = np.cumsum(sizes) - np.asarray(sizes)
    offsets[4:] += 11  # a gap of 11 elements that belongs to no segment
    g = rng.standard_normal(int(offsets[-1] + sizes[-1])).astype(dtype)
    g[offsets[2] + 69_999] = np.finfo(dtype).max
    g[offsets[4] + 5] = -np.finfo(dtype).max
    g[offsets[3] + 0] = np.inf
    g[offsets[4] + 299_000] = np.nan
    g[offsets[4] - 3] = np.nan  # in the gap: not counted
    g[offsets[5] + 63] = -np.inf
    layout = backend.make_layout(sizes, offsets)
    want = np.array([not np.isfinite(g[o:o + n]).all() for o, n in zip(offsets, sizes)])
    assert want.tolist() == [False, False, False, True, True, True]
    np.testing.assert_array_equal(backend.segment_nonfinite(backend.to_device(g), layout), want)
    g[~np.isfinite(g)] = 0
    assert not backend.segment_nonfinite(backend.to_device(g), layout).any()
