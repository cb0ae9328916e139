"""Finite-difference gradient checks in float64 with central differences.

``numericGrad(f, x)`` approximates the gradient of a scalar function ``f()``
with respect to an array ``x`` that ``f`` reads, by perturbing ``x`` in place:
``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)`` for every element ``i``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from puzzle_rms import backends


def numericGrad(f: Callable[[], float], x: Any, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of ``f()`` with respect to the (contiguous, float64) array ``x``, as a host array."""
    assert x.dtype == np.float64 and x.flags.c_contiguous, "gradcheck needs a contiguous float64 array"
    flat = x.reshape(-1)
    grad = np.empty(flat.size)
    for i in range(flat.size):
        saved = float(flat[i])
        flat[i] = saved + eps
        up = f()
        flat[i] = saved - eps
        down = f()
        flat[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad.reshape(x.shape)


def _asList(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def checkModule(module: Any, inputs: Any, seed: int = 0, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    r"""Check ``module.backward`` (input grads and every parameter grad) against central differences.

    The scalar is :math:`L = \sum_k \langle y_k, G_k \rangle` for the module's outputs :math:`y_k` and
    fixed random :math:`G_k`, so :math:`\partial L / \partial y_k = G_k`. ``module`` must compute in
    float64 (``calcMode(np.float64)``) and ``inputs`` (an array or a list) must be float64.
    """
    backend = backends.current()
    xs = [backend.to_device(x) for x in _asList(inputs)]
    inputs = xs if isinstance(inputs, (list, tuple)) else xs[0]
    gen = np.random.default_rng(seed)
    outGrads = [backend.to_device(gen.standard_normal(y.shape)) for y in _asList(module(inputs))]

    def loss() -> float:
        return sum(float((y * g).sum()) for y, g in zip(_asList(module(inputs)), outGrads))

    table = module.namedVariables()
    for var in table.values():
        var.grad[...] = 0
    module(inputs)
    inGrads = _asList(module.backward(outGrads if len(outGrads) > 1 else outGrads[0]))
    for i, (x, dx) in enumerate(zip(xs, inGrads)):
        np.testing.assert_allclose(backend.to_host(dx), numericGrad(loss, x), rtol=rtol, atol=atol,
                                   err_msg=f"{module!r}: gradient of input {i}")
    for name, var in table.items():
        np.testing.assert_allclose(backend.to_host(var.grad), numericGrad(loss, var.data), rtol=rtol, atol=atol,
                                   err_msg=f"{module!r}: gradient of variable {name!r}")
