"""setupOn is transactional and a re-setup starts afresh; an optimizer whose Variables were taken by another one
or replaced by calcMode raises instead of silently updating nothing; arrays that cannot be updated in place
(read-only, transposed or strided, np.matrix) are refused before anything is modified."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backend_switch import using

from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Linear
from puzzle_rms.ops import applyCenteredRMSProp, applyRMSProp, sparseApplyRMSProp
from puzzle_rms.optimizers import ExponentialDecay, RMSProp
from puzzle_rms.variable import Variable

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def _variables(seed: int = 0) -> dict[str, Variable]:
    rng = np.random.default_rng(seed)
    return {"w": Variable(rng.standard_normal((3, 4)).astype(np.float32), name="w"),
            "b": Variable(rng.standard_normal(4), name="b")}


def _grads(variables: dict[str, Variable], step: int) -> None:
    rng = np.random.default_rng(100 + step)
    for var in variables.values():
        var.grad[...] = rng.standard_normal(var.shape).astype(var.dtype)


def _optimizer() -> RMSProp:
    # the schedule and bias correction read t, so a kept or reset step counter shows in the numbers
    return RMSProp(ExponentialDecay(0.05, 0.5, 2), momentum=0.5, centered=True, biasCorrection=True)


def _state(variables: dict[str, Variable], optimizer: RMSProp) -> list[bytes]:
    out = [np.asarray(var.data).tobytes() for var in variables.values()]
    out += [np.asarray(v).tobytes() for views in optimizer.stateArrays().values() for v in views.values()]
    return out + [repr((optimizer.t, optimizer.skippedSteps)).encode()]


# --- transactional setupOn and re-setup -------------------------------------------------------------------
@pytest.mark.parametrize("useGlobalState", [False, True])
def test_a_failing_setup_leaves_the_previous_one_intact(backend_name, useGlobalState):
    variables, twinVariables = _variables(), _variables()
    optimizer, twin = _optimizer(), _optimizer()
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    twin.setupOn(twinVariables, useGlobalState=useGlobalState)
    for step in range(2):
        _grads(variables, step), _grads(twinVariables, step)
        optimizer.update(), twin.update()
    before = _state(variables, optimizer)

    def broken(name: str) -> bool:
        raise KeyError(f"no rule for {name}")

    with pytest.raises(KeyError, match="no rule for"):
        optimizer.setupOn([{"params": variables, "decayFilter": broken}], useGlobalState=not useGlobalState)
    assert _state(variables, optimizer) == before
    for step in range(2, 4):  # still attached: steps exactly as the twin that never saw the failed setup
        _grads(variables, step), _grads(twinVariables, step)
        assert optimizer.update() and twin.update()
    assert _state(variables, optimizer) == _state(twinVariables, twin)


@pytest.mark.parametrize("useGlobalState", [False, True])
def test_setup_again_starts_a_fresh_state_at_step_zero(backend_name, useGlobalState):
    variables = _variables()
    optimizer = _optimizer()
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for step in range(3):
        _grads(variables, step)
        optimizer.update()
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    assert (optimizer.t, optimizer.skippedSteps) == (0, 0)
    assert all(not np.asarray(v).any() for views in optimizer.stateArrays().values() for v in views.values())
    fresh, freshVariables = _optimizer(), {name: Variable(np.array(var.data), name=name)
                                           for name, var in variables.items()}
    fresh.setupOn(freshVariables, useGlobalState=useGlobalState)
    for step in range(3, 5):
        _grads(variables, step), _grads(freshVariables, step)
        optimizer.update(), fresh.update()
    assert _state(variables, optimizer) == _state(freshVariables, fresh)


def test_an_optimizer_whose_variables_were_taken_raises_and_the_new_owner_works(backend_name):
    variables = _variables()
    first, second = _optimizer(), _optimizer()
    first.setupOn(variables, useGlobalState=True)
    second.setupOn(variables, useGlobalState=True)
    _grads(variables, 0)
    before = _state(variables, first)
    with pytest.raises(RuntimeError, match=r"variable '(w|b)' is no longer a view of this optimizer's flat buffer"):
        first.update()
    assert _state(variables, first) == before
    first.release()  # must not give back Variables that the second optimizer holds
    weights = {name: np.array(var.data) for name, var in variables.items()}
    assert second.update()
    assert all(not np.array_equal(var.data, weights[name]) for name, var in variables.items())


@pytest.mark.parametrize("useGlobalState", [False, True])
def test_calc_mode_after_setup_raises_at_update_and_setup_again_trains(backend_name, useGlobalState):
    model = Sequential()
    model.append(Linear(3, 2, rng=np.random.default_rng(0)))
    optimizer = RMSProp(0.1)
    optimizer.setupOn(model, useGlobalState=useGlobalState)
    model.calcMode(np.float64)
    for var in model.namedVariables().values():
        var.grad[...] = 1.0
    weights = {name: np.array(var.data) for name, var in model.namedVariables().items()}
    with pytest.raises(RuntimeError, match=r"was replaced by calcMode\(float64\).*Call setupOn again"):
        optimizer.update()
    assert all(np.array_equal(var.data, weights[name]) for name, var in model.namedVariables().items())
    optimizer.setupOn(model, useGlobalState=useGlobalState)
    assert optimizer.update()
    for name, var in model.namedVariables().items():  # first step with ms = 0.1 g**2: w -= 0.1 * 1 / (sqrt(0.1) + 1e-5)
        np.testing.assert_allclose(var.data, weights[name] - 0.1 / (np.sqrt(0.1) + 1e-5), rtol=1e-12)


# --- arrays that cannot be updated in place ---------------------------------------------------------------
def _bad_arrays() -> dict[str, Any]:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    readOnly = base.copy()
    readOnly.flags.writeable = False
    return {"transposed": base.T, "strided": base[:, ::2], "read-only": readOnly,
            "matrix": np.asmatrix(base.copy())}


@pytest.mark.parametrize("kind", ["transposed", "strided", "read-only", "matrix"])
def test_variables_refuse_arrays_that_cannot_be_updated_in_place(kind):
    with using("numpy"):
        array = _bad_arrays()[kind]
        pattern = {"transposed": "must be C-contiguous", "strided": "must be C-contiguous",
                   "read-only": "must be writable", "matrix": "numpy.matrix"}[kind]
        with pytest.raises((TypeError, ValueError), match=pattern):
            Variable(array, name="x")
        var = Variable(np.zeros(array.shape, np.float32), name="x")
        with pytest.raises((TypeError, ValueError), match=pattern):
            var.grad = array


def test_setup_refuses_a_variable_made_read_only_later_and_changes_nothing(backend_name):
    variables = _variables()
    optimizer = _optimizer()
    optimizer.setupOn(variables)
    _grads(variables, 0)
    optimizer.update()
    before = _state(variables, optimizer)
    late = Variable(np.ones(5, np.float32), name="late")
    late.data.flags.writeable = False
    with pytest.raises(ValueError, match=r"setupOn: the data of variable 'late' must be writable"):
        optimizer.setupOn({**variables, "late": late})
    assert _state(variables, optimizer) == before and optimizer.update()


@pytest.mark.parametrize("which", ["meanSquare", "moment", "var"])
def test_raw_ops_check_every_output_before_modifying_any(backend_name, which):
    rng = np.random.default_rng(4)
    arrays = {name: rng.random((3, 4)).astype(np.float32) for name in ("var", "meanGrad", "meanSquare", "moment")}
    grad = rng.random((3, 4)).astype(np.float32)
    arrays[which].flags.writeable = False
    before = {name: a.copy() for name, a in arrays.items()}
    with pytest.raises(ValueError, match=rf"{which} must be writable"):
        applyRMSProp(arrays["var"], arrays["meanSquare"], arrays["moment"], 0.1, grad, 0.9, 0.5, 1e-6)
    with pytest.raises(ValueError, match=rf"{which} must be writable"):
        applyCenteredRMSProp(arrays["var"], arrays["meanGrad"], arrays["meanSquare"], arrays["moment"], grad, 0.1,
                             0.9, 0.5, 1e-6)
    with pytest.raises(ValueError, match=rf"{which} must be writable"):
        sparseApplyRMSProp(arrays["var"], arrays["meanSquare"], arrays["moment"], 0.1, grad[:2],
                           np.array([0, 2]), 0.9, 0.5, 1e-6)
    assert all(np.array_equal(arrays[name], before[name]) for name in arrays)
    matrix = np.asmatrix(arrays["var"].copy())
    with pytest.raises(TypeError, match="numpy.matrix"):
        applyRMSProp(matrix, np.asmatrix(arrays["meanSquare"].copy()), np.asmatrix(arrays["moment"].copy()), 0.1,
                     np.asmatrix(grad), 0.9, 0.5, 1e-6)


@pytest.mark.parametrize("dtype,epsilon", [(np.float32, 1e-46), (np.float32, 1e-39), (np.float16, 1e-40),
                                           (np.float64, 1e-310)])
def test_raw_ops_refuse_an_epsilon_that_vanishes_in_the_state_dtype(backend_name, dtype, epsilon):
    var, ms, mom, grad = (np.zeros(4, dtype) for _ in range(4))
    with pytest.raises(ValueError, match=r"applyRMSProp: epsilon must be in \[.*\] for .* arrays"):
        applyRMSProp(var, ms, mom, 0.1, grad, 0.9, 0.0, epsilon)
    assert not var.any() and not ms.any()
    applyRMSProp(var, ms, mom, 0.1, grad, 0.9, 0.0, 1e-30)
    assert np.isfinite(var).all() and not var.any()  # zero gradient, a normal epsilon: no NaN
