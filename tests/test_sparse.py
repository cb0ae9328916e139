"""Row-sparse gradients: Embedding's backward, lazy and dense-equivalent RMSProp updates, in local and global state."""
from __future__ import annotations

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Embedding, Linear
from puzzle_rms.optimizers import NonFiniteGradientError, RMSProp
from puzzle_rms.sparse import RowSparseGrad, RowSparseVariable, occurrence_rounds

F64 = dict(rtol=1e-10, atol=1e-12)
VOCAB, DIM = 30, 4
# each step's looked-up rows, with repeats (summed) and rows that come and go
BATCHES = [[3, 7, 3, 29], [0, 7, 12], [12, 12, 5, 3], [21]]


def host(x):
    return backends.current().to_host(x)


def dev(x):
    return backends.current().to_device(np.asarray(x))


def dense_of(indices, rows, shape):
    dense = np.zeros(shape)
    np.add.at(dense, np.asarray(indices), rows)
    return dense


def problem(seed=0):
    gen = np.random.default_rng(seed)
    table = gen.standard_normal((VOCAB, DIM))
    other = gen.standard_normal((3, 5))
    rows = [gen.standard_normal((len(b), DIM)) * s for b, s in zip(BATCHES, (1.0, 0.2, 3.0, 0.5))]
    otherGrads = [gen.standard_normal((3, 5)) for _ in BATCHES]
    return table, other, rows, otherGrads


OPTIONS = [
    dict(learnRate=0.05, epsilon=0.01, momentum=0.9),
    dict(learnRate=0.05, epsilon=0.01, centered=True, momentum=0.5, weightDecay=0.1, epsInSqrt=True),
    dict(learnRate=0.05, epsilon=0.01, decoupledWeightDecay=0.2, clipNorm=1.0, initialMeanSquare=1.0),
]


def run_rows(options, table, other, rows, otherGrads, useGlobalState, sparseUpdate):
    """An embedding table fed row-sparse gradients next to a dense variable, in one optimizer."""
    emb = RowSparseVariable(table.copy(), name="emb")
    dense = Variable(other.copy(), name="dense")
    optimizer = RMSProp(sparseUpdate=sparseUpdate, **options)
    optimizer.setupOn({"emb": emb, "dense": dense}, useGlobalState=useGlobalState)
    for batch, r, og in zip(BATCHES, rows, otherGrads):
        optimizer.zeroGradParams()
        half = len(batch) // 2  # two backward passes accumulate
        emb.rowGrad.add(dev(np.array(batch[:half], np.int64)), dev(r[:half]))
        emb.rowGrad.add(dev(np.array(batch[half:], np.int64)), dev(r[half:]))
        dense.grad[...] = dev(og)
        assert optimizer.update() is True
    return optimizer, host(emb.data), host(dense.data)


def reference_rows(w, grads, learnRate, factor=0.9, epsilon=1e-5, epsInSqrt=False, momentum=0.0, centered=False,
                   weightDecay=0.0, decoupledWeightDecay=0.0, clipNorm=None, initialMeanSquare=0.0, rowsOf=None):
    """RMSProp (lr inside the momentum) on the rows ``rowsOf[t]`` of ``w`` at step t only (all rows when None)."""
    w = np.array(w, dtype=np.float64)
    ms, mg, mom = np.full_like(w, initialMeanSquare), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads):
        rows = np.arange(w.shape[0]) if rowsOf is None else np.asarray(rowsOf[t])
        gr = g[rows]
        if clipNorm is not None:
            gr = gr * min(1.0, clipNorm / np.linalg.norm(gr))
        lr = learnRate
        wr = w[rows] * (1 - lr * decoupledWeightDecay)
        gr = gr + weightDecay * wr
        ms[rows] = factor * ms[rows] + (1 - factor) * gr * gr
        mg[rows] = factor * mg[rows] + (1 - factor) * gr
        var = np.maximum(ms[rows] - mg[rows] ** 2, 0) if centered else ms[rows]
        den = np.sqrt(var + epsilon) if epsInSqrt else np.sqrt(var) + epsilon
        mom[rows] = momentum * mom[rows] + lr * gr / den
        w[rows] = wr - (mom[rows] if momentum > 0 else lr * gr / den)
    return w, ms


# --- the gradient type and the module ---------------------------------------------------------------
def test_row_sparse_grad_sums_repeated_indices(backend_name):
    gen = np.random.default_rng(1)
    grad = RowSparseGrad((10, 2, 3), np.float64)
    pairs = [([4, 1, 4], gen.standard_normal((3, 2, 3))), ([1, 9], gen.standard_normal((2, 2, 3)))]
    for indices, rows in pairs:
        grad.add(dev(np.array(indices)), dev(rows))
    assert len(grad) == 5
    want = sum(dense_of(i, r, (10, 2, 3)) for i, r in pairs)
    np.testing.assert_allclose(host(grad.toDense()), want, **F64)
    indices, rows = grad.coalesce()
    assert host(indices).tolist() == [1, 4, 9] and rows.shape == (3, 6)
    np.testing.assert_allclose(host(rows), want[[1, 4, 9]].reshape(3, 6), **F64)
    grad.clear()
    assert len(grad) == 0 and host(grad.toDense()).sum() == 0


def test_row_sparse_grad_rejects_bad_rows(backend_name):
    grad = RowSparseGrad((10, 3), np.float32)
    with pytest.raises(ValueError, match=r"rows must have shape \(2, 3\) and dtype float32 .* got shape \(2, 4\)"):
        grad.add(dev(np.array([0, 1])), dev(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\), got the index 10"):
        grad.add(dev(np.array([0, 10])), dev(np.zeros((2, 3), np.float32)))
    assert len(grad) == 0


def test_embedding_forward_and_row_sparse_backward(backend_name):
    gen = np.random.default_rng(2)
    module = Embedding(VOCAB, DIM, rng=gen)
    table = host(module.W).copy()
    indices = np.array([[3, 7, 3], [29, 0, 7]])
    out = module(dev(indices))
    np.testing.assert_array_equal(host(out), table[indices])
    g = gen.standard_normal(out.shape).astype(np.float32)
    assert module.backward(dev(g)) is None
    var = module.vars["W"]
    assert isinstance(var, RowSparseVariable)
    np.testing.assert_array_equal(host(var.grad), np.zeros((VOCAB, DIM)))  # the dense gradient is not written
    np.testing.assert_allclose(host(var.denseGrad()), dense_of(indices.reshape(-1), g.reshape(-1, DIM),
                                                               (VOCAB, DIM)), rtol=1e-6)


def test_embedding_rejects_bad_indices(backend_name):
    module = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"input must lie in \[0, 5\), got the index 5"):
        module(dev(np.array([1, 5])))
    with pytest.raises(ValueError, match=r"input must lie in \[0, 5\), got the index -1"):
        module(dev(np.array([-1])))
    with pytest.raises(TypeError, match=r"input must have an integer dtype, got float32"):
        module(dev(np.array([1.0, 2.0])))
    with pytest.raises(ValueError, match=r"Embedding: vocab must be a positive integer, got 0"):
        Embedding(0, 3)


def test_embedding_calc_mode_keeps_row_sparse_gradients(backend_name):
    module = Embedding(6, 3, rng=np.random.default_rng(0))
    module.calcMode(np.float64)
    var = module.vars["W"]
    assert isinstance(var, RowSparseVariable) and var.dtype == np.float64
    module(dev(np.array([2, 2])))
    module.backward(dev(np.ones((2, 3))))
    np.testing.assert_allclose(host(var.denseGrad())[2], [2.0, 2.0, 2.0])


# --- the two update modes -----------------------------------------------------------------------------
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("options", OPTIONS, ids=["momentum", "centered-wd", "decoupled-clipnorm"])
def test_dense_mode_gives_the_dense_numbers(backend_name, options, useGlobalState):
    """sparseUpdate='dense': identical to the same optimizer given the scattered dense gradient."""
    table, other, rows, otherGrads = problem()
    _, gotTable, gotOther = run_rows(options, table, other, rows, otherGrads, useGlobalState, "dense")
    dense = [dense_of(b, r, table.shape) for b, r in zip(BATCHES, rows)]
    wantTable, _ = reference_rows(table, dense, **options)
    wantOther, _ = reference_rows(other, otherGrads, **options)
    np.testing.assert_allclose(gotTable, wantTable, **F64)
    np.testing.assert_allclose(gotOther, wantOther, **F64)
    lazy, _ = reference_rows(table, dense, rowsOf=[sorted(set(b)) for b in BATCHES], **options)
    assert np.abs(gotTable - lazy).max() > 1e-6  # these options tell the two modes apart


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("options", OPTIONS, ids=["momentum", "centered-wd", "decoupled-clipnorm"])
def test_lazy_mode_moves_only_listed_rows(backend_name, options, useGlobalState):
    """sparseUpdate='lazy': each step updates the listed rows (repeats summed) and their state, nothing else."""
    table, other, rows, otherGrads = problem()
    optimizer, gotTable, gotOther = run_rows(options, table, other, rows, otherGrads, useGlobalState, "lazy")
    dense = [dense_of(b, r, table.shape) for b, r in zip(BATCHES, rows)]
    wantTable, wantMs = reference_rows(table, dense, rowsOf=[sorted(set(b)) for b in BATCHES], **options)
    wantOther, _ = reference_rows(other, otherGrads, **options)
    np.testing.assert_allclose(gotTable, wantTable, **F64)
    np.testing.assert_allclose(host(optimizer.stateOf("emb")["ms"]), wantMs, **F64)
    np.testing.assert_allclose(gotOther, wantOther, **F64)
    never = sorted(set(range(VOCAB)) - set(sum(BATCHES, [])))
    np.testing.assert_array_equal(gotTable[never], table[never])
    for buffer in optimizer.stateOf("emb").values():
        np.testing.assert_array_equal(host(buffer)[never], np.full((len(never), DIM), host(buffer)[never][0, 0]))


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_lazy_mode_checks_rows_for_non_finite_values(backend_name, useGlobalState):
    table, other, rows, _ = problem()
    emb, dense = RowSparseVariable(table.copy(), name="emb"), Variable(other.copy(), name="dense")
    optimizer = RMSProp(learnRate=0.1, momentum=0.5, sparseUpdate="lazy")
    optimizer.setupOn({"emb": emb, "dense": dense}, useGlobalState=useGlobalState)
    bad = rows[0].copy()
    bad[1, 2] = np.nan
    emb.rowGrad.add(dev(np.array(BATCHES[0])), dev(bad))
    with pytest.raises(NonFiniteGradientError, match="'emb'"):
        optimizer.update()
    np.testing.assert_array_equal(host(emb.data), table)
    np.testing.assert_array_equal(host(dense.data), other)
    assert not host(optimizer.stateOf("emb")["ms"]).any()


@pytest.mark.parametrize("sparseUpdate", ["dense", "lazy"])
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_zero_grad_params_drops_pending_rows(backend_name, sparseUpdate, useGlobalState):
    table, other, rows, _ = problem()
    emb, dense = RowSparseVariable(table.copy(), name="emb"), Variable(other.copy(), name="dense")
    optimizer = RMSProp(learnRate=0.1, sparseUpdate=sparseUpdate)
    optimizer.setupOn({"emb": emb, "dense": dense}, useGlobalState=useGlobalState)
    emb.rowGrad.add(dev(np.array(BATCHES[0])), dev(rows[0]))
    dense.grad[...] = 1.0
    optimizer.zeroGradParams()
    assert len(emb.rowGrad) == 0 and not host(dense.grad).any()
    optimizer.update()
    np.testing.assert_array_equal(host(emb.data), table)


class FakeNodeInfo:
    """Stands in for a NodeInfo: setupOn rejects the combination before any collective runs."""

    def broadcast(self, flat):
        raise AssertionError("not reached")

    def allreduceMean(self, flat):
        raise AssertionError("not reached")

    def checkSame(self, what, description):
        raise AssertionError("not reached")


def test_lazy_rows_are_not_supported_with_nodeinfo(backend_name):
    optimizer = RMSProp(sparseUpdate="lazy", nodeinfo=FakeNodeInfo())
    with pytest.raises(ValueError, match=r"'emb' has row-sparse gradients, and sparseUpdate='lazy' is not supported"):
        optimizer.setupOn({"emb": RowSparseVariable(np.zeros((4, 2)), name="emb")}, useGlobalState=True)


def test_sparse_update_is_validated():
    with pytest.raises(ValueError, match=r"RMSProp: sparseUpdate must be one of 'dense', 'lazy', got 'sparse'"):
        RMSProp(sparseUpdate="sparse")


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_tf1_preset_trains_an_embedding_lazily(backend_name, useGlobalState):
    """End to end: Embedding -> Linear with the tf1 preset (lazy): untouched rows keep their values."""
    gen = np.random.default_rng(4)
    model = Sequential()
    model.extend([Embedding(VOCAB, DIM, rng=gen), Linear(DIM, 2, rng=gen)])
    optimizer = RMSProp.like("tf1", learning_rate=0.05, momentum=0.9)
    optimizer.setupOn(model, useGlobalState=useGlobalState)
    table = host(model[0].W).copy()
    linear = host(model[1].W).copy()
    for batch in BATCHES:
        optimizer.zeroGradParams()
        out = model(dev(np.array(batch)))
        model.backward(dev(gen.standard_normal(out.shape).astype(np.float32)))
        optimizer.update()
    seen = sorted(set(sum(BATCHES, [])))
    never = sorted(set(range(VOCAB)) - set(seen))
    np.testing.assert_array_equal(host(model[0].W)[never], table[never])
    assert (np.abs(host(model[0].W)[seen] - table[seen]).min(axis=1) > 0).all()
    assert np.abs(host(model[1].W) - linear).min() > 0


@pytest.mark.parametrize("masterWeights", [False, True])
@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
def test_lazy_mode_with_float16_tables(backend_name, useGlobalState, masterWeights):
    table, _, rows, _ = problem()
    table16 = table.astype(np.float16)
    emb = RowSparseVariable(table16.copy(), name="emb")
    optimizer = RMSProp(learnRate=0.05, epsilon=0.01, momentum=0.9, sparseUpdate="lazy", masterWeights=masterWeights)
    optimizer.setupOn([emb], useGlobalState=useGlobalState)
    for batch, r in zip(BATCHES, rows):
        optimizer.zeroGradParams()
        emb.rowGrad.add(dev(np.array(batch)), dev(r.astype(np.float16)))
        optimizer.update()
    dense = [dense_of(b, r.astype(np.float16).astype(np.float64), table.shape) for b, r in zip(BATCHES, rows)]
    want, _ = reference_rows(table16.astype(np.float64), dense, rowsOf=[sorted(set(b)) for b in BATCHES],
                             learnRate=0.05, epsilon=0.01, momentum=0.9)
    got = host(emb.data)
    assert got.dtype == np.float16 and host(optimizer.stateOf("emb")["ms"]).dtype == np.float32
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=2e-3, atol=2e-3)
    never = sorted(set(range(VOCAB)) - set(sum(BATCHES, [])))
    np.testing.assert_array_equal(got[never], table16[never])


def test_occurrence_rounds_split_repeats_in_order():
    rounds = occurrence_rounds(np.array([4, 1, 4, 4, 0, 1]))
    assert [r.tolist() for r in rounds] == [[0, 1, 4], [2, 5], [3]]
    assert occurrence_rounds(np.zeros(0, np.int64)) == []


def test_row_occurrences_clip_sumsq_and_squares(backend_name):
    """The per-occurrence views the Keras presets need: values clipped, norms and squares not summed first."""
    grad = RowSparseGrad((4, 2), np.float64)
    grad.add(dev(np.array([1, 3])), dev(np.array([[3.0, -1.0], [0.5, 2.0]])))
    grad.add(dev(np.array([1])), dev(np.array([[1.0, -4.0]])))
    assert grad.sumsq() == pytest.approx(9 + 1 + 0.25 + 4 + 1 + 16)
    unique, squared, summed = grad.squares()
    np.testing.assert_array_equal(host(unique), [1, 3])
    np.testing.assert_allclose(host(squared), [[10.0, 17.0], [0.25, 4.0]])
    np.testing.assert_allclose(host(summed), [[4.0, -5.0], [0.5, 2.0]])
    grad.clip(1.5)
    np.testing.assert_allclose(host(grad.toDense()), [[0, 0], [2.5, -2.5], [0, 0], [0.5, 1.5]])


def test_zero_grad_params_of_a_container_drops_an_embeddings_pending_rows(backend_name):
    seq = Sequential().append(Embedding(5, 2, rng=np.random.default_rng(0)))
    seq(np.array([1, 3]))
    seq.backward(np.ones((2, 2), np.float32))
    assert len(seq[0].vars["W"].rowGrad) == 2
    seq.zeroGradParams()
    assert len(seq[0].vars["W"].rowGrad) == 0
