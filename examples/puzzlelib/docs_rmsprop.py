"""PuzzleLib's RMSProp documentation loop (the README quick start): Linear-relu-Linear, MSE, 100 steps.

From ``np.random.seed(0)`` it gives the losses real PuzzleLib 1.0.2 prints, step by step
(tests/goldens/puzzlelib/script_docs_rmsprop.json; tests/test_puzzlelib_scripts.py compares).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parse_backend, train, weights  # noqa: E402

from puzzle_rms import backends  # noqa: E402
from puzzle_rms.backends import gpuarray  # noqa: E402
from puzzle_rms.containers import Sequential  # noqa: E402
from puzzle_rms.cost import MSE  # noqa: E402
from puzzle_rms.modules import Activation, Linear, relu  # noqa: E402
from puzzle_rms.optimizers import RMSProp  # noqa: E402


def run(backend: Optional[str] = None, steps: int = 100) -> dict[str, Any]:
    """Seed, build, draw the data, train; the losses and the initial and final weights."""
    if backend is not None:
        backends.use(backend)
    np.random.seed(0)
    net = Sequential()
    net.extend([Linear(128, 64), Activation(relu), Linear(64, 1)])
    initial = weights(net)
    data = gpuarray.to_gpu(np.random.randn(16, 128).astype(np.float32))
    target = gpuarray.to_gpu(np.random.randn(16, 1).astype(np.float32))
    losses = train(net, MSE(), RMSProp(learnRate=0.001, factor=0.9), data, target, steps)
    return {"losses": losses, "initialWeights": initial, "finalWeights": weights(net)}


if __name__ == "__main__":
    result = run(parse_backend(__doc__.splitlines()[0]))
    print(f"loss at step 1: {result['losses'][0]:.6f}, after 100 steps: {result['losses'][-1]:.6f}")
