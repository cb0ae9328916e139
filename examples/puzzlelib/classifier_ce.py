"""A 3-class classifier: Linear(xavier)-relu-Linear(xavier), CrossEntropy, RMSProp(learnRate=0.01) in local
state, 80 steps from ``np.random.seed(5)``, then evalMode and validate
(tests/goldens/puzzlelib/script_classifier_ce.json)."""
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
from puzzle_rms.cost import CrossEntropy  # noqa: E402
from puzzle_rms.modules import Activation, Linear, relu  # noqa: E402
from puzzle_rms.optimizers import RMSProp  # noqa: E402

CENTRES = np.array([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0]], np.float32)


def run(backend: Optional[str] = None, steps: int = 80) -> dict[str, Any]:
    """Seed, build, draw 10 noisy points around each centre, train, validate."""
    if backend is not None:
        backends.use(backend)
    np.random.seed(5)
    net = Sequential()
    net.extend([Linear(4, 16, initscheme="xavier"), Activation(relu), Linear(16, 3, initscheme="xavier")])
    initial = weights(net)
    labels = np.repeat(np.arange(3), 10).astype(np.int32)
    data = (CENTRES[labels] + 0.5 * np.random.randn(30, 4)).astype(np.float32)
    data, labels = gpuarray.to_gpu(data), gpuarray.to_gpu(labels)
    ce = CrossEntropy()
    optimizer = RMSProp(learnRate=0.01)
    losses = train(net, ce, optimizer, data, labels, steps, useGlobalState=False)
    net.evalMode()
    return {"losses": losses, "initialWeights": initial, "finalWeights": weights(net),
            "validate": ce.validate(net(data), labels), "meanError": ce.getMeanError(), "net": net,
            "optimizer": optimizer}


if __name__ == "__main__":
    result = run(parse_backend(__doc__.splitlines()[0]))
    print(f"loss {result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}; "
          f"validation error rate {result['validate']:.3f}")
