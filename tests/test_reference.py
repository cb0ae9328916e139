"""The library's reference (puzzle_rms.backends.reference) against the textbook, closed forms and hand values.

Every backend is tested against the reference (tests/test_kernels.py); these tests check the reference
itself, so that it is not only compared with itself: each kernel-level RMSProp option, driven by the
``hyper`` vector that ``RMSProp.hyper`` builds, against ``textbook_rmsprop`` (written from RMSProp's
docstring, no library code), and a few cases against closed forms and values computed by hand.
"""
from __future__ import annotations

import numpy as np
import pytest
from rmsprop_reference import textbook_rmsprop

from puzzle_rms.backends import reference
from puzzle_rms.backends.backend import HYPER_FIELDS, Backend, hyper_vector
from puzzle_rms.optimizers import RMSProp

F64 = dict(rtol=1e-12, atol=1e-14)
LEARN_RATES = [0.05, 0.02, 0.08, 0.03]


def changing_lr(step: int) -> float:
    return LEARN_RATES[step]


# every option the kernels see; a large eps, so that its placement shows; lr changes where its place matters
OPTIONS = {
    "plain": dict(epsilon=0.05),
    "epsInSqrt": dict(epsilon=0.05, epsInSqrt=True),
    "momentum-lrInMomentum": dict(epsilon=0.05, momentum=0.9),
    "momentum-lrOutside": dict(epsilon=0.05, momentum=0.9, lrInMomentum=False),
    "nesterov": dict(epsilon=0.05, momentum=0.9, nesterov=True),
    "centered": dict(epsilon=0.05, centered=True, epsInSqrt=True),
    "centered-momentum": dict(epsilon=0.05, centered=True, momentum=0.5),
    "initialMeanSquare": dict(epsilon=0.05, initialMeanSquare=1.0),
    "biasCorrection": dict(epsilon=0.05, biasCorrection=True),
    "biasCorrection-centered": dict(epsilon=0.05, biasCorrection=True, centered=True, epsInSqrt=True),
    "weightDecay-before-clip": dict(epsilon=0.05, weightDecay=2.0, clipValue=0.4),
    "weightDecay-after-clip": dict(epsilon=0.05, weightDecay=2.0, clipValue=0.4, wdBeforeClip=False),
    "decoupledWeightDecay": dict(epsilon=0.05, decoupledWeightDecay=0.5),
    "clipValue": dict(epsilon=0.05, clipValue=0.2),
    "clipWeights": dict(epsilon=0.05, clipWeights=0.5),
    "maximize": dict(epsilon=0.05, maximize=True, weightDecay=0.3),
}


def reference_run(w0: np.ndarray, grads: list, options: dict, learnRate=changing_lr) -> tuple[np.ndarray, dict]:
    """One tensor as one segment through the reference, with the table and hyper vector of ``RMSProp(**options)``."""
    layout = Backend().make_layout([w0.size])
    optimizer = RMSProp(**options)
    w = w0.astype(np.float64).ravel()
    state = {"ms": np.full(w.size, options.get("initialMeanSquare", 0.0))}
    if options.get("centered"):
        state["mg"] = np.zeros(w.size)
    if options.get("momentum"):
        state["mom"] = np.zeros(w.size)
    for t, g in enumerate(grads, start=1):
        lr = learnRate(t - 1)
        table = np.array([[lr, options.get("weightDecay", 0.0), 1.0 - lr * options.get("decoupledWeightDecay", 0.0),
                           1.0]])
        reference.rmsprop_update(w, np.ravel(g), state["ms"], state.get("mg"), state.get("mom"), layout, table,
                                 optimizer.hyper(1.0, t))
    return w.reshape(w0.shape), {name: s.reshape(w0.shape) for name, s in state.items()}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_reference_matches_textbook(case):
    gen = np.random.default_rng(11)
    w0 = gen.standard_normal((6, 5))
    grads = [scale * gen.standard_normal((6, 5)) for scale in (0.3, 2.0, 0.05, 1.0)]
    w, state = reference_run(w0, grads, OPTIONS[case])
    want, wantState = textbook_rmsprop(w0, grads, learnRate=changing_lr, **OPTIONS[case])
    np.testing.assert_allclose(w, want, **F64)
    for name, value in state.items():
        np.testing.assert_allclose(value, wantState[name], **F64, err_msg=name)


def test_first_step_from_zero_state():
    """ms = (1 - rho) g**2, so w1 = w0 - lr g / (sqrt(1 - rho) |g| + eps), or / sqrt((1 - rho) g**2 + eps)."""
    w0, g, lr, rho, eps = np.array([1.0, -0.5]), np.array([2.0, -0.1]), 0.1, 0.9, 0.01
    outside, _ = reference_run(w0, [g], dict(factor=rho, epsilon=eps), lambda t: lr)
    inside, _ = reference_run(w0, [g], dict(factor=rho, epsilon=eps, epsInSqrt=True), lambda t: lr)
    np.testing.assert_allclose(outside, w0 - lr * g / (np.sqrt(1 - rho) * np.abs(g) + eps), **F64)
    np.testing.assert_allclose(inside, w0 - lr * g / np.sqrt((1 - rho) * g * g + eps), **F64)
    # by hand: 1 - 0.1 * 2 / (sqrt(0.4) + 0.01) = 1 - 0.2 / 0.6424555 = 0.6886944
    np.testing.assert_allclose(outside[0], 0.6886944, rtol=0, atol=1e-7)


@pytest.mark.parametrize("momentum, nesterov, lrInMomentum", [(0.0, False, True), (0.8, False, True),
                                                              (0.8, True, True), (0.8, False, False)])
def test_bias_corrected_constant_gradient_closed_form(momentum, nesterov, lrInMomentum):
    """With bias correction and a constant gradient, ms / (1 - rho**t) = g**2 at every step, so the step
    direction is c = g / (|g| + eps) throughout and the momentum buffer is a geometric sum:
    lr inside:  mom_t = lr c (1 - mu**t) / (1 - mu), w -= mom_t  (nesterov: w -= mu mom_t + lr c);
    lr outside: mom_t = c (1 - mu**t) / (1 - mu),    w -= lr_t mom_t."""
    g, eps, mu = np.array([0.7, -3.0, 0.01]), 0.02, momentum
    w0 = np.array([0.5, 0.2, -1.0])
    options = dict(factor=0.8, epsilon=eps, biasCorrection=True, momentum=momentum, nesterov=nesterov,
                   lrInMomentum=lrInMomentum)
    w, _ = reference_run(w0, [g] * 4, options)
    c = g / (np.abs(g) + eps)
    want = w0.copy()
    for t, lr in enumerate(LEARN_RATES, start=1):
        if momentum == 0:
            want = want - lr * c
        elif not lrInMomentum:
            want = want - lr * c * (1 - mu ** t) / (1 - mu)
        else:
            # with a changing lr the buffer holds sum_k mu**(t-k) lr_k c
            mom = sum(mu ** (t - k) * LEARN_RATES[k - 1] for k in range(1, t + 1)) * c
            want = want - (mu * mom + lr * c if nesterov else mom)
    np.testing.assert_allclose(w, want, **F64)


def test_centered_constant_gradient_closed_form():
    """Constant g from zero state: ms_t = (1 - rho**t) g**2, mg_t = (1 - rho**t) g, so the centered variance is
    (1 - rho**t) rho**t g**2."""
    g, rho, eps = np.array([1.5, -0.2]), 0.7, 1e-3
    w, state = reference_run(np.zeros(2), [g] * 4, dict(factor=rho, epsilon=eps, epsInSqrt=True, centered=True))
    want = -sum(lr * g / np.sqrt((1 - rho ** t) * rho ** t * g * g + eps) for t, lr in enumerate(LEARN_RATES, 1))
    np.testing.assert_allclose(w, want, **F64)
    np.testing.assert_allclose(state["mg"], (1 - rho ** 4) * g, **F64)


def test_mindspore_golden_value():
    """MindSpore ApplyRMSProp: var, mean_square, moment, grad all ones; lr=0.01, decay=0, momentum=1e-10,
    epsilon=0.001 -> var = 0.990005 (= 1 - 1e-10 - 0.01 / sqrt(1.001))."""
    layout = Backend().make_layout([4])
    w, ms, mom = np.ones(4), np.ones(4), np.ones(4)
    hyper = hyper_vector(rho=0.0, oneMinusRho=1.0, epsIn=0.001, epsOut=0.0, mu=1e-10, lrInMomentum=1.0)
    reference.rmsprop_update(w, np.ones(4), ms, None, mom, layout, np.array([[0.01, 0.0, 1.0, 1.0]]), hyper)
    np.testing.assert_allclose(w, 0.990005, rtol=0, atol=1e-6)


def test_weight_decay_and_clip_order_by_hand():
    """w = 1, g = 0, lr = 0.1, wd = 0.5, clip 0.1, ms0 = 1, rho = 0.5, eps = 0, clipWeights 0.96. Before the clip
    g = clip(0.5) = 0.1, ms = 0.505, w = 1 - 0.01 / sqrt(0.505) = 0.98593, clipped to 0.96; after it
    g = clip(0) + 0.5 = 0.5, ms = 0.625, w = 1 - 0.05 / sqrt(0.625) = 0.93675."""
    layout = Backend().make_layout([1])
    table = np.array([[0.1, 0.5, 1.0, 1.0]])
    results = []
    for wdPre in (1.0, 0.0):
        w, ms = np.ones(1), np.ones(1)
        hyper = hyper_vector(rho=0.5, oneMinusRho=0.5, epsOut=0.0, clipValue=0.1, wdPre=wdPre, wdPost=1 - wdPre,
                             clipWeights=0.96)
        reference.rmsprop_update(w, np.zeros(1), ms, None, None, layout, table, hyper)
        results.append((w[0], ms[0]))
    assert results[0] == pytest.approx((0.96, 0.505), rel=1e-14)
    assert results[1] == pytest.approx((0.9367544467966324, 0.625), rel=1e-14)


def test_lazy_rows_touch_only_the_listed_rows():
    """Rows 2 and 0 of a (4, 3) parameter, their gradients compact and in that order: those rows take the dense
    step with their own gradient rows, rows 1 and 3 (weights and state) are not touched."""
    gen = np.random.default_rng(12)
    w0, rowGrads = gen.standard_normal((4, 3)), gen.standard_normal((2, 3))
    hyper = RMSProp(momentum=0.5, centered=True, epsilon=0.05).hyper(1.0, 1)
    table = np.array([[0.1, 0.0, 1.0, 1.0]] * 2)
    w, ms, mg, mom = w0.ravel().copy(), np.ones(12), np.zeros(12), np.zeros(12)
    lazy = Backend().make_layout([3, 3], [6, 0], [0, 3])
    reference.rmsprop_update(w, rowGrads.ravel(), ms, mg, mom, lazy, table, hyper)
    dense = np.zeros((4, 3))
    dense[[2, 0]] = rowGrads
    wd, msd, mgd, momd = w0.ravel().copy(), np.ones(12), np.zeros(12), np.zeros(12)
    reference.rmsprop_update(wd, dense.ravel(), msd, mgd, momd, Backend().make_layout([12]), table[:1], hyper)
    rows = np.zeros((4, 3), bool)
    rows[[2, 0]] = True
    rows = rows.ravel()
    for got, full, before in ((w, wd, w0.ravel()), (ms, msd, np.ones(12)), (mg, mgd, np.zeros(12)),
                              (mom, momd, np.zeros(12))):
        np.testing.assert_array_equal(got[rows], full[rows])
        np.testing.assert_array_equal(got[~rows], before[~rows])
    np.testing.assert_allclose(msd[~rows], 0.9, **F64)  # the dense step decays the other rows' mean squares


def test_sgd_and_segment_sumsq_by_hand():
    """SGD: w = wScale w - lr gradScale segGradScale g = 0.9 * 2 - 0.1 * 0.5 * 2 * 3 = 1.5 in segment 0, and
    0.5 * 1 - 0.2 * 0.5 * 1 * (-1) = 0.6 in segment 1. Sums of squares: 1 + 4 + 9 = 14 and 16."""
    layout = Backend().make_layout([1, 1])
    w = np.array([2.0, 1.0])
    reference.sgd_update(w, np.array([3.0, -1.0]), None, layout, np.array([[0.1, 0.0, 0.9, 2.0], [0.2, 0.0, 0.5, 1.0]]),
                         hyper_vector(gradScale=0.5))
    np.testing.assert_allclose(w, [1.5, 0.6], **F64)
    np.testing.assert_array_equal(reference.segment_sumsq(np.array([1.0, 2.0, 3.0, 4.0]),
                                                          Backend().make_layout([3, 1])), [14.0, 16.0])


def test_hyper_vector_derives_the_momentum_constants():
    """c1..c3 come from mu, lrInMomentum and nesterov; giving one is an error that names it, and the rest of
    the vector is as given."""
    hyper = hyper_vector(mu=0.7, lrInMomentum=0.0, nesterov=1.0, rho=0.5)
    index = {name: i for i, name in enumerate(HYPER_FIELDS)}
    assert [hyper[index[name]] for name in ("c1Lr", "c1Fixed", "c2Lr", "c2Fixed", "c3Lr")] == [0, 1, 0.7, 0, 1]
    assert hyper[index["rho"]] == 0.5 and hyper[index["mu"]] == 0.7
    with pytest.raises(ValueError, match=r"hyper_vector: c2Lr is derived from mu, lrInMomentum and nesterov, "
                                         r"not given; got c2Lr=3\.0"):
        hyper_vector(c2Lr=3.0)
