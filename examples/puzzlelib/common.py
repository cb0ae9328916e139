"""What the PuzzleLib-API scripts share: picking the backend, the training loop and the weight table."""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.backends import gpuarray


def parse_backend(description: str, argv: Optional[Sequence[str]] = None) -> Optional[str]:
    """The ``--backend`` option (default: ``PUZZLE_RMS_BACKEND``, else auto)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=backends.NAMES, default=None)
    return parser.parse_args(argv).backend


def train(net: Any, cost: Any, optimizer: Any, data: Any, target: Any, steps: int,
          useGlobalState: bool = True) -> list[float]:
    """PuzzleLib's loop: cost, zeroGradParams, backward, update; the error of each step (before its update)."""
    optimizer.setupOn(net, useGlobalState=useGlobalState)
    losses = []
    for _ in range(steps):
        error, grad = cost(net(data), target)
        optimizer.zeroGradParams()
        net.backward(grad)
        optimizer.update()
        losses.append(float(error))
    return losses


def weights(module: Any) -> dict[str, np.ndarray]:
    """Every parameter as a host array under its first ``getVarTable`` name."""
    return {names[0]: gpuarray.get(var.data).copy() for var, names in module.getVarTable().items()}
