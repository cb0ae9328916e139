"""One rank of the data-parallel tests; started by tests/test_distributed.py as ``mpiexec -n 2 python mpi_worker.py``.

Usage: ``mpi_worker.py BACKEND TRANSPORT INPUTS.npz OUTDIR`` with TRANSPORT ``auto``, ``host``
or ``nccl`` (NodeInfo's ``nccl`` None, False, True; it only matters for CuPy buffers). Every rank trains a small
MLP (Linear 4->3, tanh, Linear 3->2, MSE) on its shard of the batches in
INPUTS, in several scenarios, and writes what it saw to ``OUTDIR/rank<r>.npz``;
the test process compares the ranks with each other and with a NumPy
reference. Any exception aborts the whole MPI job, so a failure never hangs.
"""
from __future__ import annotations

import sys
import traceback
from typing import Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.checkpoint import loadTraining, saveTraining
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE
from puzzle_rms.data import shardBatch
from puzzle_rms.distributed import NodeInfo
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import DynamicLossScale, ExponentialDecay, NonFiniteGradientError, RMSProp

BAD_STEP = 2  # the step at which rank 1 produces a non-finite gradient
RESUME_STEP = 2  # the step before which the "resume" scenario saves a checkpoint and loads it into a fresh model


def build_model(inputs: dict, rank: int) -> Sequential:
    """The MLP with this rank's initial weights (the ranks start different; setupOn broadcasts rank 0's)."""
    backend = backends.current()
    model = Sequential()
    model.extend([Linear(4, 3), Activation(tanh), Linear(3, 2)])
    for name, var in model.namedVariables().items():
        var.data = backend.to_device(inputs[f"init{rank}/{name}"])
    return model


def flat_params(model: Sequential) -> np.ndarray:
    backend = backends.current()
    return np.concatenate([backend.to_host(var.data).ravel() for var in model.namedVariables().values()])


def train(inputs: dict, node: Optional[NodeInfo], poison: float = 0.0, resumeFrom: Optional[str] = None,
          **options) -> dict:
    """Run every batch through one update; rank 1 writes ``poison`` into a gradient at BAD_STEP when nonzero.

    With ``node=None`` this is one process training on the whole batches. With ``resumeFrom`` (a file path), the
    run is checkpointed there before step RESUME_STEP and continues in a fresh model and optimizer loaded from it.
    Returns the parameters before the first and after every update, what each update returned and the loss scale
    each update ran with.
    """
    rank = 0 if node is None else node.rank

    def fresh() -> tuple[Sequential, RMSProp]:
        model = build_model(inputs, rank)
        optimizer = RMSProp(learnRate=ExponentialDecay(0.01, 0.5, 4), factor=0.9, epsilon=1e-5, momentum=0.5,
                            nodeinfo=node, **options)
        optimizer.setupOn(model, useGlobalState=True)
        return model, optimizer

    model, optimizer = fresh()
    cost = MSE()
    history, results, scales = [flat_params(model)], [], []
    for step in range(inputs["x"].shape[0]):
        if resumeFrom is not None and step == RESUME_STEP:
            saveTraining(resumeFrom, model, optimizer)
            model, optimizer = fresh()
            loadTraining(resumeFrom, model, optimizer)
        x, t = shardBatch(inputs["x"][step], node), shardBatch(inputs["t"][step], node)
        optimizer.zeroGradParams()
        _, grad = cost(model(x), t)
        model.backward(grad * optimizer.lossScaleValue)
        if poison and rank == 1 and step == BAD_STEP:
            model.namedVariables()["2.W"].grad[0, 0] = poison
        scales.append(optimizer.lossScaleValue)
        results.append(optimizer.update())
        history.append(flat_params(model))
    return {"history": np.array(history), "results": np.array(results), "scales": np.array(scales),
            "skipped": np.array(optimizer.skippedSteps)}


def raise_on_any_rank(inputs: dict, node: NodeInfo) -> dict:
    """nonFinite='raise': a NaN on rank 1 only must raise on both ranks and leave the weights untouched."""
    model = build_model(inputs, node.rank)
    optimizer = RMSProp(learnRate=0.01, nodeinfo=node, nonFinite="raise")
    optimizer.setupOn(model, useGlobalState=True)
    before = flat_params(model)
    optimizer.zeroGradParams()
    _, grad = MSE()(model(shardBatch(inputs["x"][0], node)), shardBatch(inputs["t"][0], node))
    model.backward(grad)
    if node.rank == 1:
        model.namedVariables()["0.b"].grad[1] = np.nan
    try:
        optimizer.update()
        raised = False
    except NonFiniteGradientError:
        raised = True
    return {"raised": np.array(raised), "unchanged": np.array(np.array_equal(before, flat_params(model)))}


def collectives(inputs: dict, node: NodeInfo) -> dict:
    """NodeInfo on raw buffers: float16 mean without float16 overflow, float64 mean, broadcasts, meanValue."""
    backend = backends.current()
    r = node.rank
    half = backend.to_device(np.array([60000.0, 1.0 + r, -2.5 * (r + 1)], dtype=np.float16))
    node.allreduceMean(half)
    double = backend.to_device(np.array([0.1 * (r + 1), -3.0 * r, 7.0], dtype=np.float64))
    node.allreduceMean(double)
    halfBcast = backend.to_device(np.array([1.5 + r, -r], dtype=np.float16))
    node.broadcast(halfBcast)
    intBcast = np.arange(5, dtype=np.int32) * (r + 1)
    node.broadcast(intBcast)
    errors = []
    for bad in (np.arange(4, dtype=np.int64), np.zeros((4, 4), np.float32)[:, 0], [1.0, 2.0]):
        try:
            node.allreduceMean(bad)
        except TypeError as error:
            errors.append(str(error))
    try:
        RMSProp(nodeinfo=node).setupOn(build_model(inputs, r), useGlobalState=False)
        localState = ""
    except ValueError as error:
        localState = str(error)
    return {"half": backend.to_host(half), "double": backend.to_host(double), "halfBcast": backend.to_host(halfBcast),
            "intBcast": intBcast, "meanValue": np.array(node.meanValue(float(r) + 0.25)),
            "errors": np.array(errors), "localState": np.array(localState)}


def backend_mismatch(node: NodeInfo, backendName: str) -> dict:
    """Rank 1 on another backend than rank 0: the first collective raises on every rank, naming both."""
    other = "numpy" if backendName != "numpy" else "numba"
    fresh = NodeInfo(comm=node.comm)
    if node.rank == 1:
        backends.use(other)
    try:
        fresh.broadcast(np.zeros(3))
        message = ""
    except RuntimeError as error:
        message = str(error)
    finally:
        backends.use(backendName)
    return {"message": np.array(message)}


TRANSPORTS = {"auto": None, "host": False, "nccl": True}


def main(backendName: str, transport: str, inputsPath: str, outDir: str) -> None:
    backends.use(backendName)
    inputs = dict(np.load(inputsPath))
    node = NodeInfo(nccl=TRANSPORTS[transport])
    node.useLocalDevice()
    out = {"rank": np.array(node.rank), "size": np.array(node.size),
           "initial": flat_params(build_model(inputs, node.rank))}
    scenarios = {
        "plain": train(inputs, node),
        "clip": train(inputs, node, globalClipNorm=float(inputs["clipNorm"])),
        "resume": train(inputs, node, resumeFrom=f"{outDir}/checkpoint.npz"),
        "skip": train(inputs, node, poison=np.nan, nonFinite="skip"),
        "dynamic": train(inputs, node, poison=np.inf, lossScale=DynamicLossScale(initialScale=1024.0)),
        "raise": raise_on_any_rank(inputs, node),
        "collectives": collectives(inputs, node),
        "mismatch": backend_mismatch(node, backendName),
        "bfloat16": train(inputs, node, stateDtype="bfloat16"),
        "int8": train(inputs, node, stateDtype="int8"),
        "int8-resume": train(inputs, node, resumeFrom=f"{outDir}/checkpoint-int8.npz", stateDtype="int8"),
    }
    for scenario, values in scenarios.items():
        out.update({f"{scenario}/{key}": value for key, value in values.items()})
    np.savez(f"{outDir}/rank{node.rank}.npz", **out)


if __name__ == "__main__":
    from mpi4py import MPI

    try:
        main(*sys.argv[1:])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
