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


# --- containers -----------------------------------------------------------------------------------
def test_sequential_append_chains_and_insert_pop_slice_keep_the_order(backend_name):
    from puzzle_rms.modules import Activation, Identity, relu

    first, act, last = Linear(3, 4), Activation(relu), Linear(4, 2)
    seq = Sequential().append(first).append(last)
    seq.insert(act, 1)
    assert list(seq) == [first, act, last] and list(seq.modules) == ["0", "2", "1"]
    named = Identity(name="id")
    seq.insertAfter(named, "2")
    assert list(seq) == [first, act, named, last]
    head = seq[:2]
    assert isinstance(head, Sequential) and list(head) == [first, act]
    assert head(np.ones((5, 3), np.float32)).shape == (5, 4)
    assert seq.pop() is last and len(seq) == 3
    assert seq.getByName("id") is named and seq.getByName("nothing") is None
    with pytest.raises(KeyError, match="no module named 'x'"):
        seq.insertAfter(Identity(), "x")


def test_num_of_params_param_size_update_params_and_zero_grad_params(backend_name):
    seq = Sequential().append(Linear(3, 4)).append(Linear(4, 2, useBias=False))
    assert seq.numOfParams() == 3 * 4 + 4 + 4 * 2
    assert seq.paramSize() == 4 * seq.numOfParams() and seq.paramSize("kb") == pytest.approx(seq.paramSize() / 1024)
    with pytest.raises(ValueError, match="unit must be None, 'kb' or 'mb', got 'gb'"):
        seq.paramSize("gb")
    W = seq[1].vars["W"]
    before = np.array(W.data)
    W.grad.fill(2.0)
    seq.updateParams(0.25)  # w -= lr * dL/dw
    np.testing.assert_allclose(np.asarray(W.data), before - 0.5, rtol=1e-6)
    seq.zeroGradParams()
    assert all(not np.asarray(var.grad).any() for var in seq.getVarTable())


def test_eval_mode_and_upd_grad_false_skip_what_they_name(backend_name):
    layer = Linear(3, 2)
    x, g = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
    layer(x)
    assert layer.backward(g, updGrad=False) is None and layer.grad is None
    assert np.asarray(layer.vars["W"].grad).any()
    layer.zeroGradParams()
    layer.evalMode()
    layer(x)
    assert layer.backward(g).shape == (4, 3)
    assert not np.asarray(layer.vars["W"].grad).any()  # PuzzleLib: no parameter gradients in eval mode


def test_graph_parents_pick_slots_of_a_list_output(backend_name):
    from puzzle_rms.containers import Graph
    from puzzle_rms.modules import Concat, Identity, Split

    inp = Identity().node()
    split = Split(axis=1, sections=(1, 2, 3)).node(inp)
    cat = Concat(axis=1).node((split, [2, 0]), (split, 0))  # picks 3 + 1 + 1 columns; slot 1 is unused
    graph = Graph(inputs=inp, outputs=cat)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(np.asarray(graph(x)), np.concatenate([x[:, 3:], x[:, :1], x[:, :1]], axis=1))
    grad = np.arange(10, dtype=np.float32).reshape(2, 5)
    expected = np.zeros_like(x)
    expected[:, 3:] = grad[:, :3]
    expected[:, 0] = grad[:, 3] + grad[:, 4]  # two consumers of slot 0 add up; slot 1 gets zeros
    np.testing.assert_array_equal(np.asarray(graph.backward(grad)), expected)
    with pytest.raises(TypeError, match="slots must be an int >= 0 or a non-empty list of them, got 'a'"):
        Identity().node((split, "a"))


# --- modules ----------------------------------------------------------------------------------------
def test_dropout_masks_and_scales_in_train_mode_and_passes_through_in_eval(backend_name):
    from puzzle_rms.modules import Dropout

    dropout = Dropout(p=0.25, rng=np.random.default_rng(3))
    x = np.ones((200, 50), np.float32)
    y = np.asarray(dropout(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.01  # 10000 Bernoulli(0.75) draws: sd 0.0043
    grad = np.asarray(dropout.backward(np.full_like(x, 2.0)))
    np.testing.assert_array_equal(grad != 0, kept)  # the same mask
    dropout.evalMode()
    np.testing.assert_array_equal(np.asarray(dropout(x)), x)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        Dropout(p=1)


def test_cast_changes_the_dtype_both_ways(backend_name):
    from puzzle_rms.modules import Cast

    cast = Cast(np.float32, np.float16)
    y = cast(np.array([[1.0, 2.5]], np.float32))
    assert y.dtype == np.float16
    assert cast.backward(np.array([[0.5, 1.0]], np.float16)).dtype == np.float32
    with pytest.raises(TypeError, match="input of dtype float64; expected intype float32"):
        cast(np.zeros((1, 2)))
