"""Every RMSProp option against a plain NumPy statement of its documented formula, on each CPU backend.

The statement (``textbook_rmsprop`` in tests/rmsprop_reference.py) is written from RMSProp's docstring,
one option at a time, in float64, without any code from ``backends`` or ``puzzle_rms``. Each case runs
four steps with changing gradients, a large epsilon (so eps placement shows) and, where lr placement
matters, a learning rate that changes between steps; each case also checks that turning its option off
changes the numbers, so the comparison can tell the variants apart.
"""
from __future__ import annotations

import numpy as np
import pytest
from rmsprop_reference import run_named, textbook_rmsprop

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.optimizers import DynamicLossScale, ExponentialDecay, RMSProp
from puzzle_rms.optimizers.schedules import InverseTimeDecay

SHAPES = {"a": (5, 4), "b": (7,)}
STEPS = 4
F64 = dict(rtol=1e-10, atol=1e-12)


def host(x):
    return backends.current().to_host(x)


def changing_lr(step):
    return [0.05, 0.02, 0.08, 0.03][step]


def problem(seed=1, dtype=np.float64):
    gen = np.random.default_rng(seed)
    weights = {name: gen.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
    scales = [0.3, 2.0, 0.05, 1.0]
    grads = [{name: (scale * gen.standard_normal(shape)).astype(dtype) for name, shape in SHAPES.items()}
             for scale in scales[:STEPS]]
    return weights, grads


def run(options, weights, grads, useGlobalState, multipliers=None, lossScale=1.0):
    """RMSProp(**options) over ``grads`` (each multiplied by ``lossScale``, as a scaled loss would give)."""
    optimizer = RMSProp(**options)
    return optimizer, run_named(optimizer, weights, grads, useGlobalState, lossScale, multipliers)


# name -> (RMSProp options, the option that, set to its default, must change the result)
CASES = {
    "plain": (dict(learnRate=0.05, epsilon=0.05), ("epsInSqrt", True)),
    "epsInSqrt": (dict(learnRate=0.05, epsilon=0.05, epsInSqrt=True), ("epsInSqrt", False)),
    "momentum-lr-inside": (dict(learnRate=changing_lr, momentum=0.9, epsInSqrt=True), ("lrInMomentum", False)),
    "momentum-lr-outside": (dict(learnRate=changing_lr, momentum=0.9, lrInMomentum=False), ("lrInMomentum", True)),
    "nesterov": (dict(learnRate=changing_lr, momentum=0.9, nesterov=True), ("nesterov", False)),
    "centered": (dict(learnRate=0.05, centered=True, epsInSqrt=True), ("centered", False)),
    "centered-momentum": (dict(learnRate=changing_lr, centered=True, momentum=0.5), ("centered", False)),
    "initialMeanSquare": (dict(learnRate=0.05, initialMeanSquare=1.0, epsInSqrt=True), ("initialMeanSquare", 0.0)),
    "initialMeanSquare-half": (dict(learnRate=0.05, initialMeanSquare=0.5), ("initialMeanSquare", 0.0)),
    "biasCorrection": (dict(learnRate=0.05, biasCorrection=True, epsInSqrt=True), ("biasCorrection", False)),
    "biasCorrection-centered": (dict(learnRate=0.05, biasCorrection=True, centered=True, epsInSqrt=True),
                                ("biasCorrection", False)),
    "weightDecay": (dict(learnRate=0.05, weightDecay=0.5), ("weightDecay", 0.0)),
    "weightDecay-before-clip": (dict(learnRate=0.05, weightDecay=2.0, clipValue=0.4), ("wdBeforeClip", False)),
    "weightDecay-after-clip": (dict(learnRate=0.05, weightDecay=2.0, clipValue=0.4, wdBeforeClip=False),
                               ("wdBeforeClip", True)),
    "decoupledWeightDecay": (dict(learnRate=changing_lr, decoupledWeightDecay=0.5, epsInSqrt=True),
                             ("decoupledWeightDecay", 0.0)),
    "clipValue": (dict(learnRate=0.05, clipValue=0.2), ("clipValue", None)),
    "clipNorm": (dict(learnRate=0.05, clipNorm=1.0), ("clipNorm", None)),
    "clipWeights": (dict(learnRate=0.3, clipWeights=0.5), ("clipWeights", None)),
    "maximize": (dict(learnRate=0.05, maximize=True, weightDecay=0.3), ("maximize", False)),
    "lossScale": (dict(learnRate=0.05, lossScale=128.0, clipNorm=1.5), ("lossScale", 1.0)),
    "schedule-object": (dict(learnRate=ExponentialDecay(0.1, 0.5, 1), momentum=0.7), ("learnRate", 0.1)),
    "sequence-learnRate": (dict(learnRate=[0.1, 0.01], momentum=0.7), ("learnRate", 0.1)),
}
# the learning rate of each step written out, for the cases whose learnRate is not a float or plain function
REFERENCE_LR = {
    "schedule-object": lambda step: 0.1 * 0.5 ** step,
    "sequence-learnRate": lambda step: [0.1, 0.01][min(step, 1)],
}


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("case", list(CASES))
def test_option_matches_reference(backend_name, case, useGlobalState):
    options, (contrastKey, contrastValue) = CASES[case]
    options = {"epsilon": 0.02, **options}  # a large eps: its placement shows
    weights, grads = problem()
    lossScale = options.get("lossScale", 1.0)
    optimizer, got = run(options, weights, grads, useGlobalState, lossScale=lossScale)
    refOptions = dict(options)
    if case in REFERENCE_LR:
        refOptions["learnRate"] = REFERENCE_LR[case]
    for name in SHAPES:
        refGrads = [g[name] * lossScale for g in grads]
        want, state = textbook_rmsprop(weights[name], refGrads, **refOptions)
        np.testing.assert_allclose(got[name], want, **F64, err_msg=f"{case}: weights of {name}")
        for buffer, value in optimizer.stateOf(name).items():
            np.testing.assert_allclose(host(value), state[buffer], **F64, err_msg=f"{case}: {buffer} of {name}")
        contrast = dict(refOptions, **{contrastKey: contrastValue})
        other, _ = textbook_rmsprop(weights[name], refGrads, **contrast)
        assert np.abs(other - want).max() > 1e-6, f"{case}: {contrastKey}={contrastValue!r} should change the result"


def test_state_buffers_follow_the_options():
    assert RMSProp().stateInit() == {"ms": 0.0}
    assert RMSProp(initialMeanSquare=1.0, momentum=0.5).stateInit() == {"ms": 1.0, "mom": 0.0}
    assert RMSProp(centered=True, momentum=0.5).stateInit() == {"ms": 0.0, "mg": 0.0, "mom": 0.0}
    assert RMSProp(gradientAccumulationSteps=2, emaMomentum=0.9).stateInit() == {"ms": 0.0, "acc": 0.0, "ema": 0.0}


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_centered_variance_is_clamped_at_zero(backend_name, useGlobalState):
    """ms - mg**2 < 0 (as rounding can make it) gives den = sqrt(0 + eps), not NaN."""
    backend = backends.current()
    var = Variable(np.zeros(3), name="w")
    optimizer = RMSProp(learnRate=0.1, factor=0.9, epsilon=1e-4, epsInSqrt=True, centered=True)
    optimizer.setupOn([var], useGlobalState=useGlobalState)
    state = optimizer.stateOf("w")
    state["ms"][...] = 0.0
    state["mg"][...] = 2.0
    var.grad[...] = backend.to_device(np.array([1.0, -1.0, 0.5]))
    optimizer.update()
    # ms = 0.1 g^2, mg = 1.8 + 0.1 g: ms - mg^2 < 0 -> clamped to 0 -> step lr * g / sqrt(eps)
    np.testing.assert_allclose(host(var.data), -0.1 * np.array([1.0, -1.0, 0.5]) / np.sqrt(1e-4), **F64)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_global_clip_norm_scales_all_tensors_together(backend_name, useGlobalState):
    weights, grads = problem()
    clip = 1.0
    optimizer, got = run(dict(learnRate=0.05, globalClipNorm=clip, momentum=0.5), weights, grads, useGlobalState)
    factors = [min(1.0, clip / np.sqrt(sum(np.sum(g[name] ** 2) for name in SHAPES))) for g in grads]
    assert min(factors) < 1.0 and max(factors) == 1.0  # some steps clipped, some not
    for name in SHAPES:
        want, _ = textbook_rmsprop(weights[name], [f * g[name] for f, g in zip(factors, grads)], learnRate=0.05,
                            momentum=0.5)
        np.testing.assert_allclose(got[name], want, **F64)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_learn_rate_reassigned_between_steps(backend_name, useGlobalState):
    backend = backends.current()
    weights, grads = problem()
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    optimizer = RMSProp(learnRate=0.5, momentum=0.9, lrInMomentum=False)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    rates = [0.05, 0.2, 0.01, 0.1]
    for lr, step in zip(rates, grads):
        optimizer.learnRate = lr
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g)
        optimizer.update()
    for name in SHAPES:
        want, _ = textbook_rmsprop(weights[name], [g[name] for g in grads], learnRate=lambda t: rates[t], momentum=0.9,
                            lrInMomentum=False)
        np.testing.assert_allclose(host(variables[name].data), want, **F64)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_parameter_groups_and_multipliers(backend_name, useGlobalState):
    """Per-group learnRate / weightDecay / decoupledWeightDecay / decayFilter and per-Variable multipliers,
    honoured with flat global state too (one bucket, per-segment values)."""
    backend = backends.current()
    gen = np.random.default_rng(3)
    shapes = {"g0.w": (4, 3), "g0.gamma": (3,), "g1.w": (6,), "g1.bias": (2, 2)}
    weights = {name: gen.standard_normal(shape) for name, shape in shapes.items()}
    grads = [{name: gen.standard_normal(shape) * s for name, shape in shapes.items()} for s in (1.0, 0.1, 3.0)]
    multipliers = {"g0.w": 1.0, "g0.gamma": 0.5, "g1.w": 2.0, "g1.bias": 1.0}
    variables = {name: Variable(w.copy(), name=name, learnRate=multipliers[name]) for name, w in weights.items()}
    noGamma = lambda name: "gamma" not in name  # noqa: E731
    groups = [
        {"params": {k: variables[k] for k in ("g0.w", "g0.gamma")}, "weightDecay": 0.3, "decayFilter": noGamma},
        {"params": {k: variables[k] for k in ("g1.w", "g1.bias")}, "learnRate": lambda step: 0.01 * (step + 1),
         "decoupledWeightDecay": 0.2},
    ]
    optimizer = RMSProp(learnRate=0.05, epsilon=0.02, momentum=0.5)
    optimizer.setupOn(groups, useGlobalState=useGlobalState)
    assert len(optimizer.buckets) == (1 if useGlobalState else 4)
    for step in grads:
        optimizer.zeroGradParams()
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g)
        optimizer.update()
    expected = {
        "g0.w": dict(learnRate=0.05, weightDecay=0.3),
        "g0.gamma": dict(learnRate=0.05, multiplier=0.5),
        "g1.w": dict(learnRate=lambda step: 0.01 * (step + 1), decoupledWeightDecay=0.2, multiplier=2.0),
        "g1.bias": dict(learnRate=lambda step: 0.01 * (step + 1), decoupledWeightDecay=0.2),
    }
    for name, options in expected.items():
        want, _ = textbook_rmsprop(weights[name], [g[name] for g in grads], epsilon=0.02, momentum=0.5, **options)
        np.testing.assert_allclose(host(variables[name].data), want, **F64, err_msg=name)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_dynamic_loss_scale_skips_with_state_untouched(backend_name, useGlobalState):
    """Centered + momentum state is not touched by a skipped step; later steps match the reference."""
    backend = backends.current()
    weights, grads = problem()
    scaler = DynamicLossScale(initialScale=64.0, growthInterval=2, backoffFactor=0.5, growthFactor=2.0)
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    optimizer = RMSProp(learnRate=0.05, centered=True, momentum=0.5, lossScale=scaler)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    applied = []
    for i, step in enumerate(grads):
        if i == 1:  # an overflow first: skipped, scale halves, nothing moves
            before = {n: {k: host(v).copy() for k, v in optimizer.stateOf(n).items()} for n in SHAPES}
            data = {n: host(v.data).copy() for n, v in variables.items()}
            variables["a"].grad[...] = backend.to_device(np.full(SHAPES["a"], np.inf))
            assert optimizer.update() is False
            assert scaler.scale == 32.0
            for n in SHAPES:
                np.testing.assert_array_equal(host(variables[n].data), data[n])
                for k, v in optimizer.stateOf(n).items():
                    np.testing.assert_array_equal(host(v), before[n][k])
        scale = scaler.scale
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g * scale)
        assert optimizer.update() is True
        applied.append(step)
    assert scaler.scale == 64.0  # 64 -> (1 good) -> 32 (overflow) -> 64 (2 good) -> (1 good, not yet 2)
    assert optimizer.t == STEPS and optimizer.skippedSteps == 1
    for name in SHAPES:
        want, _ = textbook_rmsprop(weights[name], [g[name] for g in applied], learnRate=0.05, centered=True,
                                   momentum=0.5)
        np.testing.assert_allclose(host(variables[name].data), want, **F64)


@pytest.mark.parametrize("masterWeights", [False, True])
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_float16_parameters_compute_in_float32(backend_name, useGlobalState, masterWeights):
    """float16 weights with float32 state; without master weights each step starts from the rounded
    float16 weights, with master weights the float32 copy follows the float32 trajectory."""
    backend = backends.current()
    weights, grads = problem(seed=5)
    weights = {name: w.astype(np.float16) for name, w in weights.items()}
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    options = dict(learnRate=0.01, epsilon=1e-2, momentum=0.5, centered=True)
    optimizer = RMSProp(masterWeights=masterWeights, **options)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for step in grads:
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g.astype(np.float16))
        optimizer.update()
    for name in SHAPES:
        state = optimizer.stateOf(name)
        assert all(buf.dtype == np.float32 for buf in state.values())
        assert variables[name].dtype == np.float16
        g16 = [g[name].astype(np.float16).astype(np.float64) for g in grads]
        if masterWeights:
            want, _ = textbook_rmsprop(weights[name].astype(np.float64), g16, **options)
            np.testing.assert_allclose(host(state["master"]), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(host(variables[name].data), host(state["master"]).astype(np.float16))
        else:
            w = weights[name]
            ms = mg = mom = np.zeros(w.shape)
            for g in g16:  # the reference, one step at a time, rounding w to float16 after each
                ms = 0.9 * ms + 0.1 * g * g
                mg = 0.9 * mg + 0.1 * g
                mom = 0.5 * mom + 0.01 * g / (np.sqrt(np.maximum(ms - mg * mg, 0)) + 1e-2)
                w = (w.astype(np.float64) - mom).astype(np.float16)
            np.testing.assert_allclose(host(variables[name].data).astype(np.float64), w.astype(np.float64),
                                       rtol=1e-3, atol=1e-3)
            np.testing.assert_allclose(host(state["mom"]), mom, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_gradient_accumulation_updates_every_nth_call_with_the_mean(backend_name, useGlobalState):
    """n = 3: two calls only accumulate (False, nothing moves); the third is one update with the mean gradient."""
    gen = np.random.default_rng(3)
    weights = {name: gen.standard_normal(shape) for name, shape in SHAPES.items()}
    grads = [{name: gen.standard_normal(shape) for name, shape in SHAPES.items()} for _ in range(3)]
    mean = {name: sum(g[name] for g in grads) / 3 for name in SHAPES}
    want = run_named(RMSProp(0.05, epsilon=0.1, momentum=0.5), weights, [mean], useGlobalState)
    backend = backends.current()
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    optimizer = RMSProp(0.05, epsilon=0.1, momentum=0.5, gradientAccumulationSteps=3)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    applied = []
    for step in grads:
        optimizer.zeroGradParams()
        for name, g in step.items():
            variables[name].grad[...] = backend.to_device(g)
        applied.append(optimizer.update())
        if not applied[-1]:
            for name in SHAPES:
                np.testing.assert_array_equal(host(variables[name].data), weights[name])
    assert applied == [False, False, True] and optimizer.t == 1
    for name in SHAPES:
        np.testing.assert_allclose(host(variables[name].data), want[name], **F64)
        np.testing.assert_array_equal(host(optimizer.stateOf(name)["acc"]), 0)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_ema_overwrite_keeps_float16_and_master_weights_in_step(backend_name, useGlobalState):
    """emaMomentum 0.5, overwrite every 2: after update 2 the float32 master and the float16 parameter are the
    average (update 1 starts it, Keras 3 style) of the master weights a twin without EMA reaches."""
    backend = backends.current()
    gen = np.random.default_rng(4)
    w = gen.standard_normal(6).astype(np.float16)
    grads = [gen.standard_normal(6).astype(np.float16) for _ in range(2)]
    runs = {}
    for ema in (None, 0.5):
        var = Variable(w.copy(), name="h")
        optimizer = RMSProp(0.05, epsilon=0.1, masterWeights=True, emaMomentum=ema, emaOverwriteFrequency=2)
        optimizer.setupOn([var], useGlobalState=useGlobalState)
        masters = []
        for g in grads:
            var.grad[...] = backend.to_device(g)
            optimizer.update()
            masters.append(host(optimizer.stateOf("h")["master"]).astype(np.float64))
        runs[ema] = (var, masters)
    plain = runs[None][1]
    average = (0.5 * plain[0] + 0.5 * plain[1]).astype(np.float32)
    var, masters = runs[0.5]
    np.testing.assert_allclose(masters[1], average, rtol=1e-6)
    np.testing.assert_array_equal(host(var.data), average.astype(np.float16))


def test_inverse_time_decay_divides_any_rate():
    assert InverseTimeDecay(0.1, 0.5)(4) == pytest.approx(0.1 / 3)
    assert InverseTimeDecay(ExponentialDecay(0.1, 0.5, 2), 0.25)(2) == pytest.approx(0.05 / 1.5)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_value_clip_before_norms_still_sees_infinite_gradients(backend_name, useGlobalState):
    """clipValueFirst clips the gradients before the norms; an inf must still raise (not become the limit)."""
    from puzzle_rms.optimizers import NonFiniteGradientError

    backend = backends.current()
    variables = {name: Variable(np.ones(shape), name=name) for name, shape in SHAPES.items()}
    optimizer = RMSProp(0.05, clipValue=0.5, clipValueFirst=True, clipNorm=1.0)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    grad = np.full(SHAPES["b"], 2.0)
    grad[3] = np.inf
    variables["b"].grad[...] = backend.to_device(grad)
    with pytest.raises(NonFiniteGradientError, match="'b'"):
        optimizer.update()
    np.testing.assert_array_equal(host(variables["b"].grad), grad)
    for name in SHAPES:
        np.testing.assert_array_equal(host(variables[name].data), 1.0)


def test_gradient_accumulation_skip_drops_the_window(backend_name):
    """An inf accumulated into the window: the n-th call skips, and the next window starts clean."""
    backend = backends.current()
    var = Variable(np.ones(4), name="v")
    optimizer = RMSProp(0.05, epsilon=0.1, gradientAccumulationSteps=2, nonFinite="skip")
    optimizer.setupOn([var])
    results = []
    for g in (np.array([1.0, np.inf, 0.0, 1.0]), np.ones(4), np.ones(4), np.ones(4)):
        optimizer.zeroGradParams()
        var.grad[...] = backend.to_device(g)
        results.append(optimizer.update())
    assert results == [False, False, False, True] and optimizer.skippedSteps == 1 and optimizer.t == 1
    assert np.isfinite(host(var.data)).all() and (host(var.data) < 1).all()
