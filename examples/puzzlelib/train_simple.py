"""The network of PuzzleLib's ``Optimizer.trainSimpleTest``: three bias-free/biased Linear layers with relu,
a float32 Cast, MSE, RMSProp(learnRate=1e-2) in global state, 200 steps from ``np.random.seed(0)``
(tests/goldens/puzzlelib/script_train_simple.json)."""
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
from puzzle_rms.modules import Activation, Cast, Linear, relu  # noqa: E402
from puzzle_rms.optimizers import RMSProp  # noqa: E402


def run(backend: Optional[str] = None, steps: int = 200) -> dict[str, Any]:
    """Seed, build, draw the data, train; the losses and the initial and final weights."""
    if backend is not None:
        backends.use(backend)
    np.random.seed(0)
    seq = Sequential()
    seq.append(Linear(128, 64, useBias=False))
    seq.append(Activation(relu))
    seq.append(Linear(64, 32, useBias=False))
    seq.append(Activation(relu))
    seq.append(Linear(32, 16))
    seq.calcMode(np.float32)
    seq.append(Cast(intype=np.float32, outtype=np.float32))
    initial = weights(seq)
    data = gpuarray.to_gpu(np.random.randn(16, 128).astype(np.float32))
    target = gpuarray.to_gpu(np.random.randn(16, 16).astype(np.float32))
    losses = train(seq, MSE(), RMSProp(learnRate=1e-2), data, target, steps)
    return {"losses": losses, "initialWeights": initial, "finalWeights": weights(seq)}


if __name__ == "__main__":
    result = run(parse_backend(__doc__.splitlines()[0]))
    for i in range(0, len(result["losses"]), 20):
        print(f"step {i + 1}: loss {result['losses'][i]:.6f}")
