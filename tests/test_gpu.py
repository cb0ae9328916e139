"""The CuPy backend against the same float64 NumPy reference as the CPU backends (skipped without a usable GPU)."""
from __future__ import annotations

import numpy as np
import pytest
from rmsprop_reference import (SHAPES, make_variables, random_problem, rmsprop_reference, run_optimizer,
                               sgd_reference)

from puzzle_rms import backends
from puzzle_rms.backends import gpuarray
from puzzle_rms import Variable
from puzzle_rms.optimizers import SGD, RMSProp

pytestmark = pytest.mark.gpu

STEPS = 50
F32 = dict(rtol=2e-5, atol=2e-5)
F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def cupy_backend():
    """Make the CuPy backend current for one test, then restore the previous backend."""
    previous = backends.current().name
    yield backends.use("cupy")
    backends.use(previous)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("epsInSqrt", [False, True], ids=["epsOutside", "epsInside"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_rmsprop_matches_reference(cupy_backend, useGlobalState, epsInSqrt, dtype):
    weights, grads = random_problem(np.random.default_rng(0), SHAPES, STEPS, dtype)
    variables = make_variables(weights)
    assert all(isinstance(var.data, cupy_backend.xp.ndarray) for var in variables)
    optimizer = RMSProp(learnRate=0.01, factor=0.9, epsilon=1e-3, epsInSqrt=epsInSqrt)
    got = run_optimizer(optimizer, variables, grads, [0.01] * STEPS, useGlobalState)
    expectW, expectMs = rmsprop_reference(weights, grads, [0.01] * STEPS, 0.9, 1e-3, epsInSqrt)
    tol = F32 if dtype == np.float32 else F64
    for i, (var, w, want, ms) in enumerate(zip(variables, got, expectW, expectMs)):
        np.testing.assert_allclose(w, want, **tol, err_msg=f"weights of tensor {i} {SHAPES[i]}")
        np.testing.assert_allclose(cupy_backend.to_host(optimizer.stateOf(var.name)["ms"]), ms, **tol)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_cupy_equals_numpy_backend_step_for_step(useGlobalState):
    """The same float32 problem on the NumPy backend and on CuPy, with changing learning rates and multipliers."""
    weights, grads = random_problem(np.random.default_rng(1), SHAPES, 20)
    learnRates = list(np.linspace(0.05, 0.001, 20))
    multipliers = [1.0, 0.5, 2.0, 0.0, 1.0]
    previous = backends.current().name
    results = {}
    try:
        for name in ("numpy", "cupy"):
            backends.use(name)
            optimizer = RMSProp(learnRate=0.05, epsilon=1e-2)
            results[name] = run_optimizer(optimizer, make_variables(weights, multipliers), grads, learnRates,
                                          useGlobalState)
    finally:
        backends.use(previous)
    for numpyW, cupyW in zip(results["numpy"], results["cupy"]):
        np.testing.assert_allclose(cupyW, numpyW, **F32)
    want, _ = rmsprop_reference(weights, grads, learnRates, 0.9, 1e-2, False, multipliers)
    for cupyW, expected in zip(results["cupy"], want):
        np.testing.assert_allclose(cupyW, expected, **F32)


def test_cupy_golden_values(cupy_backend):
    mindspore = Variable(np.ones((2, 2), np.float32), name="var")
    optimizer = RMSProp(learnRate=0.01, factor=0.0, epsilon=0.001, epsInSqrt=True, momentum=1e-10,
                        initialMeanSquare=1.0)
    optimizer.setupOn({"var": mindspore}, useGlobalState=True)
    optimizer.stateOf("var")["mom"][...] = 1
    mindspore.grad[...] = 1
    optimizer.update()
    np.testing.assert_allclose(mindspore.data.get(), np.full((2, 2), 0.990005), rtol=0, atol=1e-6)

    keras = Variable(np.array([10.0], np.float32), name="var")
    optimizer = RMSProp(learnRate=0.1, factor=0.9, epsilon=1e-7, epsInSqrt=True)
    optimizer.setupOn([keras])
    keras.grad[...] = keras.data
    optimizer.update()
    np.testing.assert_allclose(keras.data.get(), [9.683772], rtol=0, atol=1e-5)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_cupy_sgd_matches_reference(cupy_backend, useGlobalState):
    weights, grads = random_problem(np.random.default_rng(2), SHAPES, 8)
    learnRates = [0.1, 0.01, 0.2, 0.0, 0.05, 0.05, 0.3, 0.01]
    got = run_optimizer(SGD(learnRate=0.1), make_variables(weights), grads, learnRates, useGlobalState)
    for w, expected in zip(got, sgd_reference(weights, grads, learnRates)):
        np.testing.assert_allclose(w, expected, **F32)


def test_cupy_global_state_views_and_gpuarray(cupy_backend):
    xp = cupy_backend.xp
    ary = gpuarray.to_gpu(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(ary, xp.ndarray) and type(ary.get()) is np.ndarray
    np.testing.assert_array_equal(gpuarray.get(ary), np.arange(6).reshape(2, 3))
    assert isinstance(gpuarray.zeros((2, 2)), xp.ndarray)
    variables = [Variable(np.ones(3, np.float32), name="a"), Variable(np.ones((2, 2), np.float32), name="b")]
    optimizer = RMSProp()
    optimizer.setupOn(variables, useGlobalState=True)
    flat = optimizer.buckets[0].w
    flat[...] = 5
    assert all(bool((var.data == 5).all()) for var in variables)
