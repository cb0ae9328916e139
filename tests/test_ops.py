"""puzzle_rms.ops against MindSpore's documented formulas, its golden value, and its argument checks."""
from __future__ import annotations

import numpy as np
import pytest
from rmsprop_reference import raw_apply_rmsprop

from puzzle_rms import backends
from puzzle_rms.ops import applyCenteredRMSProp, applyRMSProp, sparseApplyCenteredRMSProp, sparseApplyRMSProp

F64 = dict(rtol=1e-12, atol=1e-14)


def host(x):
    return backends.current().to_host(x)


def dev(x):
    return backends.current().to_device(np.array(x))


def reference_step(var, ms, mg, mom, g, lr, decay, momentum, epsilon, centered):
    """MindSpore ApplyRMSProp / ApplyCenteredRMSProp as documented (float64), in the ops' buffer order."""
    return raw_apply_rmsprop(var, g, ms, mg, mom, lr, decay, momentum, epsilon, centered)


def test_mindspore_golden_value(backend_name):
    """MindSpore's ApplyRMSProp example: all ones, lr 0.01, decay 0, momentum 1e-10, epsilon 0.001 -> 0.990005."""
    var, ms, mom, grad = (dev(np.ones((2, 2), np.float32)) for _ in range(4))
    out = applyRMSProp(var, ms, mom, 0.01, grad, 0.0, 1e-10, 0.001)
    assert out is var
    np.testing.assert_allclose(host(var), np.full((2, 2), 0.990005), rtol=1e-6)
    np.testing.assert_allclose(host(ms), np.ones((2, 2)), rtol=1e-7)
    np.testing.assert_allclose(host(mom), np.full((2, 2), 0.01 / np.sqrt(1.001)), rtol=1e-6)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_ops_match_reference(backend_name, dtype, centered):
    gen = np.random.default_rng(2)
    shape = (40, 30)
    w = gen.standard_normal(shape)
    # a valid history: ms >= mg**2, so the clamp of the centered variance at 0 never acts here
    ms, mg, mom = np.abs(gen.standard_normal(shape)) + 0.1, 0.1 * gen.standard_normal(shape), gen.standard_normal(shape)
    arrays = {name: dev(x.astype(dtype)) for name, x in dict(var=w, ms=ms, mg=mg, mom=mom).items()}
    ref = [x.astype(dtype).astype(np.float64) for x in (w, ms, mg, mom)]
    for lr, scale in ((0.05, 0.3), (0.01, 3.0), (0.08, 0.05)):
        g = (scale * gen.standard_normal(shape)).astype(dtype)
        if centered:
            applyCenteredRMSProp(arrays["var"], arrays["mg"], arrays["ms"], arrays["mom"], dev(g), lr, 0.9, 0.8, 0.01)
        else:
            applyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], lr, dev(g), 0.9, 0.8, 0.01)
        ref = list(reference_step(*ref, g.astype(np.float64), lr, 0.9, 0.8, 0.01, centered))
    tol = F64 if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)
    for name, want in zip(("var", "ms", "mg", "mom"), ref):
        if name == "mg" and not centered:
            np.testing.assert_array_equal(host(arrays["mg"]), mg.astype(dtype))
        else:
            np.testing.assert_allclose(host(arrays[name]), want, **tol, err_msg=name)


def test_float16_arrays_and_array_learning_rate(backend_name):
    gen = np.random.default_rng(4)
    shape = (8, 9)
    w, ms, mom = (gen.standard_normal(shape).astype(np.float16) for _ in range(3))
    ms = np.abs(ms)
    var, msD, momD = dev(w), dev(ms), dev(mom)
    g = gen.standard_normal(shape).astype(np.float16)
    applyRMSProp(var, msD, momD, dev(np.array([0.05], np.float32)), dev(g), 0.9, 0.5, 0.01)
    want, wantMs, _, wantMom = reference_step(*(x.astype(np.float64) for x in (w, ms, ms, mom)), g.astype(np.float64),
                                              0.05, 0.9, 0.5, 0.01, False)
    assert host(var).dtype == np.float16 and host(msD).dtype == np.float16
    np.testing.assert_allclose(host(var).astype(np.float64), want, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(host(msD).astype(np.float64), wantMs, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(host(momD).astype(np.float64), wantMom, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_sparse_ops_update_only_listed_rows(backend_name, centered):
    gen = np.random.default_rng(5)
    rows, cols = 50, 6
    w, ms, mg, mom = (gen.standard_normal((rows, cols)) for _ in range(4))
    ms = np.abs(ms) + 1.0
    arrays = {name: dev(x) for name, x in dict(var=w, ms=ms, mg=0.1 * mg, mom=mom).items()}
    ref = [w.copy(), ms.copy(), 0.1 * mg, mom.copy()]
    touched = set()
    for indices in ([3, 17, 3, 40], [0, 49], [17, 17, 17]):
        g = gen.standard_normal((len(indices), cols))
        idx = dev(np.array(indices, np.int64))
        if centered:
            out = sparseApplyCenteredRMSProp(arrays["var"], arrays["mg"], arrays["ms"], arrays["mom"], 0.05, 0.9, 0.7,
                                             0.01, dev(g), idx)
        else:
            out = sparseApplyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], 0.05, dev(g), idx, 0.9, 0.7, 0.01)
        assert out is arrays["var"]
        dense = np.zeros((rows, cols))
        np.add.at(dense, np.array(indices), g)  # repeated indices are summed first
        listed = np.unique(indices)
        new = reference_step(*(x[listed] for x in ref), dense[listed], 0.05, 0.9, 0.7, 0.01, centered)
        for x, value in zip(ref, new):
            x[listed] = value
        touched |= set(indices)
    for name, want in zip(("var", "ms", "mg", "mom"), ref):
        np.testing.assert_allclose(host(arrays[name]), want, **F64, err_msg=name)
    untouched = sorted(set(range(rows)) - touched)
    np.testing.assert_array_equal(host(arrays["var"])[untouched], w[untouched])
    np.testing.assert_array_equal(host(arrays["mom"])[untouched], mom[untouched])


# --- bad input: MindSpore's TypeError/ValueError, naming the argument; nothing modified -------------
def _dense_arrays():
    gen = np.random.default_rng(9)
    return {name: dev(gen.standard_normal((4, 3)).astype(np.float32)) for name in ("var", "mg", "ms", "mom", "grad")}


BAD_DENSE = [
    (dict(ms=[[1.0] * 3] * 4), TypeError, r"applyRMSProp: meanSquare must be a \w+ array .*got list"),
    (dict(var="weights"), TypeError, r"applyRMSProp: var must be a \w+ array .*got str"),
    (dict(grad=np.zeros((3, 4), np.float32)), ValueError,
     r"applyRMSProp: grad must have the shape of var \(4, 3\), got \(3, 4\)"),
    (dict(grad=np.zeros((4, 3), np.float64)), TypeError,
     r"applyRMSProp: grad must have the dtype of var \(float32\), got float64"),
    (dict(mom=np.zeros((4, 3), np.float16)), TypeError, r"moment must have the dtype of var \(float32\), got float16"),
    (dict(ms=np.zeros((4, 6), np.float32)[:, ::2]), ValueError, r"meanSquare must be C-contiguous"),
    (dict(lr=-0.1), ValueError, r"applyRMSProp: learningRate must be in \[0, inf\), got -0.1"),
    (dict(lr="0.1"), TypeError, r"learningRate must be a number or a one-element float array, got '0.1'"),
    (dict(lr=np.array([0.1, 0.2])), TypeError, r"learningRate as an array must hold one float, got shape \(2,\)"),
    (dict(decay=1.5), ValueError, r"applyRMSProp: decay must be in \[0, 1\], got 1.5"),
    (dict(decay=-0.1), ValueError, r"applyRMSProp: decay must be in \[0, 1\], got -0.1"),
    (dict(decay=1), TypeError, r"applyRMSProp: decay must be a float, got 1 \(int\)"),
    (dict(momentum=-0.9), ValueError, r"applyRMSProp: momentum must be in \[0, inf\), got -0.9"),
    (dict(momentum=True), TypeError, r"momentum must be a float, got True \(bool\)"),
    (dict(epsilon=0.0), ValueError, r"applyRMSProp: epsilon must be in \(0, inf\), got 0.0"),
    (dict(epsilon=-1e-3), ValueError, r"epsilon must be in \(0, inf\), got -0.001"),
    (dict(epsilon=float("nan")), ValueError, r"epsilon must be finite, got nan"),
]


@pytest.mark.parametrize("bad, error, pattern", BAD_DENSE)
def test_apply_rmsprop_bad_input_changes_nothing(backend_name, bad, error, pattern):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    args = dict(var=arrays["var"], ms=arrays["ms"], mom=arrays["mom"], lr=0.1, grad=arrays["grad"], decay=0.9,
                momentum=0.5, epsilon=1e-3)
    args.update(bad)  # host arrays are arrays of the CPU backends
    with pytest.raises(error, match=pattern):
        applyRMSProp(args["var"], args["ms"], args["mom"], args["lr"], args["grad"], args["decay"], args["momentum"],
                     args["epsilon"])
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


def test_apply_centered_rmsprop_names_mean_grad(backend_name):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    with pytest.raises(ValueError, match=r"applyCenteredRMSProp: meanGrad must have the shape of var \(4, 3\), got"):
        applyCenteredRMSProp(arrays["var"], dev(np.zeros(12, np.float32)), arrays["ms"], arrays["mom"],
                             arrays["grad"], 0.1, 0.9, 0.5, 1e-3)
    with pytest.raises(ValueError, match=r"applyCenteredRMSProp: decay must be in \[0, 1\], got 2.0"):
        applyCenteredRMSProp(arrays["var"], arrays["mg"], arrays["ms"], arrays["mom"], arrays["grad"], 0.1, 2.0,
                             0.5, 1e-3)
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


@pytest.mark.parametrize("indices, grad, error, pattern", [
    (np.array([0, 4]), np.zeros((2, 3), np.float32), ValueError, r"indices must lie in \[0, 4\), got the index 4"),
    (np.array([-1, 2]), np.zeros((2, 3), np.float32), ValueError, r"indices must lie in \[0, 4\), got the index -1"),
    (np.array([0.0, 1.0]), np.zeros((2, 3), np.float32), TypeError, r"indices must have an integer dtype"),
    (np.array([[0, 1]]), np.zeros((2, 3), np.float32), ValueError, r"indices must be 1-D, got shape \(1, 2\)"),
    (np.array([0, 1]), np.zeros((3, 3), np.float32), ValueError, r"grad must have shape \(2, 3\) \(one row"),
    (np.array([0, 1]), np.zeros((2, 3), np.float64), TypeError, r"grad must have the dtype of var \(float32\)"),
])
def test_sparse_bad_input_changes_nothing(backend_name, indices, grad, error, pattern):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    with pytest.raises(error, match=rf"sparseApplyRMSProp: {pattern}"):
        sparseApplyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], 0.1, dev(grad), dev(indices), 0.9, 0.5, 1e-3)
    with pytest.raises(TypeError, match=r"sparseApplyCenteredRMSProp: indices must be a \w+ integer array, got list"):
        sparseApplyCenteredRMSProp(arrays["var"], arrays["mg"], arrays["ms"], arrays["mom"], 0.1, 0.9, 0.5, 1e-3,
                                   dev(grad), [0, 1])
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


def test_sparse_ops_with_no_rows_change_nothing(backend_name):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    sparseApplyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], 0.1, dev(np.zeros((0, 3), np.float32)),
                       dev(np.zeros(0, np.int64)), 0.9, 0.5, 1e-3)
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


@pytest.mark.parametrize("zeroGrad", ["keep", "decay"])
def test_sparse_zero_gradient_elements_keep_or_decay_the_mean_square(backend_name, zeroGrad):
    """MindSpore's kernel ("keep") leaves ms where a listed row's gradient element is exactly 0; TF's ("decay")
    decays it: ms = decay * ms. The step of var and mom is the same (a zero gradient adds nothing)."""
    ms0 = np.full((3, 2), 4.0, np.float32)
    mom0 = np.full((3, 2), 0.5, np.float32)
    var, ms, mom = dev(np.ones((3, 2), np.float32)), dev(ms0.copy()), dev(mom0.copy())
    grad = dev(np.array([[0.0, 2.0]], np.float32))
    sparseApplyRMSProp(var, ms, mom, 0.1, grad, dev(np.array([1], np.int64)), 0.5, 0.9, 1e-6, zeroGrad=zeroGrad)
    msRow = np.array([4.0 if zeroGrad == "keep" else 2.0, 0.5 * 4.0 + 0.5 * 4.0], np.float32)
    np.testing.assert_allclose(host(ms), [ms0[0], msRow, ms0[2]], rtol=1e-6)
    momRow = np.array([0.45, 0.45 + 0.1 * 2.0 / np.sqrt(4.0 + 1e-6)])
    np.testing.assert_allclose(host(mom), [mom0[0], momRow, mom0[2]], rtol=1e-6)
    np.testing.assert_allclose(host(var), [[1, 1], 1 - momRow, [1, 1]], rtol=1e-6)


def test_sparse_bad_zero_grad_changes_nothing(backend_name):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    with pytest.raises(ValueError, match=r"sparseApplyRMSProp: zeroGrad must be one of 'keep', 'decay', got 'skip'"):
        sparseApplyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], 0.1, arrays["grad"][:1],
                           dev(np.array([0], np.int64)), 0.9, 0.5, 1e-3, zeroGrad="skip")
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


def test_sparse_duplicates_bad_choice_changes_nothing(backend_name):
    arrays = _dense_arrays()
    before = {name: host(x).copy() for name, x in arrays.items()}
    with pytest.raises(ValueError, match=r"sparseApplyRMSProp: duplicates must be one of 'sum', 'apply', got 'mean'"):
        sparseApplyRMSProp(arrays["var"], arrays["ms"], arrays["mom"], 0.1, dev(np.ones((2, 3), np.float32)),
                           dev(np.array([1, 1])), 0.9, 0.5, 1e-3, duplicates="mean")
    for name, x in arrays.items():
        np.testing.assert_array_equal(host(x), before[name])


def test_sparse_duplicates_apply_is_one_step_per_occurrence(backend_name):
    """duplicates="apply" equals calling the op once per (index, row), in order; "sum" differs on repeats."""
    gen = np.random.default_rng(5)
    indices = np.array([2, 0, 2, 3, 2, 0])
    rows = gen.standard_normal((6, 3)).astype(np.float32)
    once, sequential, summed = _dense_arrays(), _dense_arrays(), _dense_arrays()
    for arrays in (once, sequential, summed):  # a mean square must be >= 0
        arrays["ms"] = dev(np.abs(host(arrays["ms"])))
    sparseApplyRMSProp(once["var"], once["ms"], once["mom"], 0.1, dev(rows), dev(indices), 0.9, 0.5, 1e-3,
                       duplicates="apply")
    for index, row in zip(indices, rows):
        sparseApplyRMSProp(sequential["var"], sequential["ms"], sequential["mom"], 0.1, dev(row[None]),
                           dev(np.array([index])), 0.9, 0.5, 1e-3)
    sparseApplyRMSProp(summed["var"], summed["ms"], summed["mom"], 0.1, dev(rows), dev(indices), 0.9, 0.5, 1e-3)
    for name in ("var", "ms", "mom"):
        np.testing.assert_allclose(host(once[name]), host(sequential[name]), rtol=1e-6, atol=1e-7)
    assert np.abs(host(once["var"]) - host(summed["var"])).max() > 1e-3
