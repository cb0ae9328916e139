"""MSE and CrossEntropy: values against NumPy references, gradients against central differences, errors."""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import numericGrad

from puzzle_rms import backends
from puzzle_rms.cost import BCE, MSE, Abs, CostError, CrossEntropy, SmoothL1


def host(x):
    return backends.current().to_host(x)


def referenceCrossEntropy(pred: np.ndarray, target: np.ndarray) -> float:
    logSumExp = np.log(np.exp(pred).sum(axis=1))
    return float(np.mean(logSumExp - pred[np.arange(len(target)), target]))


# --- MSE ----------------------------------------------------------------------------------------
def test_mse_value_and_grad(backend_name, rng):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    error, grad = MSE()(pred, target)
    assert isinstance(error, float)
    assert error == pytest.approx(np.sum((pred - target) ** 2) / (2 * pred.size), rel=1e-12)
    np.testing.assert_allclose(host(grad), (pred - target) / pred.size, rtol=1e-12)


def test_mse_grad_is_derivative_of_error(backend_name, rng):
    pred = backends.current().to_device(rng.standard_normal((3, 5)))
    target = rng.standard_normal((3, 5))
    _, grad = MSE()(pred, target)
    numeric = numericGrad(lambda: MSE()(pred, target)[0], pred)
    np.testing.assert_allclose(host(grad), numeric, rtol=1e-6, atol=1e-10)


def test_mse_hand_example(backend_name):
    error, grad = MSE()(np.array([[1.0, 2.0]], np.float32), np.array([[0.0, 0.0]], np.float32))
    assert error == pytest.approx(1.25)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(host(grad), [[0.5, 1.0]])


def test_mse_shape_mismatch(backend_name):
    with pytest.raises(ValueError, match=r"MSE: target of shape \(4, 2\) does not match pred of shape \(4, 3\)"):
        MSE()(np.zeros((4, 3)), np.zeros((4, 2)))


# --- CrossEntropy -------------------------------------------------------------------------------
def test_cross_entropy_value_and_grad(backend_name, rng):
    pred, target = rng.standard_normal((5, 4)), np.array([0, 3, 1, 1, 2])
    error, grad = CrossEntropy()(pred, target)
    assert isinstance(error, float)
    assert error == pytest.approx(referenceCrossEntropy(pred, target), rel=1e-12)
    softmax = np.exp(pred) / np.exp(pred).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(host(grad), (softmax - np.eye(4)[target]) / 5, rtol=1e-10, atol=1e-14)


def test_cross_entropy_grad_is_derivative_of_error(backend_name, rng):
    pred = backends.current().to_device(rng.standard_normal((4, 6)))
    target = np.array([5, 0, 2, 2])
    _, grad = CrossEntropy()(pred, target)
    numeric = numericGrad(lambda: CrossEntropy()(pred, target)[0], pred)
    np.testing.assert_allclose(host(grad), numeric, rtol=1e-6, atol=1e-10)


def test_cross_entropy_is_stable_for_large_scores(backend_name):
    pred = np.array([[1000.0, 0.0], [0.0, 1000.0], [-1000.0, -1000.0]], np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # exp underflowing to 0 is expected
        error, grad = CrossEntropy()(pred, np.array([0, 0, 1]))
    assert error == pytest.approx((1000.0 + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(host(grad), [[0, 0], [-1 / 3, 1 / 3], [1 / 6, -1 / 6]], atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_cross_entropy_keeps_pred_dtype(backend_name, rng, dtype):
    pred = rng.standard_normal((3, 4)).astype(dtype)
    error, grad = CrossEntropy()(pred, np.array([0, 1, 2]))
    assert grad.dtype == dtype
    assert error == pytest.approx(referenceCrossEntropy(pred.astype(np.float64), np.array([0, 1, 2])), rel=1e-3)


def test_cross_entropy_accuracy(backend_name):
    pred = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    assert CrossEntropy().getAccuracy(pred, np.array([1, 0, 0, 0])) == pytest.approx(0.75)


def test_cross_entropy_argument_errors(backend_name):
    ce = CrossEntropy()
    with pytest.raises(ValueError, match=r"shape \(3,\) and dtype int64; expected integer labels of shape \(4,\)"):
        ce(np.zeros((4, 2)), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="dtype float64; expected integer labels"):
        ce(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"labels span \[0, 2\]; expected labels in \[0, 1\]"):
        ce(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"pred of shape \(4,\) and dtype float64; expected float scores"):
        ce(np.zeros(4), np.zeros(4, np.int64))


# --- Abs, SmoothL1, BCE: gradients against central differences -------------------------------
@pytest.mark.parametrize("make", [Abs, SmoothL1, BCE])
def test_cost_grad_is_derivative_of_error(backend_name, rng, make):
    pred = backends.current().to_device(2 * rng.standard_normal((4, 3)))
    target = rng.integers(0, 2, (4, 3)).astype(np.int32) if make is BCE else 2 * rng.standard_normal((4, 3))
    _, grad = make()(pred, target)
    numeric = numericGrad(lambda: make()(pred, target)[0], pred)
    np.testing.assert_allclose(host(grad), numeric, rtol=1e-6, atol=1e-10)


def test_bce_refuses_labels_other_than_zero_and_one(backend_name):
    with pytest.raises(CostError, match=r"labels span \[0, 2\]; expected labels 0 or 1"):
        BCE()(np.zeros((2, 2), np.float32), np.array([[0, 1], [2, 0]], np.int32))


def test_cost_error_is_a_value_error_and_nothing_is_accumulated(backend_name):
    mse = MSE()
    with pytest.raises(CostError):
        mse(np.zeros((4, 3)), np.zeros((4, 2)))
    assert issubclass(CostError, ValueError) and mse.numOfSamples == 0
