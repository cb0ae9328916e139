"""Numerical edge cases: finite float64 gradients too large to square are neither mistaken for non-finite ones
nor dropped by norm clipping; numba gives NumPy's numbers where a fused multiply-add or a reassociated product
would change them (centered variance of a constant gradient, float32 gradients near 2e19)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from backend_switch import using

from puzzle_rms.optimizers import NonFiniteGradientError, RMSProp
from puzzle_rms.variable import Variable

LR, RHO, EPS = 0.01, 0.9, 1e-5


def _first_step(gClipped: float) -> float:
    """The first RMSProp step (ms = 0, eps outside the root) for a clipped gradient element ``gClipped``."""
    return LR * gClipped / (math.sqrt((1 - RHO) * gClipped * gClipped) + EPS)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the sums of squares overflow
@pytest.mark.parametrize("useGlobalState", [False, True])
@pytest.mark.parametrize("policy", ["raise", "skip", "ignore"])
def test_huge_finite_float64_gradients_are_finite_and_clipped_by_their_true_norm(backend_name, useGlobalState,
                                                                                     policy):
    sizes = {"a": 100, "b": 21}
    signs = {name: np.where(np.arange(n) % 3 == 0, -1.0, 1.0) for name, n in sizes.items()}
    for option in ("clipNorm", "globalClipNorm"):
        variables = {name: Variable(np.zeros(n), name=name) for name, n in sizes.items()}
        optimizer = RMSProp(LR, factor=RHO, epsilon=EPS, nonFinite=policy, **{option: 1.0})
        optimizer.setupOn(variables, useGlobalState=useGlobalState)
        for name, var in variables.items():
            var.grad[...] = 1e200 * signs[name]  # squares overflow float64; the norms do not
        assert optimizer.update() and optimizer.skippedSteps == 0
        for name, var in variables.items():
            n = sizes[name] if option == "clipNorm" else sum(sizes.values())
            expected = -_first_step(1 / math.sqrt(n)) * signs[name]
            np.testing.assert_allclose(var.data, expected, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_a_truly_non_finite_element_among_huge_ones_is_still_caught(backend_name):
    variables = {"a": Variable(np.zeros(50), name="a"), "b": Variable(np.zeros(7), name="b")}
    optimizer = RMSProp(LR, clipNorm=1.0)
    optimizer.setupOn(variables, useGlobalState=True)
    variables["a"].grad[...] = 1e200
    variables["b"].grad[...] = 1e200
    variables["b"].grad[3] = np.inf
    with pytest.raises(NonFiniteGradientError, match="variable 'b'"):
        optimizer.update()
    assert not variables["a"].data.any() and not variables["b"].data.any()


def _run(backend: str, dtype: type, grads: list, **options: object) -> tuple[np.ndarray, dict]:
    with using(backend):
        var = Variable(np.ones(16, dtype), name="w")
        optimizer = RMSProp(LR, **options)
        optimizer.setupOn([var])
        path = []
        for g in grads:
            var.grad[...] = g
            optimizer.update()
            path.append(np.array(var.data))
        return np.array(path), {k: np.array(v) for k, v in optimizer.stateOf("w").items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("g,eps,epsInSqrt", [(1.0, 1e-5, False), (0.3, 1e-8, False), (7.0, 1e-10, True),
                                             (3e-3, 1e-8, True)])
def test_centered_constant_gradient_numba_matches_numpy(dtype, g, eps, epsInSqrt):
    """ms - mg**2 cancels to a rounding residual under a constant gradient; numba must round as NumPy does
    (with 'contract' the FMA rounded differently: steps up to 1.7x NumPy's)."""
    options = dict(centered=True, factor=RHO, epsilon=eps, epsInSqrt=epsInSqrt)
    expected, expectedState = _run("numpy", dtype, [g] * 300, **options)
    actual, actualState = _run("numba", dtype, [g] * 300, **options)
    tolerance = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=0)
    for name in expectedState:
        np.testing.assert_allclose(actualState[name], expectedState[name], rtol=tolerance, atol=0)


@pytest.mark.parametrize("centered", [False, True])
def test_float32_gradient_near_2e19_does_not_freeze_a_weight_on_numba(centered):
    """(1 - rho) * g * g overflows float32 when g * g is formed first; NumPy's order keeps ms finite, and so
    must numba's (with 'reassoc' ms became inf, and the weight could never move again)."""
    grads = [np.float32(2e19)] + [np.float32(1.0)] * 5
    expected, expectedState = _run("numpy", np.float32, grads, centered=centered)
    actual, actualState = _run("numba", np.float32, grads, centered=centered)
    assert np.isfinite(actualState["ms"]).all() and (actualState["ms"] < np.float32(4e37)).all()  # decaying
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    np.testing.assert_allclose(actualState["ms"], expectedState["ms"], rtol=1e-6)
