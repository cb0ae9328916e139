"""Train the regression MLP data-parallel: every MPI rank takes its share of each minibatch.

The data, network and schedule are those of ``examples/regression.py``
(imported from there). With ``--distributed`` each of the ``P`` processes
started by ``mpiexec`` holds a replica of the network, computes gradients on
``64 / P`` rows of every minibatch of 64 (:func:`puzzle_rms.data.shardBatch`),
and ``RMSProp(nodeinfo=NodeInfo())`` averages them across ranks before every
update, so ``P`` ranks take the same steps as one process on whole batches and
print the same losses (up to float32 rounding). Losses are measured on each
rank's share of the training and test sets and averaged over ranks. Only rank 0
prints and writes the plot. ``P`` must divide 16.

Run ``mpiexec -n 2 python examples/data_parallel.py --distributed [--backend numba] [--epochs 30] [--seed 0]``;
without ``--distributed`` it trains in one process. On several machines add a hostfile:
``mpiexec -f hostfile -n 4 ...`` (MPICH) or ``mpiexec --hostfile hostfile -n 4 ...`` (Open MPI).

With ``--distributed`` each rank runs one thread (Numba, OpenMP, OpenBLAS) unless the environment already sets
``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``: ranks on one machine share its cores,
and threads of several ranks competing for the same cores made steps 30x slower or worse on a 2-core machine.
With ``P`` ranks on a machine of ``C`` cores, ``C / P`` threads each is the fastest choice.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional, Sequence

if "--distributed" in sys.argv:  # before NumPy and Numba start their thread pools (as torchrun does)
    for _variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402 (after the thread settings)

from backends import gpuarray  # noqa: E402
from example_support import parse_args, run, save_loss_plot, select_backend  # noqa: E402
from puzzle_rms.cost import MSE  # noqa: E402
from puzzle_rms.data import shardBatch  # noqa: E402
from puzzle_rms.optimizers import CosineDecay, RMSProp  # noqa: E402
from regression import BATCH, SAMPLES, TRAIN, build_net, make_data  # noqa: E402


def train(backend: Optional[str] = None, epochs: int = 30, seed: int = 0, distributed: bool = False,
          learnRate: float = 0.005) -> dict:
    """Train on one process, or on every rank of the MPI world with ``distributed``; return the loss curves.

    Returns
    -------
    dict
        ``backend``, ``ranks``, ``root`` (whether this rank reports); ``trainLoss`` and ``testLoss`` (half the
        mean squared error over the whole training and test sets) after each epoch; ``epochSeconds``, the wall
        time of each epoch's training.
    """
    chosen = select_backend(backend)
    node = _node_info() if distributed else None
    ranks = 1 if node is None else node.size
    divisor = int(np.gcd.reduce([BATCH, TRAIN, SAMPLES - TRAIN]))
    if divisor % ranks:
        raise SystemExit(f"error: {ranks} ranks do not split minibatches of {BATCH}, {TRAIN} training and "
                         f"{SAMPLES - TRAIN} test rows evenly; use a number of ranks that divides {divisor}")
    if node is not None:
        node.useLocalDevice()
    root = node is None or node.isRoot
    x, y = make_data(seed)
    gen = np.random.default_rng(seed + 1)  # the same stream on every rank: same weights, same minibatch order
    net = build_net(gen)
    loss = MSE()
    stepsPerEpoch = -(-TRAIN // BATCH)
    optimizer = RMSProp(learnRate=CosineDecay(learnRate, decaySteps=epochs * stepsPerEpoch, alpha=0.05), factor=0.9,
                        nodeinfo=node)
    optimizer.setupOn(net, useGlobalState=True)

    trainX, trainY = gpuarray.to_gpu(x[:TRAIN]), gpuarray.to_gpu(y[:TRAIN])
    testX, testY = gpuarray.to_gpu(x[TRAIN:]), gpuarray.to_gpu(y[TRAIN:])
    if root:
        print(f"backend {chosen.name}, {ranks} rank{'s' if ranks > 1 else ''}: minibatches of {BATCH} rows, "
              f"{BATCH // ranks} per rank; {sum(v.size for v in net.getVarTable().values())} parameters")

    def measured(inputs: Any, targets: Any) -> float:
        error = loss(net(shardBatch(inputs, node)), shardBatch(targets, node))[0]
        return error if node is None else node.meanValue(error)

    history: dict[str, list[float]] = {"trainLoss": [], "testLoss": [], "epochSeconds": []}
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = gen.permutation(TRAIN)
        for first in range(0, TRAIN, BATCH):
            rows = gpuarray.to_gpu(shardBatch(order[first:first + BATCH], node))
            _, grad = loss(net(trainX[rows]), trainY[rows])
            optimizer.zeroGradParams()
            net.backward(grad)
            optimizer.update()
        history["epochSeconds"].append(time.perf_counter() - start)
        history["trainLoss"].append(measured(trainX, trainY))
        history["testLoss"].append(measured(testX, testY))
        if root:
            print(f"epoch {epoch:3d}/{epochs}  train loss {history['trainLoss'][-1]:.5f}  "
                  f"test loss {history['testLoss'][-1]:.5f}  ({history['epochSeconds'][-1]:.2f} s)")
    if root:
        print(f"final: train loss {history['trainLoss'][-1]:.5f}, test loss {history['testLoss'][-1]:.5f} "
              f"({SAMPLES - TRAIN} test points)")
    return {"backend": chosen.name, "ranks": ranks, "root": root, **history}


def _node_info() -> Any:
    """NodeInfo over the MPI world, or exit with the install hint when mpi4py is missing."""
    try:
        from puzzle_rms.distributed import NodeInfo

        return NodeInfo()
    except ImportError as error:
        raise SystemExit(f"error: {error}") from error


def main(args: argparse.Namespace) -> dict:
    metrics = train(args.backend, args.epochs, args.seed, args.distributed)
    if metrics["root"]:
        save_loss_plot(args.plot, {"train": metrics["trainLoss"], "test": metrics["testLoss"]},
                       f"data-parallel MLP regression, {metrics['ranks']} rank(s) on {metrics['backend']}",
                       "MSE loss (half the mean squared error)")
    return metrics


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The common example options plus ``--distributed``."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--distributed", action="store_true",
                     help="train on every rank of the MPI world (start with mpiexec -n P)")
    known, rest = own.parse_known_args(argv)
    args = parse_args(__doc__.splitlines()[0] + " Add --distributed under mpiexec.", epochs=30,
                      plotName="data_parallel_loss.png", argv=rest)
    args.distributed = known.distributed
    return args


if __name__ == "__main__":
    sys.exit(run(main, parse()))
