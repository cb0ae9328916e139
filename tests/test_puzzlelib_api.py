"""PuzzleLib's call shapes: Variable's argument order, getVarTable's {Variable: [names]} and friends."""
from __future__ import annotations

import numpy as np
import pytest

from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Linear
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.variable import Variable


def test_variable_takes_name_second_and_grad_fourth(backend_name):
    grad = np.full(3, 2.0, np.float32)
    var = Variable(np.ones(3, np.float32), "w", True, grad)
    assert var.name == "w"
    np.testing.assert_array_equal(np.asarray(var.grad), grad)


def test_variable_without_grad_is_refused_by_an_optimizer(backend_name):
    var = Variable(np.ones(3, np.float32), "const", withgrad=False)
    assert var.grad is None
    with pytest.raises(ValueError, match="'const' has no gradient"):
        RMSProp().setupOn({"const": var})


def test_get_var_table_maps_each_variable_to_its_names(backend_name):
    seq = Sequential()
    seq.append(Linear(3, 2))
    seq.append(Linear(2, 2))
    shared = seq[0].vars["b"]
    seq[1].setVar("b", shared)  # one Variable under two paths
    table = seq.getVarTable()
    assert table[shared] == ["0.b", "1.b"]
    assert sorted(names[0] for names in table.values()) == ["0.W", "0.b", "1.W"]
    assert all(isinstance(var, Variable) for var in table)
    assert list(seq.namedVariables()) == ["0.W", "0.b", "1.W", "1.b"]


def test_set_attr_changes_the_next_update_and_checks_the_value(backend_name):
    var = Variable(np.ones(2, np.float32), "w")
    optimizer = RMSProp(learnRate=0.1)
    optimizer.setupOn({"w": var})
    optimizer.setAttr("learnRate", 0.5)
    var.grad[...] = np.array([1.0, -1.0], np.float32)
    optimizer.update()  # ms = 0.1 g^2, step = lr g / (sqrt(ms) + eps)
    step = 0.5 / (np.sqrt(0.1) + 1e-5)
    np.testing.assert_allclose(np.asarray(var.data), [1 - step, 1 + step], rtol=1e-6)
    assert optimizer.getAttrDict() == {"learnRate": 0.5, "factor": 0.9, "epsilon": 1e-5, "t": 1}
    with pytest.raises(ValueError, match="factor must be in \\[0, 1\\], got 2"):
        optimizer.setAttr("factor", 2)
    with pytest.raises(ValueError, match="unknown attribute 'momRate'; expected one of learnRate, factor, epsilon"):
        optimizer.setAttr("momRate", 0.5)
    assert optimizer.factor == 0.9


def test_config_backend_maps_puzzlelibs_names(backend_name):
    from puzzle_rms import Config, backends

    Config.backend = Config.Backend.intel
    assert backends.current().name == "numpy" and Config.backend == Config.Backend.intel
    Config.backend = "cpu"
    assert backends.current().name == "numba"
    with pytest.raises(ValueError, match="'hip' has no counterpart here"):
        Config.backend = Config.Backend.hip
    with pytest.raises(ValueError, match=r"Config.backend must be one of \['cuda', 'hip', 'cpu', 'intel'\], got 'x'"):
        Config.backend = "x"
    assert backends.current().name == "numba"
