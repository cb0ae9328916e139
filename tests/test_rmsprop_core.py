"""RMSProp and SGD against the library's reference, the published golden values, and setupOn's errors.

Every test runs on each CPU backend (``backend_name``): the NumPy backend and the Numba kernels
must both equal the float64 reference (:mod:`puzzle_rms.backends.reference`, run over the tensors
by tests/rmsprop_reference.py), which tests/test_reference.py checks against the textbook.
"""
from __future__ import annotations

import numpy as np
import pytest
from rmsprop_reference import (SHAPES, make_variables, random_problem, rmsprop_reference, run_optimizer,
                               sgd_reference)

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Activation, Linear, relu
from puzzle_rms.optimizers import SGD, RMSProp

STEPS = 50
# float32 parameters after 50 steps of size ~lr: a few float32 ulps of |w| ~ 1 per step at most.
F32 = dict(rtol=2e-5, atol=2e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


def host(x):
    return backends.current().to_host(x)


# --- many steps against the reference -----------------------------------------------------------
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("epsInSqrt", [False, True], ids=["epsOutside", "epsInside"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_matches_reference_over_many_steps(backend_name, rng, useGlobalState, epsInSqrt, dtype):
    weights, grads = random_problem(rng, SHAPES, STEPS, dtype)
    variables = make_variables(weights)
    optimizer = RMSProp(learnRate=0.01, factor=0.9, epsilon=1e-3, epsInSqrt=epsInSqrt)
    got = run_optimizer(optimizer, variables, grads, [0.01] * STEPS, useGlobalState)
    expectW, expectMs = rmsprop_reference(weights, grads, [0.01] * STEPS, 0.9, 1e-3, epsInSqrt)
    tol = F32 if dtype == np.float32 else F64
    for i, (var, w, want, ms) in enumerate(zip(variables, got, expectW, expectMs)):
        assert var.dtype == dtype
        np.testing.assert_allclose(w, want, **tol, err_msg=f"weights of tensor {i} {SHAPES[i]}")
        np.testing.assert_allclose(host(optimizer.stateOf(var.name)["ms"]), ms, **tol, err_msg=f"ms of tensor {i}")
    assert optimizer.t == STEPS


def test_eps_placement_changes_the_result(backend_name, rng):
    """With a large eps the two placements differ, so the test above tells them apart."""
    weights, grads = random_problem(rng, [(4, 4)], 3)
    results = []
    for epsInSqrt in (False, True):
        results.append(run_optimizer(RMSProp(learnRate=0.1, epsilon=0.5, epsInSqrt=epsInSqrt),
                                     make_variables(weights), grads, [0.1] * 3, False)[0])
    assert np.abs(results[0] - results[1]).max() > 1e-3


def test_rmsprop_defaults_are_puzzlelibs():
    optimizer = RMSProp()
    assert (optimizer.learnRate, optimizer.factor, optimizer.epsilon, optimizer.epsInSqrt) == (1e-3, 0.9, 1e-5, False)


# --- golden values from the frameworks' own documentation ---------------------------------------
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_mindspore_apply_rmsprop_golden_value(backend_name, useGlobalState):
    """MindSpore ApplyRMSProp: var, mean_square, moment, grad all ones; lr=0.01, decay=0, momentum=1e-10,
    epsilon=0.001 -> var = 0.990005 (= 1 - 1e-10 - 0.01 / sqrt(1.001))."""
    var = Variable(np.ones((2, 2), np.float32), name="var")
    optimizer = RMSProp(learnRate=0.01, factor=0.0, epsilon=0.001, epsInSqrt=True, momentum=1e-10,
                        lrInMomentum=True, initialMeanSquare=1.0)
    optimizer.setupOn({"var": var}, useGlobalState=useGlobalState)
    optimizer.stateOf("var")["mom"][...] = 1
    var.grad[...] = 1
    optimizer.update()
    np.testing.assert_allclose(host(var.data), np.full((2, 2), 0.990005), rtol=0, atol=1e-6)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_keras_rmsprop_golden_value(backend_name, useGlobalState):
    """Keras RMSprop(learning_rate=0.1), var=10, loss=var**2/2 so grad=var, one step -> 9.683772."""
    var = Variable(np.array([10.0], np.float32), name="var")
    optimizer = RMSProp(learnRate=0.1, factor=0.9, epsilon=1e-7, epsInSqrt=True)
    optimizer.setupOn([var], useGlobalState=useGlobalState)
    var.grad[...] = var.data  # d(var**2 / 2) / dvar
    optimizer.update()
    np.testing.assert_allclose(host(var.data), [9.683772], rtol=0, atol=1e-5)


# --- learning rates -----------------------------------------------------------------------------
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_learn_rate_changed_between_steps(backend_name, rng, useGlobalState):
    weights, grads = random_problem(rng, SHAPES[:3], 6)
    learnRates = [0.1, 0.05, 0.0, 0.02, 0.3, 0.001]
    variables = make_variables(weights)
    got = run_optimizer(RMSProp(epsilon=1e-2), variables, grads, learnRates, useGlobalState)
    want, _ = rmsprop_reference(weights, grads, learnRates, 0.9, 1e-2, False)
    for w, expected in zip(got, want):
        np.testing.assert_allclose(w, expected, **F32)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_per_variable_learn_rate_multiplier(backend_name, rng, useGlobalState):
    weights, grads = random_problem(rng, SHAPES[:4], 5)
    multipliers = [0.5, 2.0, 0.0, 1.0]
    variables = make_variables(weights, multipliers)
    optimizer = RMSProp(learnRate=0.05, epsilon=1e-2)
    got = run_optimizer(optimizer, variables, grads, [0.05] * 5, useGlobalState)
    want, ms = rmsprop_reference(weights, grads, [0.05] * 5, 0.9, 1e-2, False, multipliers)
    for w, expected in zip(got, want):
        np.testing.assert_allclose(w, expected, **F32)
    np.testing.assert_array_equal(got[2], weights[2])  # multiplier 0 freezes the weights ...
    np.testing.assert_allclose(host(optimizer.stateOf("v2")["ms"]), ms[2], **F32)  # ... not the statistics


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_learn_rate_multiplier_changed_after_setup(backend_name, rng, useGlobalState):
    """Assigning Variable.learnRate between updates takes effect at the next update, in both state modes."""
    weights, grads = random_problem(rng, SHAPES[:3], 6)
    variables = make_variables(weights)
    optimizer = RMSProp(learnRate=0.05, epsilon=1e-2)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    schedule = [[1.0, 1.0, 1.0]] * 2 + [[0.0, 2.0, 1.0]] * 2 + [[0.5, 0.5, 0.5]] * 2
    w = [x.astype(np.float64) for x in weights]
    ms = [np.zeros_like(x) for x in w]
    for stepGrads, multipliers in zip(grads, schedule):
        for var, m in zip(variables, multipliers):
            var.learnRate = m
        optimizer.zeroGradParams()
        for i, (var, g) in enumerate(zip(variables, stepGrads)):
            var.grad[...] = backends.current().to_device(g)
            ms[i] = 0.9 * ms[i] + 0.1 * g.astype(np.float64) ** 2
            w[i] = w[i] - 0.05 * multipliers[i] * g / (np.sqrt(ms[i]) + 1e-2)
        optimizer.update()
    for var, expected in zip(variables, w):
        np.testing.assert_allclose(host(var.data), expected, **F32)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_sgd_matches_reference(backend_name, rng, useGlobalState):
    weights, grads = random_problem(rng, SHAPES, 8)
    learnRates = [0.1, 0.01, 0.2, 0.0, 0.05, 0.05, 0.3, 0.01]
    multipliers = [1.0, 0.5, 3.0, 1.0, 0.1]
    got = run_optimizer(SGD(learnRate=0.1), make_variables(weights, multipliers), grads, learnRates, useGlobalState)
    for w, expected in zip(got, sgd_reference(weights, grads, learnRates, multipliers)):
        np.testing.assert_allclose(w, expected, **F32)


# --- the training loop of the quick start -------------------------------------------------------
def test_training_loop_reduces_the_loss(backend_name):
    """The README's loop on a fixed regression problem: 100 steps of RMSProp cut the MSE by more than 90%."""
    gen = np.random.default_rng(3)
    x = gen.standard_normal((64, 8)).astype(np.float32)
    y = (x @ gen.standard_normal((8, 1)) + 0.5).astype(np.float32)
    net = Sequential()
    net.extend([Linear(8, 16, rng=gen), Activation(relu), Linear(16, 1, rng=gen)])
    optimizer = RMSProp(learnRate=0.01)
    optimizer.setupOn(net, useGlobalState=True)

    def mse() -> float:
        return float(np.mean((host(net(x)) - y) ** 2))

    start = mse()
    for _ in range(100):
        pred = net(x)
        grad = (pred - backends.current().to_device(y)) * (2 / y.size)  # d mean((pred - y)^2) / d pred
        optimizer.zeroGradParams()
        net.backward(grad)
        optimizer.update()
    assert mse() < 0.1 * start


def test_zero_grad_params_zeroes_every_gradient(backend_name, rng):
    variables = make_variables([rng.standard_normal(s).astype(np.float32) for s in SHAPES[:3]])
    for useGlobalState in (False, True):
        optimizer = RMSProp()
        optimizer.setupOn(variables, useGlobalState=useGlobalState)
        for var in variables:
            var.grad[...] = 1
        optimizer.zeroGradParams()
        assert all(not host(var.grad).any() for var in variables)


# --- errors ---------------------------------------------------------------------------------------
def test_setup_on_rejects_bad_targets(backend_name):
    a = Variable(np.ones(3, np.float32), name="a")
    with pytest.raises(TypeError, match="target must be a Module, a dict or list of Variables.*got int"):
        RMSProp().setupOn(42)
    with pytest.raises(TypeError, match=r"'1' is a ndarray, expected a Variable"):
        RMSProp().setupOn([a, np.zeros(3)])
    with pytest.raises(ValueError, match="variable 'a' appears twice"):
        RMSProp().setupOn([a, a])
    with pytest.raises(ValueError, match="two variables are named '0'; expected unique names"):
        RMSProp().setupOn([{"params": [Variable(np.ones(2, np.float32))]}, {"params": [Variable(np.ones(2, np.float32))]}])
    with pytest.raises(ValueError, match="no variables to optimize"):
        RMSProp().setupOn([])
    with pytest.raises(TypeError, match="useGlobalState must be True or False, got 'yes'"):
        RMSProp().setupOn([a], useGlobalState="yes")


def test_step_before_setup_is_an_error():
    for call in ("update", "zeroGradParams"):
        with pytest.raises(RuntimeError, match=r"call setupOn\(module\) before"):
            getattr(RMSProp(), call)()


def test_failed_setup_keeps_the_previous_one(backend_name):
    a = Variable(np.ones(3, np.float32), name="a")
    optimizer = RMSProp(learnRate=0.1)
    optimizer.setupOn([a], useGlobalState=True)
    flat = optimizer.buckets[0].w
    with pytest.raises(TypeError):
        optimizer.setupOn(42, useGlobalState=True)
    assert np.shares_memory(a.data, flat)
    a.grad[...] = 1
    optimizer.update()
    # first step from zero state: ms = 0.1, w = 1 - 0.1 / (sqrt(0.1) + 1e-5)
    np.testing.assert_allclose(host(a.data), np.full(3, 1 - 0.1 / (np.sqrt(0.1) + 1e-5)), rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"factor": -0.5}, ValueError, r"RMSProp: factor must be in \[0, inf\), got -0.5"),
    ({"epsilon": -1e-8}, ValueError, r"RMSProp: epsilon must be in \[0, inf\), got -1e-08"),
    ({"learnRate": -1.0}, ValueError, r"RMSProp: learnRate must be in \[0, inf\), got -1.0"),
    ({"learnRate": "fast"}, TypeError, r"RMSProp: learnRate must be a real number, got 'fast'"),
    ({"epsInSqrt": "no"}, TypeError, r"RMSProp: epsInSqrt must be True or False, got 'no'"),
])
def test_constructor_errors_name_argument_and_value(kwargs, error, message):
    with pytest.raises(error, match=message):
        RMSProp(**kwargs)
