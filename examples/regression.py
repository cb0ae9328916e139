"""Fit a small MLP to a smooth synthetic function with RMSProp: the main example.

The data are generated from ``--seed``:
``y = sin(pi x0) x1 + 0.5 x2^2 - 0.3 x3 + 0.02 noise`` with ``x ~ U(-1, 1)^4``,
2,000 points split 1,600 for training and 400 for testing. The network is
``Linear(4, 64) - tanh - Linear(64, 64) - tanh - Linear(64, 1)`` trained on
minibatches of 64 with ``RMSProp(factor=0.9)`` and global state; the learning rate
follows a cosine decay from 0.005 down to 5% of that over the run.

Run ``python examples/regression.py [--backend numba] [--epochs 30] [--seed 0]``.

Data-parallel: ``mpiexec -n 2 python -m mpi4py examples/regression.py --distributed [...]``
trains on every rank of the MPI world. Each rank holds a replica of the network,
computes gradients on ``64 / P`` rows of every minibatch
(:func:`puzzle_rms.data.shardBatch`), and ``RMSProp(nodeinfo=NodeInfo())``
averages them across ranks before every update, so ``P`` ranks take the same
steps as one process and print the same losses (up to float32 rounding); losses
are measured on each rank's share of the data and averaged over ranks. Only rank
0 prints and writes the plot. ``P`` must divide 16. On several machines add a
hostfile: ``mpiexec -f hostfile -n 4 ...`` (MPICH) or ``mpiexec --hostfile
hostfile -n 4 ...`` (Open MPI). With ``--distributed`` each rank runs one thread
(Numba, OpenMP, OpenBLAS) unless ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS``/
``OPENBLAS_NUM_THREADS`` are set: ranks on one machine share its cores, and
threads of several ranks competing for them made steps 30x slower or worse on a
2-core machine (with ``P`` ranks on ``C`` cores, ``C / P`` threads each is fastest).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Optional

if __name__ == "__main__" and "--distributed" in sys.argv:  # before NumPy and Numba start their thread pools
    for _variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402 (after the thread settings)

from puzzle_rms import backends  # noqa: E402
from puzzle_rms.backends import gpuarray  # noqa: E402
from example_support import parse_args, run, save_loss_plot, select_backend  # noqa: E402
from puzzle_rms.containers import Sequential  # noqa: E402
from puzzle_rms.cost import MSE  # noqa: E402
from puzzle_rms.data import shardBatch  # noqa: E402
from puzzle_rms.modules import Activation, Linear, tanh  # noqa: E402
from puzzle_rms.optimizers import CosineDecay, RMSProp  # noqa: E402

SAMPLES, TRAIN, FEATURES, BATCH = 2000, 1600, 4, 64
MAX_RANKS = math.gcd(BATCH, TRAIN, SAMPLES - TRAIN)  # every rank count that divides it splits all three evenly


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(2000, 4)`` and targets ``(2000, 1)``, float32, the same for the same seed."""
    gen = np.random.default_rng(seed)
    x = gen.uniform(-1.0, 1.0, size=(SAMPLES, FEATURES))
    y = np.sin(np.pi * x[:, 0]) * x[:, 1] + 0.5 * x[:, 2] ** 2 - 0.3 * x[:, 3] + 0.02 * gen.standard_normal(SAMPLES)
    return x.astype(np.float32), y[:, None].astype(np.float32)


def build_net(gen: np.random.Generator) -> Sequential:
    net = Sequential()
    net.extend([Linear(FEATURES, 64, rng=gen), Activation(tanh), Linear(64, 64, rng=gen), Activation(tanh),
                Linear(64, 1, rng=gen)])
    return net


def train(backend: Optional[str] = None, epochs: int = 30, seed: int = 0, learnRate: float = 0.005,
          verbose: bool = True, nodeinfo: Any = None) -> dict:
    """Train the MLP, in one process or data-parallel over the ranks of ``nodeinfo``; return its final metrics.

    Parameters
    ----------
    backend : str, optional
        Backend name; None keeps the current backend (``PUZZLE_RMS_BACKEND`` at first use).
    epochs, seed, learnRate
        Passes over the training set, the seed of data, weights and shuffling, RMSProp's initial step size
        (cosine-decayed to 5% of it by the last step).
    verbose : bool
        Print one line per epoch (on rank 0 only).
    nodeinfo : NodeInfo, optional
        Train data-parallel over its ranks (each on its shard of every minibatch, gradients averaged by the
        optimizer; the number of ranks must divide :data:`MAX_RANKS`); None trains in this process alone.

    Returns
    -------
    dict
        ``backend``; ``trainLoss`` and ``testLoss`` (the MSE cost, half the mean squared error, over the whole
        sets) after each epoch as lists; ``testR2`` = 1 - mean((pred - y)^2) / var(y) on the test set at the end.
    """
    ranks = check_ranks(nodeinfo)
    chosen = select_backend(backend)
    if nodeinfo is not None:
        nodeinfo.useLocalDevice()  # on CuPy, each rank of a machine on its own GPU
    verbose = verbose and (nodeinfo is None or nodeinfo.isRoot)
    x, y = make_data(seed)
    gen = np.random.default_rng(seed + 1)  # the same stream on every rank: same weights, same minibatch order
    net = build_net(gen)
    loss = MSE()
    stepsPerEpoch = -(-TRAIN // BATCH)
    optimizer = RMSProp(learnRate=CosineDecay(learnRate, decaySteps=epochs * stepsPerEpoch, alpha=0.05), factor=0.9,
                        nodeinfo=nodeinfo)
    optimizer.setupOn(net, useGlobalState=True)

    def mean(value: float) -> float:
        """The mean over ranks of a value measured on each rank's equal share: the value over the whole set."""
        return value if nodeinfo is None else nodeinfo.meanValue(value)

    def measured(inputs: Any, targets: Any) -> float:
        return mean(loss(net(shardBatch(inputs, nodeinfo)), shardBatch(targets, nodeinfo))[0])

    trainX, trainY = gpuarray.to_gpu(x[:TRAIN]), gpuarray.to_gpu(y[:TRAIN])
    testX, testY = gpuarray.to_gpu(x[TRAIN:]), gpuarray.to_gpu(y[TRAIN:])
    if verbose:
        print(f"backend: {backends.describe()}")
        print(f"{TRAIN} training and {SAMPLES - TRAIN} test points, "
              f"{sum(v.size for v in net.namedVariables().values())} parameters"
              + (f"; {ranks} ranks, {BATCH // ranks} rows of every minibatch of {BATCH} each" if ranks > 1 else ""))
    history: dict[str, list[float]] = {"trainLoss": [], "testLoss": []}
    for epoch in range(1, epochs + 1):
        order = gen.permutation(TRAIN)
        for start in range(0, TRAIN, BATCH):
            rows = gpuarray.to_gpu(shardBatch(order[start:start + BATCH], nodeinfo))
            predictions = net(trainX[rows])
            error, grad = loss(predictions, trainY[rows])
            optimizer.zeroGradParams()
            net.backward(grad, updGrad=False)  # the data needs no gradient
            optimizer.update()
        history["trainLoss"].append(measured(trainX, trainY))
        history["testLoss"].append(measured(testX, testY))
        if verbose:
            print(f"epoch {epoch:3d}/{epochs}  train loss {history['trainLoss'][-1]:.5f}  "
                  f"test loss {history['testLoss'][-1]:.5f}")
    residual = gpuarray.get(net(shardBatch(testX, nodeinfo))).astype(np.float64) - shardBatch(y[TRAIN:], nodeinfo)
    r2 = 1.0 - mean(float(np.mean(residual ** 2))) / float(np.var(y[TRAIN:].astype(np.float64)))
    if verbose:
        print(f"final: train loss {history['trainLoss'][-1]:.5f}, test loss {history['testLoss'][-1]:.5f}, "
              f"test R^2 {r2:.4f}")
    return {"backend": chosen.name, **history, "testR2": r2}


def check_ranks(nodeinfo: Any) -> int:
    """The number of ranks of ``nodeinfo`` (1 for None); ValueError unless it divides :data:`MAX_RANKS`."""
    ranks = 1 if nodeinfo is None else nodeinfo.size
    if MAX_RANKS % ranks:
        raise ValueError(f"nodeinfo has {ranks} ranks, which do not split minibatches of {BATCH}, {TRAIN} training "
                         f"and {SAMPLES - TRAIN} test rows evenly; expected a number of ranks that divides {MAX_RANKS}")
    return ranks


def world() -> Any:
    """NodeInfo over the MPI world; exit with the reason if mpi4py is missing or its size does not divide MAX_RANKS."""
    try:
        from puzzle_rms.distributed import NodeInfo

        nodeinfo = NodeInfo()
        check_ranks(nodeinfo)
    except (ImportError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    return nodeinfo


def main(args: argparse.Namespace) -> dict:
    nodeinfo = world() if args.distributed else None
    metrics = train(args.backend, args.epochs, args.seed, nodeinfo=nodeinfo)
    if nodeinfo is None or nodeinfo.isRoot:
        notes = [f"test R\u00b2 {metrics['testR2']:.4f}", f"{args.epochs} epochs, batch {BATCH}, seed {args.seed}",
                 "RMSProp lr 0.005 cosine to 5%, factor 0.9",
                 f"backend {metrics['backend']}" + (f", {nodeinfo.size} ranks" if nodeinfo is not None else "")]
        save_loss_plot(args.plot, {"train": metrics["trainLoss"], "test": metrics["testLoss"]},
                       f"MLP regression, RMSProp on {metrics['backend']}", "MSE loss (half mean squared error)", notes)
    return metrics


if __name__ == "__main__":
    distributed = argparse.ArgumentParser(add_help=False)
    distributed.add_argument("--distributed", action="store_true",
                             help="train on every rank of the MPI world (start with mpiexec -n P python -m mpi4py ...)")
    sys.exit(run(main, parse_args(__doc__.splitlines()[0], epochs=30, plotName="regression_loss.png",
                                  parents=[distributed])))
