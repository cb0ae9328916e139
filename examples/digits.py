"""Recognise handwritten digits (8x8 pixels, UCI) with an MLP and RMSProp.

The data ship with the project (``examples/data/digits.csv.gz``: the 1,797 images of the UCI "Optical
Recognition of Handwritten Digits" test set, 64 pixel counts in 0..16 and the digit per row; CC BY 4.0,
see ``examples/data/digits.LICENSE.md``). ``--seed`` picks a split of 1,257 training, 180 validation and
360 test images; pixels are scaled to [0, 1]. The network is
``Linear(64, 128) - relu - Linear(128, 64) - relu - Linear(64, 10)`` with softmax cross-entropy, trained
on minibatches of 32 with ``RMSProp(factor=0.9)`` and global state; the learning rate follows a cosine decay
from 0.003 down to 5% of that over the run. The 17,226 parameters stay below the size at which the Numba
backend goes parallel, so a busy machine does not slow the small steps down. Each epoch shows a
progress bar over its minibatches, then the loss and accuracy on the training and validation sets; the
test set is scored once, at the end. The plot holds the learning curves and the misclassified test digits.

Run ``python examples/digits.py [--backend numba] [--epochs 20] [--seed 0]``.
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends import gpuarray
from example_support import (EXAMPLES_DIR, ProgressBar, parse_args, plot_curves, pyplot, run, save_figure,
                             select_backend)
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import CrossEntropy
from puzzle_rms.modules import Activation, Linear, relu
from puzzle_rms.optimizers import CosineDecay, RMSProp

DATA = EXAMPLES_DIR / "data" / "digits.csv.gz"
IMAGES, PIXELS, CLASSES = 1797, 64, 10
VALIDATION, TEST, BATCH = 180, 360, 32
LEARN_RATE = 0.003


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts ``(1797, 64)`` float32 in 0..16 (row-major 8x8 images) and digits ``(1797,)`` int64."""
    with gzip.open(DATA, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    if table.shape != (IMAGES, PIXELS + 1):
        raise ValueError(f"{DATA}: expected {IMAGES} rows of {PIXELS} pixels and a label, got shape {table.shape}")
    return table[:, :PIXELS], table[:, PIXELS].astype(np.int64)


def build_net(gen: np.random.Generator) -> Sequential:
    net = Sequential()
    net.extend([Linear(PIXELS, 128, rng=gen), Activation(relu), Linear(128, 64, rng=gen), Activation(relu),
                Linear(64, CLASSES, rng=gen)])
    return net


def train(backend: Optional[str] = None, epochs: int = 20, seed: int = 0, learnRate: float = LEARN_RATE,
          verbose: bool = True) -> dict:
    """Train the classifier and return its metrics.

    Parameters
    ----------
    backend : str, optional
        Backend name; None keeps the current backend (``PUZZLE_RMS_BACKEND`` at first use).
    epochs, seed, learnRate
        Passes over the training set, the seed of split, weights and shuffling, RMSProp's initial step size
        (cosine-decayed to 5% of it by the last step).
    verbose : bool
        Show a progress bar per epoch and one line of metrics after it.

    Returns
    -------
    dict
        ``backend``; per-epoch lists ``trainLoss``, ``trainAccuracy``, ``validationLoss``,
        ``validationAccuracy``; ``testAccuracy`` at the end; ``misclassified``, a list of
        ``(image (8, 8), true digit, predicted digit)`` for the test images the network gets wrong.
    """
    chosen = select_backend(backend)
    pixels, digits = load_digits()
    gen = np.random.default_rng(seed)
    order = gen.permutation(IMAGES)
    testRows, validationRows, trainRows = order[:TEST], order[TEST:TEST + VALIDATION], order[TEST + VALIDATION:]
    scaled = pixels / np.float32(16.0)
    sets = {name: (gpuarray.to_gpu(scaled[rows]), gpuarray.to_gpu(digits[rows]))
            for name, rows in (("train", trainRows), ("validation", validationRows), ("test", testRows))}

    net = build_net(gen)
    loss = CrossEntropy()
    batches = -(-trainRows.size // BATCH)
    optimizer = RMSProp(learnRate=CosineDecay(learnRate, decaySteps=epochs * batches, alpha=0.05), factor=0.9)
    optimizer.setupOn(net, useGlobalState=True)
    if verbose:
        print(f"backend: {backends.describe()}")
        print(f"{trainRows.size} training, {validationRows.size} validation and {testRows.size} test images, "
              f"{sum(v.size for v in net.namedVariables().values())} parameters")

    history: dict[str, list[float]] = {"trainLoss": [], "trainAccuracy": [], "validationLoss": [],
                                       "validationAccuracy": []}
    trainX, trainY = sets["train"]
    for epoch in range(1, epochs + 1):
        bar = ProgressBar(batches, f"epoch {epoch:3d}/{epochs}", enabled=verbose)
        shuffled = gen.permutation(trainRows.size)
        for index, start in enumerate(range(0, trainRows.size, BATCH), 1):
            rows = gpuarray.to_gpu(shuffled[start:start + BATCH])
            error, grad = loss(net(trainX[rows]), trainY[rows])
            optimizer.zeroGradParams()
            net.backward(grad)
            optimizer.update()
            bar.update(index)
        for name in ("train", "validation"):
            scores = net(sets[name][0])
            history[f"{name}Loss"].append(loss(scores, sets[name][1])[0])
            history[f"{name}Accuracy"].append(loss.getAccuracy(scores, sets[name][1]))
        bar.finish(f"train loss {history['trainLoss'][-1]:.4f} accuracy {history['trainAccuracy'][-1]:.3f}  "
                   f"validation loss {history['validationLoss'][-1]:.4f} "
                   f"accuracy {history['validationAccuracy'][-1]:.3f}")

    predicted = gpuarray.get(net(sets["test"][0])).argmax(axis=1)
    wrong = np.flatnonzero(predicted != digits[testRows])
    testAccuracy = 1.0 - wrong.size / testRows.size
    if verbose:
        print(f"final: test accuracy {testAccuracy:.4f} ({testRows.size - wrong.size}/{testRows.size}), "
              f"validation accuracy {history['validationAccuracy'][-1]:.4f}")
    misclassified = [(pixels[testRows[i]].reshape(8, 8), int(digits[testRows[i]]), int(predicted[i])) for i in wrong]
    return {"backend": chosen.name, **history, "testAccuracy": testAccuracy, "misclassified": misclassified}


def save_digits_plot(path: Optional[Path], metrics: dict, notes: list[str]) -> Optional[Path]:
    """Loss and accuracy curves and a grid of the misclassified test digits (true -> predicted) in one PNG."""
    if path is None:
        return None
    plt = pyplot()
    if plt is None:
        return None
    figure = plt.figure(figsize=(14, 5), layout="constrained")
    curvesPart, digitsPart = figure.subfigures(1, 2, width_ratios=[2, 1.1])
    lossAxes, accuracyAxes = curvesPart.subplots(1, 2)
    plot_curves(lossAxes, {"train": metrics["trainLoss"], "validation": metrics["validationLoss"]},
                "cross-entropy", notes, log=True)
    lossAxes.set_title(f"Handwritten digits, RMSProp on {metrics['backend']}")
    plot_curves(accuracyAxes, {"train": metrics["trainAccuracy"], "validation": metrics["validationAccuracy"]},
                "accuracy", [], log=False)
    accuracyAxes.axhline(metrics["testAccuracy"], color="0.3", linestyle="--", linewidth=1,
                         label=f"test, at the end ({metrics['testAccuracy']:.4f})")
    accuracyAxes.legend(loc="lower right")
    accuracyAxes.set_title("accuracy per epoch")
    rows, columns = 3, 5
    wrong = metrics["misclassified"]
    shown = wrong[:rows * columns]
    digitsPart.suptitle(f"misclassified test digits: {len(wrong)}" + (f", first {len(shown)}" if shown != wrong else "")
                        + "\ntrue \u2192 predicted")
    for index, axes in enumerate(digitsPart.subplots(rows, columns).flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index < len(shown):
            image, true, guess = shown[index]
            axes.imshow(image, cmap="gray_r", vmin=0, vmax=16)
            axes.set_title(f"{true} \u2192 {guess}", fontsize=10, color="firebrick")
        else:
            axes.axis("off")
    return save_figure(plt, figure, path, "learning curves and misclassified digits")


def main(args: argparse.Namespace) -> dict:
    metrics = train(args.backend, args.epochs, args.seed)
    notes = [f"test accuracy {metrics['testAccuracy']:.4f}", f"{args.epochs} epochs, batch {BATCH}, seed {args.seed}",
             f"RMSProp lr {LEARN_RATE} cosine to 5%, factor 0.9", f"backend {metrics['backend']}"]
    save_digits_plot(args.plot, metrics, notes)
    return metrics


if __name__ == "__main__":
    sys.exit(run(main, parse_args(__doc__.splitlines()[0], epochs=20, plotName="digits.png")))
