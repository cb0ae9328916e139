"""Replicate, Parallel and Concat: a Graph with ``(node, slot)`` parents and the same pieces in a Sequential,
each trained 60 steps with MSE and RMSProp(learnRate=0.01) in global state from ``np.random.seed(3)``
(tests/goldens/puzzlelib/script_graph_replicate_concat.json)."""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parse_backend, train, weights  # noqa: E402

from puzzle_rms import backends  # noqa: E402
from puzzle_rms.backends import gpuarray  # noqa: E402
from puzzle_rms.containers import Graph, Parallel, Sequential  # noqa: E402
from puzzle_rms.cost import MSE  # noqa: E402
from puzzle_rms.modules import Activation, Concat, Linear, Replicate, sigmoid, tanh  # noqa: E402
from puzzle_rms.optimizers import RMSProp  # noqa: E402


def buildGraph() -> Graph:
    """inp -> tanh -> Replicate(2) -> Parallel(left, right); Concat of both branches and one replica -> out."""
    inp = Linear(6, 5, name="inp").node()
    act = Activation(tanh, name="act").node(inp)
    rep = Replicate(2, name="rep").node(act)
    branches = Parallel(name="par")
    branches.append(Linear(5, 4, name="left")).append(Linear(5, 3, name="right"))
    par = branches.node(rep)
    cat = Concat(axis=1, name="cat").node((par, [0, 1]), (rep, 0))
    out = Linear(12, 2, name="out").node(cat)
    return Graph(inputs=inp, outputs=out)


def buildSequential() -> Sequential:
    """Linear -> sigmoid -> Replicate(2) -> Parallel(Linear, Linear) -> Concat -> Linear."""
    seq = Sequential()
    seq.append(Linear(6, 5))
    seq.append(Activation(sigmoid))
    seq.append(Replicate(times=2))
    branches = Parallel()
    branches.append(Linear(5, 4)).append(Linear(5, 3))
    seq.append(branches)
    seq.append(Concat(axis=1))
    seq.append(Linear(7, 2))
    return seq


def run(backend: Optional[str] = None, steps: int = 60) -> dict[str, Any]:
    """Seed, build both networks (in this order), draw the data, train each; losses and weights of both."""
    if backend is not None:
        backends.use(backend)
    np.random.seed(3)
    graph = buildGraph()
    seq = buildSequential()
    results = {"graph": {"initialWeights": weights(graph)}, "sequential": {"initialWeights": weights(seq)}}
    data = gpuarray.to_gpu(np.random.randn(10, 6).astype(np.float32))
    target = gpuarray.to_gpu(np.random.randn(10, 2).astype(np.float32))
    for key, net in (("graph", graph), ("sequential", seq)):
        optimizer = RMSProp(learnRate=0.01)
        results[key]["losses"] = train(net, MSE(), optimizer, data, target, steps)
        results[key]["finalWeights"] = weights(net)
        results[key]["optimizer"] = optimizer
    return results


if __name__ == "__main__":
    result = run(parse_backend(__doc__.splitlines()[0]))
    for key in ("graph", "sequential"):
        print(f"{key}: loss {result[key]['losses'][0]:.6f} -> {result[key]['losses'][-1]:.6f}")
