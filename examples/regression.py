"""Fit a small MLP to a smooth synthetic function with RMSProp: the main example.

The data are generated from ``--seed``:
``y = sin(pi x0) x1 + 0.5 x2^2 - 0.3 x3 + 0.02 noise`` with ``x ~ U(-1, 1)^4``,
2,000 points split 1,600 for training and 400 for testing. The network is
``Linear(4, 64) - tanh - Linear(64, 64) - tanh - Linear(64, 1)`` trained on
minibatches of 64 with ``RMSProp(factor=0.9)`` and global state; the learning rate
follows a cosine decay from 0.005 down to 5% of that over the run.

Run ``python examples/regression.py [--backend numba] [--epochs 30] [--seed 0]``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np

from backends import gpuarray
from example_support import parse_args, run, save_loss_plot, select_backend
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import CosineDecay, RMSProp

SAMPLES, TRAIN, FEATURES, BATCH = 2000, 1600, 4, 64


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
          verbose: bool = True) -> dict:
    """Train the MLP and return its final metrics.

    Parameters
    ----------
    backend : str, optional
        Backend name; None keeps the current backend (``PUZZLE_RMS_BACKEND`` at first use).
    epochs, seed, learnRate
        Passes over the training set, the seed of data, weights and shuffling, RMSProp's initial step size
        (cosine-decayed to 5% of it by the last step).
    verbose : bool
        Print one line per epoch.

    Returns
    -------
    dict
        ``backend``; ``trainLoss`` and ``testLoss`` (the MSE cost, half the mean squared error) after
        each epoch as lists; ``testR2`` = 1 - mean((pred - y)^2) / var(y) on the test set at the end.
    """
    chosen = select_backend(backend)
    x, y = make_data(seed)
    gen = np.random.default_rng(seed + 1)
    net = build_net(gen)
    loss = MSE()
    stepsPerEpoch = -(-TRAIN // BATCH)
    optimizer = RMSProp(learnRate=CosineDecay(learnRate, decaySteps=epochs * stepsPerEpoch, alpha=0.05), factor=0.9)
    optimizer.setupOn(net, useGlobalState=True)

    trainX, trainY = gpuarray.to_gpu(x[:TRAIN]), gpuarray.to_gpu(y[:TRAIN])
    testX, testY = gpuarray.to_gpu(x[TRAIN:]), gpuarray.to_gpu(y[TRAIN:])
    if verbose:
        print(f"backend {chosen.name}: {TRAIN} training and {SAMPLES - TRAIN} test points, "
              f"{sum(v.size for v in net.getVarTable().values())} parameters")
    history: dict[str, list[float]] = {"trainLoss": [], "testLoss": []}
    for epoch in range(1, epochs + 1):
        order = gen.permutation(TRAIN)
        for start in range(0, TRAIN, BATCH):
            rows = gpuarray.to_gpu(order[start:start + BATCH])
            predictions = net(trainX[rows])
            error, grad = loss(predictions, trainY[rows])
            optimizer.zeroGradParams()
            net.backward(grad)
            optimizer.update()
        history["trainLoss"].append(loss(net(trainX), trainY)[0])
        history["testLoss"].append(loss(net(testX), testY)[0])
        if verbose:
            print(f"epoch {epoch:3d}/{epochs}  train loss {history['trainLoss'][-1]:.5f}  "
                  f"test loss {history['testLoss'][-1]:.5f}")
    residual = gpuarray.get(net(testX)).astype(np.float64) - y[TRAIN:]
    r2 = 1.0 - float(np.mean(residual ** 2) / np.var(y[TRAIN:].astype(np.float64)))
    if verbose:
        print(f"final: train loss {history['trainLoss'][-1]:.5f}, test loss {history['testLoss'][-1]:.5f}, "
              f"test R^2 {r2:.4f}")
    return {"backend": chosen.name, **history, "testR2": r2}


def main(args: argparse.Namespace) -> dict:
    metrics = train(args.backend, args.epochs, args.seed)
    save_loss_plot(args.plot, {"train": metrics["trainLoss"], "test": metrics["testLoss"]},
                   f"MLP regression, RMSProp on {metrics['backend']}", "MSE loss (half mean squared error)")
    return metrics


if __name__ == "__main__":
    sys.exit(run(main, parse_args(__doc__.splitlines()[0], epochs=30, plotName="regression_loss.png")))
