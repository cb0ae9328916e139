"""Sequential and Graph: chaining, fan-out gradients, variable names, modes and construction errors."""
from __future__ import annotations

import numpy as np
import pytest
from gradcheck import checkModule

from puzzle_rms import backends
from puzzle_rms.containers import Graph, Sequential
from puzzle_rms.modules import Activation, Add, Concat, Linear, relu, sigmoid, tanh
from puzzle_rms.variable import Variable


def host(x):
    return backends.current().to_host(x)


def mlp(rng: np.random.Generator) -> Sequential:
    seq = Sequential()
    seq.append(Linear(4, 5, rng=rng))
    seq.extend([Activation(tanh), Linear(5, 3, rng=rng)])
    return seq


def fanOutGraph(rng: np.random.Generator) -> Graph:
    """inp feeds two branches (relu, Linear) that are added; the sum and the relu branch are concatenated."""
    inp = Linear(3, 4, rng=rng).node()
    act = Activation(relu).node(inp)
    lin = Linear(4, 4, rng=rng).node(inp)
    added = Add().node(act, lin)
    cat = Concat(axis=1).node(added, act)
    out = Linear(8, 2, rng=rng).node(cat)
    return Graph(inputs=inp, outputs=out)


def randomBiases(module, rng: np.random.Generator) -> None:
    """Non-zero biases, so that their gradients and relu kinks are exercised."""
    for name, var in module.namedVariables().items():
        if name.endswith("b"):
            var.data[...] = backends.current().to_device(rng.standard_normal(var.shape))


# --- Sequential ---------------------------------------------------------------------------------
def test_sequential_gradients(backend_name, rng):
    seq = mlp(rng)
    seq.calcMode(np.float64)
    randomBiases(seq, rng)
    checkModule(seq, rng.standard_normal((6, 4)))


def test_sequential_forward_and_container_protocol(backend_name, rng):
    seq = mlp(rng)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    W0, W2 = host(seq[0].W), host(seq[2].W)
    np.testing.assert_allclose(host(seq(x)), np.tanh(x @ W0) @ W2, rtol=1e-5, atol=1e-6)
    assert len(seq) == 3 and [type(m).__name__ for m in seq] == ["Linear", "Activation", "Linear"]
    assert seq[-1] is seq[2] and seq["1"] is seq[1]
    assert seq.data is seq[2].data


def test_sequential_var_table_names(backend_name, rng):
    seq = mlp(rng)
    table = seq.namedVariables()
    assert list(table) == ["0.W", "0.b", "2.W", "2.b"]
    assert table["0.W"] is seq[0].vars["W"] and seq.getVar("2.b") is seq[2].vars["b"]
    named = Sequential()
    named.extend([Linear(2, 2, name="encoder"), Activation(sigmoid), Linear(2, 1, useBias=False)])
    assert list(named.namedVariables()) == ["encoder.W", "encoder.b", "2.W"]


def test_nested_sequential_names_and_set_var(backend_name, rng):
    outer = Sequential()
    outer.extend([mlp(rng), Linear(3, 1, rng=rng)])
    assert list(outer.namedVariables()) == ["0.0.W", "0.0.b", "0.2.W", "0.2.b", "1.W", "1.b"]
    new = Variable(np.ones((5, 3), np.float32))
    outer.setVar("0.2.W", new)
    assert outer[0][2].vars["W"] is new and outer.getVar("0.2.W") is new
    with pytest.raises(KeyError, match="'0.9.W'"):
        outer.getVar("0.9.W")


def test_sequential_gradients_accumulate(backend_name, rng):
    seq = mlp(rng)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    g = rng.standard_normal((3, 3)).astype(np.float32)
    seq(x)
    seq.backward(g)
    once = {name: host(var.grad).copy() for name, var in seq.namedVariables().items()}
    seq.backward(g)
    for name, var in seq.namedVariables().items():
        np.testing.assert_allclose(host(var.grad), 2 * once[name], rtol=1e-6, err_msg=name)


def test_modes_propagate_to_children(backend_name, rng):
    seq = mlp(rng)
    seq.evalMode()
    assert not seq.train and not any(m.train for m in seq)
    seq.trainMode()
    assert seq.train and all(m.train for m in seq)
    seq.calcMode(np.float64)
    assert all(m.calctype == np.float64 for m in seq)
    assert all(var.dtype == np.float64 for var in seq.namedVariables().values())
    assert seq(np.ones((1, 4), np.float32)).dtype == np.float64


def test_sequential_append_errors(backend_name):
    seq = Sequential()
    layer = Linear(2, 2, name="a")
    seq.append(layer)
    with pytest.raises(ValueError, match="already in the chain"):
        seq.append(layer)
    with pytest.raises(ValueError, match="a module named 'a'"):
        seq.append(Linear(2, 2, name="a"))
    with pytest.raises(TypeError, match="expected a Module, got int"):
        seq.append(3)


# --- Graph --------------------------------------------------------------------------------------
def test_graph_fan_out_gradients(backend_name, rng):
    graph = fanOutGraph(rng)
    graph.calcMode(np.float64)
    randomBiases(graph, rng)
    checkModule(graph, rng.standard_normal((5, 3)))


def test_graph_forward_matches_hand_composition(backend_name, rng):
    graph = fanOutGraph(rng)
    mods = graph.modules
    W0, W2, W5 = host(mods["0"].W), host(mods["2"].W), host(mods["5"].W)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    h = x @ W0
    a = np.maximum(h, 0)
    expected = np.concatenate([a + h @ W2, a], axis=1) @ W5
    np.testing.assert_allclose(host(graph(x)), expected, rtol=1e-5, atol=1e-6)


def test_graph_var_table_names(backend_name, rng):
    assert list(fanOutGraph(rng).namedVariables()) == ["0.W", "0.b", "2.W", "2.b", "5.W", "5.b"]
    inp = Linear(2, 3, name="encoder").node()
    out = Linear(3, 1, name="head").node(Activation(relu).node(inp))
    assert list(Graph(inputs=[inp], outputs=[out]).namedVariables()) == ["encoder.W", "encoder.b", "head.W", "head.b"]


def test_graph_sums_fan_out_gradients(backend_name, rng):
    inp = Activation(tanh).node()
    out = Add().node(inp, inp)
    graph = Graph(inputs=inp, outputs=out)
    graph.calcMode(np.float64)
    x = rng.standard_normal((2, 3))
    g = rng.standard_normal((2, 3))
    np.testing.assert_allclose(host(graph(x)), 2 * np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(host(graph.backward(g)), 2 * g * (1 - np.tanh(x) ** 2), rtol=1e-12)


def test_graph_several_inputs_and_outputs(backend_name, rng):
    a = Linear(3, 4, rng=rng).node()
    b = Linear(2, 4, rng=rng).node()
    s = Add().node(a, b)
    out1 = Activation(sigmoid).node(s)
    out2 = Linear(4, 1, rng=rng).node(s)
    graph = Graph(inputs=[a, b], outputs=[out1, out2])
    graph.calcMode(np.float64)
    randomBiases(graph, rng)
    ys = graph([rng.standard_normal((5, 3)), rng.standard_normal((5, 2))])
    assert isinstance(ys, list) and [y.shape for y in ys] == [(5, 4), (5, 1)]
    checkModule(graph, [rng.standard_normal((5, 3)), rng.standard_normal((5, 2))])


def test_graph_gradients_accumulate(backend_name, rng):
    graph = fanOutGraph(rng)
    x = rng.standard_normal((3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 2)).astype(np.float32)
    graph(x)
    graph.backward(g)
    once = {name: host(var.grad).copy() for name, var in graph.namedVariables().items()}
    graph.backward(g)
    for name, var in graph.namedVariables().items():
        np.testing.assert_allclose(host(var.grad), 2 * once[name], rtol=1e-6, err_msg=name)


def test_graph_construction_errors(backend_name):
    inp = Linear(2, 2).node()
    hidden = Activation(relu).node(inp)
    with pytest.raises(ValueError, match="has parents; input nodes must have none"):
        Graph(inputs=hidden, outputs=hidden)
    other = Linear(2, 2).node()
    with pytest.raises(ValueError, match="must be exactly the inputs"):
        Graph(inputs=inp, outputs=Add().node(hidden, other))
    shared = Activation(relu)
    with pytest.raises(ValueError, match="a module appears in two nodes"):
        Graph(inputs=inp, outputs=shared.node(shared.node(inp)))
    with pytest.raises(TypeError, match="outputs must be a Node"):
        Graph(inputs=inp, outputs=[])
    with pytest.raises(TypeError, match="parents must be Nodes"):
        Activation(relu).node(np.zeros(2))


def test_graph_call_errors(backend_name):
    inp = Linear(2, 2).node()
    graph = Graph(inputs=inp, outputs=Activation(relu).node(inp))
    with pytest.raises(ValueError, match="got 2 input arrays for 1 input nodes"):
        graph([np.zeros((1, 2)), np.zeros((1, 2))])


class _CountingLinear(Linear):
    """A Linear that counts the input gradients it computes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputGrads = 0

    def updateGrad(self, grad):
        self.inputGrads += 1
        return super().updateGrad(grad)


def _grads(module):
    return {name: host(var.grad).copy() for name, var in module.namedVariables().items()}


def _zero(module):
    for var in module.namedVariables().values():
        var.grad[...] = 0


@pytest.mark.parametrize("build", ["sequential", "graph"])
def test_updgrad_false_skips_the_data_inputs_gradient_and_keeps_the_parameter_gradients(backend_name, rng, build):
    """PuzzleLib's updGrad=False: the modules fed by the data compute no dL/dx; every dL/dw is what updGrad=True
    gives, bit for bit, and the container returns None."""
    first = _CountingLinear(3, 4, rng=rng)
    if build == "sequential":
        net = Sequential()
        net.extend([first, Activation(relu), _CountingLinear(4, 2, rng=rng)])
    else:
        inp = first.node()
        act = Activation(relu).node(inp)
        net = Graph(inputs=inp, outputs=_CountingLinear(4, 2, rng=rng).node(Add().node(act, inp)))
    randomBiases(net, rng)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    net(x)
    assert net.backward(g) is not None and first.inputGrads == 1
    want = _grads(net)
    _zero(net)
    assert net.backward(g, updGrad=False) is None
    assert first.inputGrads == 1 and first.grad is None and net.grad is None
    got = _grads(net)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_updgrad_must_be_a_bool(backend_name, rng):
    seq = mlp(rng)
    seq(rng.standard_normal((2, 4)).astype(np.float32))
    with pytest.raises(TypeError, match=r"updGrad must be True or False, got 0 \(int\)"):
        seq.backward(np.zeros((2, 3), np.float32), updGrad=0)
