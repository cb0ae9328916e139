"""Global state: the parameters of one dtype live in one flat buffer; Variables and modules keep their identity."""
from __future__ import annotations

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import SGD, RMSProp


def host(x):
    return backends.current().to_host(x)


def make_net(seed: int = 0) -> Sequential:
    gen = np.random.default_rng(seed)
    net = Sequential()
    net.extend([Linear(5, 4, rng=gen), Activation(tanh), Linear(4, 2, rng=gen)])
    return net


def forward(weights: dict, x: np.ndarray) -> np.ndarray:
    """The network of make_net written out in NumPy from host copies of its weights."""
    hidden = np.tanh(x @ weights["0.W"] + weights["0.b"])
    return hidden @ weights["2.W"] + weights["2.b"]


def test_variables_keep_identity_and_values(backend_name):
    net = make_net()
    table = net.namedVariables()
    before = {name: host(var.data).copy() for name, var in table.items()}
    optimizer = RMSProp()
    optimizer.setupOn(net, useGlobalState=True)
    after = net.namedVariables()
    assert list(after) == list(table) and all(after[name] is table[name] for name in table)
    assert net[0].vars["W"] is table["0.W"]
    assert [var for _, var in optimizer.variables()] == list(table.values())
    for name, var in table.items():
        np.testing.assert_array_equal(host(var.data), before[name])


def test_data_and_grad_are_views_of_one_flat_buffer(backend_name):
    net = make_net()
    table = net.namedVariables()
    optimizer = RMSProp()
    optimizer.setupOn(net, useGlobalState=True)
    assert len(optimizer.buckets) == 1
    bucket = optimizer.buckets[0]
    assert bucket.w.ndim == 1 and bucket.w.size == sum(var.size for var in table.values())
    offset = 0
    for name, var in table.items():
        assert np.shares_memory(var.data, bucket.w) and np.shares_memory(var.grad, bucket.g), name
        np.testing.assert_array_equal(host(bucket.w[offset:offset + var.size]), host(var.data).ravel())
        offset += var.size
    bucket.w[...] = 7  # writing the flat buffer is writing every Variable
    assert all((host(var.data) == 7).all() for var in table.values())


def test_assigning_data_copies_into_the_view(backend_name):
    var = Variable(np.zeros((2, 3), np.float32), name="v")
    other = Variable(np.zeros(4, np.float32), name="w")
    optimizer = SGD(learnRate=1.0)
    optimizer.setupOn([var, other], useGlobalState=True)
    view = var.data
    var.data = backends.current().to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert var.data is view
    np.testing.assert_array_equal(host(optimizer.buckets[0].w[:6]), np.arange(6))
    var.grad = backends.current().to_device(np.ones((2, 3), np.float32))
    optimizer.update()
    np.testing.assert_array_equal(host(var.data), np.arange(6).reshape(2, 3) - 1)
    with pytest.raises(ValueError, match=r"Variable 'v': data of shape \(3, 2\).*does not match"):
        var.data = backends.current().to_device(np.zeros((3, 2), np.float32))
    np.testing.assert_array_equal(host(var.data), np.arange(6).reshape(2, 3) - 1)


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_module_forward_sees_updated_weights(backend_name, useGlobalState):
    net = make_net()
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    optimizer = RMSProp(learnRate=0.1)
    optimizer.setupOn(net, useGlobalState=useGlobalState)
    first = host(net(x)).copy()
    optimizer.zeroGradParams()
    net.backward(np.ones((3, 2), np.float32))
    assert all(host(var.grad).any() for var in net.namedVariables().values())  # backward wrote into the views
    optimizer.update()
    weights = {name: host(var.data) for name, var in net.namedVariables().items()}
    second = host(net(x))
    assert np.abs(second - first).max() > 1e-3
    np.testing.assert_allclose(second, forward(weights, x), rtol=1e-5, atol=1e-6)


def test_global_and_local_state_give_the_same_numbers(backend_name):
    x = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    results = []
    for useGlobalState in (False, True):
        net = make_net(seed=4)
        optimizer = RMSProp(learnRate=0.05, epsilon=1e-3)
        optimizer.setupOn(net, useGlobalState=useGlobalState)
        for step in range(5):
            net(x)
            optimizer.zeroGradParams()
            net.backward(np.full((6, 2), 0.1 * (step + 1), np.float32))
            optimizer.update()
        results.append({name: host(var.data).copy() for name, var in net.namedVariables().items()})
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_one_bucket_per_dtype(backend_name):
    variables = [Variable(np.ones(3, np.float32), name="a"), Variable(np.ones((2, 2)), name="b"),
                 Variable(np.ones(5, np.float32), name="c"), Variable(np.ones(2, np.float16), name="d")]
    optimizer = RMSProp()
    optimizer.setupOn(variables, useGlobalState=True)
    byDtype = {bucket.dtype: bucket.names for bucket in optimizer.buckets}
    assert byDtype == {np.dtype(np.float32): ["a", "c"], np.dtype(np.float64): ["b"], np.dtype(np.float16): ["d"]}
    assert all(bucket.w.dtype == bucket.dtype for bucket in optimizer.buckets)
    local = RMSProp()
    local.setupOn(variables, useGlobalState=False)
    assert len(local.buckets) == len(variables)


def test_release_gives_private_copies(backend_name):
    var = Variable(np.arange(4, dtype=np.float32), name="v")
    optimizer = RMSProp()
    optimizer.setupOn([var], useGlobalState=True)
    flat = optimizer.buckets[0].w
    optimizer.release()
    assert not np.shares_memory(var.data, flat)
    np.testing.assert_array_equal(host(var.data), np.arange(4))
    flat[...] = -1
    np.testing.assert_array_equal(host(var.data), np.arange(4))


def _tensors(count: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    gen = np.random.default_rng(seed)
    return [(gen.standard_normal(size).astype(np.float32), gen.standard_normal(size).astype(np.float32))
            for _ in range(count)]


@pytest.mark.parametrize("multipliers", [None, [1.0] * 150 + [0.5] * 100 + [1.0] * 50])
def test_adjacent_segments_with_equal_settings_run_as_one(backend_name, multipliers):
    """300 tensors of 700: the kernel runs over runs of equal settings in blocks of blockElems, and every weight and
    state buffer equals what one optimizer per tensor (local state, one segment each) computes, bit for bit."""
    pairs = _tensors(300, 700, seed=3)
    runs = []
    for useGlobalState in (True, False):
        variables = [Variable(w.copy(), name=f"p{i}") for i, (w, _) in enumerate(pairs)]
        for var, mult in zip(variables, multipliers or [1.0] * len(variables)):
            var.learnRate = mult
        optimizer = RMSProp(learnRate=lambda t: 1e-2 / (1 + t), factor=0.9, momentum=0.5, centered=True)
        optimizer.setupOn(variables, useGlobalState=useGlobalState)
        layouts = []
        for step in range(3):
            optimizer.zeroGradParams()
            for var, (_, g) in zip(variables, pairs):
                var.grad[...] = backends.current().to_device((step + 1) * g)
            assert optimizer.update()
            layouts.append(optimizer.buckets[0].kernelLayout)
        runs.append(([host(v.data) for v in variables], [optimizer.stateOf(f"p{i}") for i in range(len(pairs))],
                     layouts))
    (globalWeights, globalState, layouts), (localWeights, localState, _) = runs
    blockElems = backends.current().blockElems
    sizes = [700 * 300] if multipliers is None else [700 * 150, 700 * 100, 700 * 50]
    assert layouts[0] is layouts[1] is layouts[2]  # a schedule moving lr keeps the runs
    assert layouts[0].numSegments == len(sizes)
    assert layouts[0].hostBlocks.shape[0] == sum(-(-n // blockElems) for n in sizes)
    for i in range(len(pairs)):
        np.testing.assert_array_equal(globalWeights[i], localWeights[i])
        for name in ("ms", "mg", "mom"):
            np.testing.assert_array_equal(host(globalState[i][name]), host(localState[i][name]))


def test_clipping_runs_per_segment_and_a_nan_is_named_after_a_coalesced_check(backend_name):
    """clipNorm needs each tensor's norm: the kernel layout stays per segment. The finiteness check runs over
    the runs of segments first, and still names the variable that holds the NaN."""
    pairs = _tensors(4, 50, seed=5)
    variables = [Variable(w.copy(), name=f"p{i}") for i, (w, _) in enumerate(pairs)]
    optimizer = RMSProp(clipNorm=1.0)
    optimizer.setupOn(variables, useGlobalState=True)
    for var, (_, g) in zip(variables, pairs):
        var.grad[...] = backends.current().to_device(g)
    assert optimizer.update()
    bucket = optimizer.buckets[0]
    assert bucket.kernelLayout is bucket.layout and bucket.runLayout.numSegments == 1
    optimizer = RMSProp()
    optimizer.setupOn(variables, useGlobalState=True)
    for var, (_, g) in zip(variables, pairs):
        var.grad[...] = backends.current().to_device(g)
    variables[2].grad[7] = np.inf
    before = [host(var.data).copy() for var in variables]
    with pytest.raises(FloatingPointError, match="variable 'p2'"):
        optimizer.update()
    assert all(np.array_equal(host(var.data), b) for var, b in zip(variables, before))


def test_the_buffers_a_kernel_streams_through_start_at_distinct_page_offsets(backend_name):
    """Weights, gradients and each state buffer of a bucket start at different offsets within a page (no 4K
    aliasing between the kernel's streams), hold their initial values and stay contiguous."""
    variables = [Variable(np.full(50_000, 0.5, np.float32), name=f"p{i}") for i in range(3)]
    optimizer = RMSProp(centered=True, momentum=0.9, initialMeanSquare=1.0)
    optimizer.setupOn(variables, useGlobalState=True)
    bucket = optimizer.buckets[0]
    buffers = [bucket.weights(), bucket.grads()] + [bucket.state[name] for name in ("ms", "mg", "mom")]
    assert all(b.flags.c_contiguous and b.size == 150_000 and b.dtype == np.float32 for b in buffers)
    offsets = [b.ctypes.data % 4096 for b in buffers]
    assert len(set(offsets)) == 5 and all(offset % 64 == 0 for offset in offsets)
    assert (bucket.weights() == 0.5).all() and (bucket.state["ms"] == 1.0).all() and not bucket.state["mom"].any()
