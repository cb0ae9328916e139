"""Module, Linear, Activation, Add and Concat: values, hand-written gradients, parameters and modes."""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import checkModule

from puzzle_rms import backends
from puzzle_rms.modules import Activation, Add, Concat, Linear, clip, elu, leakyRelu, relu, sigmoid, softPlus, tanh
from puzzle_rms.variable import Variable

ACTIVATIONS = [relu, sigmoid, tanh, leakyRelu, elu, softPlus, clip]
ARGS = {leakyRelu: (0.2,), elu: (0.5,), clip: (-1.0, 1.0)}  # non-default parameters


def host(x):
    return backends.current().to_host(x)


def reference(activation: str, x: np.ndarray) -> np.ndarray:
    """f(x) written from the definitions, with the parameters of ARGS."""
    return {relu: lambda: np.maximum(x, 0), leakyRelu: lambda: np.where(x > 0, x, 0.2 * x),
            elu: lambda: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), softPlus: lambda: np.log(1 + np.exp(x)),
            clip: lambda: np.minimum(np.maximum(x, -1.0), 1.0),
            sigmoid: lambda: 1 / (1 + np.exp(-x)), tanh: lambda: np.tanh(x)}[activation]()


# --- gradients against central differences (float64) --------------------------------------------
@pytest.mark.parametrize("useBias", [True, False])
def test_linear_gradients(backend_name, rng, useBias):
    layer = Linear(4, 3, useBias=useBias, rng=rng)
    layer.calcMode(np.float64)
    if useBias:
        layer.vars["b"].data[...] = backends.current().to_device(rng.standard_normal(3))
    checkModule(layer, rng.standard_normal((5, 4)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_gradients(backend_name, rng, activation):
    module = Activation(activation, args=ARGS.get(activation, ()))
    module.calcMode(np.float64)
    checkModule(module, rng.standard_normal((6, 5)))


def test_add_gradients(backend_name, rng):
    module = Add()
    module.calcMode(np.float64)
    checkModule(module, [rng.standard_normal((3, 4)) for _ in range(3)])


def test_concat_gradients(backend_name, rng):
    module = Concat(axis=1)
    module.calcMode(np.float64)
    checkModule(module, [rng.standard_normal((3, 2)), rng.standard_normal((3, 5))])


# --- forward values -----------------------------------------------------------------------------
def test_linear_forward_matches_numpy(backend_name, rng):
    layer = Linear(4, 3, rng=rng)
    layer.vars["b"].data[...] = backends.current().to_device(np.arange(3, dtype=np.float32))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32 and y.shape == (5, 3)
    np.testing.assert_allclose(host(y), x @ host(layer.W) + np.arange(3), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_forward_matches_numpy(backend_name, activation):
    x = np.array([[-3.0, -0.5, 0.25, 2.0]])
    module = Activation(activation, args=ARGS.get(activation, ()))
    module.calcMode(np.float64)
    np.testing.assert_allclose(host(module(x)), reference(activation, x), rtol=1e-12)


def test_sigmoid_saturates_without_overflow(backend_name):
    module = Activation(sigmoid)
    with np.errstate(all="raise"):
        y = host(module(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32)))
    np.testing.assert_array_equal(y, [[0.0, 0.5, 1.0]])


def test_merge_forward_values(backend_name):
    a, b = np.ones((2, 2)), np.full((2, 3), 2.0)
    np.testing.assert_array_equal(host(Add()([a, a])), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(host(Concat()([a, b])), np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(host(Concat(axis=0)([a, a])), np.ones((4, 2)))


# --- parameters ---------------------------------------------------------------------------------
def test_linear_var_table_and_shapes(backend_name):
    layer = Linear(4, 3)
    table = layer.namedVariables()
    assert list(table) == ["W", "b"]
    assert table["W"].shape == (4, 3) and table["b"].shape == (3,)
    assert table["W"].dtype == np.float32 and table["W"].name == "W"
    assert backends.current().owns(table["W"].data)
    np.testing.assert_array_equal(host(table["b"].data), np.zeros(3))
    assert list(Linear(4, 3, useBias=False).namedVariables()) == ["W"]
    assert Linear(4, 3, useBias=False).b is None


def test_linear_default_init_is_deterministic_and_puzzlelib_bounded(backend_name):
    np.random.seed(7)
    first = host(Linear(20, 30).W)
    np.random.seed(7)
    np.testing.assert_array_equal(host(Linear(20, 30).W), first)
    np.testing.assert_array_equal(host(Linear(20, 30, rng=np.random.default_rng(1)).W),
                                  host(Linear(20, 30, rng=np.random.default_rng(1)).W))
    bound = np.sqrt(3 / 20)  # PuzzleLib's default: U(-sqrt(3 / insize), sqrt(3 / insize))
    assert np.abs(first).max() <= bound and np.abs(first).max() > 0.9 * bound
    scaled = host(Linear(20, 30, initscheme="uniform", wscale=0.5, rng=np.random.default_rng(1)).W)
    np.testing.assert_allclose(scaled, 0.5 * host(Linear(20, 30, initscheme="uniform",
                                                         rng=np.random.default_rng(1)).W), rtol=1e-6)


def test_linear_he_init_scale(backend_name):
    W = host(Linear(200, 300, initscheme="he", rng=np.random.default_rng(0)).W)
    assert W.std() == pytest.approx(np.sqrt(2 / 200), rel=0.02)


def test_get_and_set_var(backend_name):
    layer = Linear(2, 2)
    assert layer.getVar("W") is layer.vars["W"]
    new = Variable(np.ones((2, 2), np.float32))
    layer.setVar("W", new)
    assert layer.getVar("W") is new and new.name == "W"
    np.testing.assert_array_equal(host(layer(np.ones((1, 2), np.float32))), [[2.0, 2.0]])
    with pytest.raises(KeyError, match="'V'"):
        layer.getVar("V")
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        layer.setVar("W", Variable(np.ones((3, 2), np.float32)))


def test_bare_module_overwrites_and_momentum_accumulates_in_place(backend_name, rng):
    layer = Linear(3, 2, rng=rng)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = rng.standard_normal((4, 2)).astype(np.float32)
    gradW, gradb = layer.vars["W"].grad, layer.vars["b"].grad
    layer(x)
    layer.backward(g)
    once = host(gradW).copy(), host(gradb).copy()
    np.testing.assert_allclose(once[0], x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(once[1], g.sum(axis=0), rtol=1e-5, atol=1e-6)
    layer.backward(g)  # PuzzleLib: a bare module's backward (momentum=0.0) overwrites
    assert layer.vars["W"].grad is gradW and layer.vars["b"].grad is gradb
    np.testing.assert_allclose(host(gradW), once[0], rtol=1e-6)
    layer.backward(g, momentum=1.0)
    np.testing.assert_allclose(host(gradW), 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(host(gradb), 2 * once[1], rtol=1e-6)
    layer.backward(g, scale=0.5, momentum=0.25)  # 0.25 * (2 g) + 0.5 * g = g
    np.testing.assert_allclose(host(gradW), once[0], rtol=1e-6)


def test_pinned_variables_receive_gradients(backend_name, rng):
    layer = Linear(3, 2, rng=rng)
    W = layer.vars["W"]
    flatData, flatGrad = backends.current().zeros(8), backends.current().zeros(8)
    W.pin(flatData[:6].reshape(3, 2), flatGrad[:6].reshape(3, 2))
    flatData[:6] = 0.5
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = np.ones((4, 2), np.float32)
    np.testing.assert_allclose(host(layer(x)), np.repeat(0.5 * x.sum(axis=1, keepdims=True), 2, axis=1), rtol=1e-5)
    layer.backward(g)
    np.testing.assert_allclose(host(flatGrad[:6]).reshape(3, 2), x.T @ g, rtol=1e-5)


# --- modes --------------------------------------------------------------------------------------
def test_train_and_eval_mode(backend_name):
    layer = Linear(2, 2)
    assert layer.train is True
    layer.evalMode()
    assert layer.train is False
    layer.trainMode()
    assert layer.train is True


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_calc_mode_converts_parameters_and_computation(backend_name, dtype):
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    learnRate, before = layer.vars["W"].learnRate, host(layer.W).astype(np.float64)
    layer.calcMode(dtype)
    assert layer.calctype == dtype
    assert all(var.dtype == dtype and var.grad.dtype == dtype for var in layer.namedVariables().values())
    assert layer.vars["W"].learnRate == learnRate and layer.vars["W"].name == "W"
    np.testing.assert_allclose(host(layer.W), before, rtol=1e-3)
    y = layer(np.ones((2, 3), dtype=np.float32))
    assert y.dtype == dtype
    assert layer.backward(np.ones((2, 2), np.float64)).dtype == dtype
    assert Activation(relu).calctype == np.float32


def test_calc_mode_rejects_non_float(backend_name):
    with pytest.raises(ValueError, match="calcMode dtype must be one of"):
        Linear(2, 2).calcMode(np.int32)


# --- errors -------------------------------------------------------------------------------------
def test_unknown_activation_names_it_and_the_choices():
    with pytest.raises(ValueError) as info:
        Activation("softplus")
    message = str(info.value)
    assert "'softplus'" in message and all(repr(name.value) in message for name in ACTIVATIONS)


def test_linear_argument_and_shape_errors(backend_name):
    with pytest.raises(ValueError, match="insize must be a positive integer, got 0"):
        Linear(0, 3)
    with pytest.raises(ValueError, match="initscheme must be one of None, 'xavier', .* got 'foo'"):
        Linear(2, 3, initscheme="foo")
    layer = Linear(4, 3)
    with pytest.raises(ValueError, match=r"input of shape \(5, 2\), expected \(batch, 4\)"):
        layer(np.zeros((5, 2), np.float32))


def test_backward_errors(backend_name):
    layer = Linear(4, 3)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((5, 3), np.float32))
    layer(np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad of shape \(5, 2\) does not match the output's shape \(5, 3\)"):
        layer.backward(np.zeros((5, 2), np.float32))


def test_merge_needs_a_list(backend_name):
    with pytest.raises(ValueError, match="list of at least two arrays"):
        Add()(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="inputs must have one shape"):
        Add()([np.zeros((2, 2)), np.zeros((2, 3))])


def test_gradcheck_catches_a_wrong_backward(backend_name, rng):
    class Doubled(Activation):
        def updateGrad(self, grad):
            return 2 * super().updateGrad(grad)

    module = Doubled(tanh)
    module.calcMode(np.float64)
    with pytest.raises(AssertionError, match="gradient of input 0"):
        checkModule(module, rng.standard_normal((2, 3)))
