"""One rank of the failure tests of data-parallel training (tests/test_distributed_failures.py).

Usage: ``mpi_failure_worker.py SCENARIO OUTDIR``, started as ``mpiexec -n 2 python [-m mpi4py] mpi_failure_worker.py``.
This script installs no exception handling of its own: what ends the job (or hangs it) is the library's.

Scenarios:
  ``uncaught``     rank 1 dies of an uncaught exception at its second step; rank 0 goes on training.
  ``fewer-steps``  rank 1 runs 2 updates and exits normally; rank 0 runs 3 (NodeInfo timeout 3 s).
  ``shapes``       rank 1 builds Linear layers (5, 7, 2) where rank 0 builds (4, 8, 2): same parameter count.
  ``learn-rate``   rank 1 uses learnRate 0.02 where rank 0 uses 0.01.
The two mismatch scenarios write the message each rank's setupOn raised to ``OUTDIR/rank<r>.txt``.
"""
from __future__ import annotations

import sys

import numpy as np

from puzzle_rms import backends
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE
from puzzle_rms.distributed import NodeInfo
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import RMSProp


def model(sizes: tuple[int, ...]) -> Sequential:
    net = Sequential()
    net.extend([Linear(sizes[0], sizes[1]), Activation(tanh), Linear(sizes[1], sizes[2])])
    return net


def train(node: NodeInfo, net: Sequential, optimizer: RMSProp, steps: int, failAt: int = -1) -> None:
    rng = np.random.default_rng(node.rank)
    cost = MSE()
    for step in range(steps):
        if step == failAt:
            raise RuntimeError(f"rank {node.rank} failed on purpose at step {step}")
        x = rng.standard_normal((4, net[0].W.shape[0])).astype(np.float32)
        t = rng.standard_normal((4, 2)).astype(np.float32)
        optimizer.zeroGradParams()
        _, grad = cost(net(x), t)
        net.backward(grad)
        optimizer.update()


def main(scenario: str, outDir: str) -> None:
    backends.use("numpy")
    node = NodeInfo(timeout=3.0 if scenario == "fewer-steps" else 60.0)
    sizes = (5, 7, 2) if scenario == "shapes" and node.rank == 1 else (4, 8, 2)
    learnRate = 0.02 if scenario == "learn-rate" and node.rank == 1 else 0.01
    net = model(sizes)
    optimizer = RMSProp(learnRate=learnRate, nodeinfo=node)
    if scenario in ("shapes", "learn-rate"):
        try:
            optimizer.setupOn(net, useGlobalState=True)
            message = "no error"
        except ValueError as error:
            message = str(error)
        with open(f"{outDir}/rank{node.rank}.txt", "w") as stream:
            stream.write(message)
        return
    optimizer.setupOn(net, useGlobalState=True)
    if scenario == "uncaught":
        train(node, net, optimizer, steps=1000, failAt=1 if node.rank == 1 else -1)
    elif scenario == "fewer-steps":
        train(node, net, optimizer, steps=2 if node.rank == 1 else 3)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
