"""Data-parallel scaling: training-step time on 1 and 2 MPI ranks, and how much of it is communication.

``python benchmarks/data_parallel_scaling.py [--backend numba] [--steps 20]`` starts, for each model size,
``mpiexec -n 1`` and ``mpiexec -n 2`` runs of this script in ``--worker`` mode and prints a Markdown table.
The model is ``depth`` Linear(width, width) layers with relu between them (``depth * width**2`` weights plus
biases), trained with RMSProp and global state on a fixed global batch (strong scaling: each of ``P`` ranks
computes on ``batch / P`` rows). Each step is split into

* compute: zero grads, forward, cost, backward;
* wait: a barrier before the all-reduce (how long the faster rank waits for the slower one);
* all-reduce: ``NodeInfo.allreduceMean`` of the flat gradient buffer (one collective, float32);
* update: the rest of ``optimizer.update()`` (finiteness check and the fused RMSProp kernel).

The ranks share the machine's cores, so the thread count per rank is set (``--threads``: NUMBA, OpenMP and
OpenBLAS threads) to cores / ranks. Times are medians over ``--steps`` steps after ``--warmup``; each
configuration is launched ``--repeats`` times, interleaved, and the launch with the fastest median step is shown
(on a shared machine the others measure the neighbours).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = {"1M": (4, 512), "16M": (4, 2048)}  # name -> (depth, width)


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    from puzzle_rms import backends
    from puzzle_rms.containers import Sequential
    from puzzle_rms.cost import MSE
    from puzzle_rms.data import shardBatch
    from puzzle_rms.distributed import NodeInfo
    from puzzle_rms.modules import Activation, Linear, relu
    from puzzle_rms.optimizers import RMSProp

    class TimedNodeInfo(NodeInfo):
        """NodeInfo that records the barrier wait and the all-reduce time of each call."""

        def __init__(self) -> None:
            super().__init__()
            self.wait: list[float] = []
            self.reduce: list[float] = []

        def allreduceMean(self, flatArray: Any) -> None:
            start = time.perf_counter()
            self.barrier()
            middle = time.perf_counter()
            super().allreduceMean(flatArray)
            backends.current().synchronize()
            self.wait.append(middle - start)
            self.reduce.append(time.perf_counter() - middle)

    backend = backends.use(args.backend)
    node = TimedNodeInfo()
    depth, width = SIZES[args.size]
    gen = np.random.default_rng(0)
    net = Sequential()
    for layer in range(depth):
        net.append(Linear(width, width, initscheme="he", rng=gen))
        if layer < depth - 1:
            net.append(Activation(relu))
    optimizer = RMSProp(learnRate=1e-4, nodeinfo=node)
    optimizer.setupOn(net, useGlobalState=True)
    x = backend.to_device(gen.standard_normal((args.batch, width)).astype(np.float32))
    t = backend.to_device(gen.standard_normal((args.batch, width)).astype(np.float32))
    x, t = shardBatch(x, node), shardBatch(t, node)
    cost = MSE()
    steps, compute, update = [], [], []
    for _ in range(args.warmup + args.steps):
        node.comm.Barrier()
        start = time.perf_counter()
        optimizer.zeroGradParams()
        _, grad = cost(net(x), t)
        net.backward(grad)
        backend.synchronize()
        middle = time.perf_counter()
        optimizer.update()
        backend.synchronize()
        end = time.perf_counter()
        steps.append(end - start)
        compute.append(middle - start)
        update.append(end - middle)
    skip = args.warmup
    median = lambda values: float(np.median(np.asarray(values[skip:]))) * 1e3  # noqa: E731 (ms)
    updateOnly = [u - w - r for u, w, r in zip(update, node.wait, node.reduce)]  # one bucket: one call per step
    result = {"size": args.size, "params": int(sum(v.size for v in net.namedVariables().values())),
              "ranks": node.size, "threads": args.threads, "backend": backend.name, "batch": args.batch,
              "step": median(steps), "compute": median(compute), "wait": median(node.wait),
              "allreduce": median(node.reduce), "update": median(updateOnly)}
    if node.isRoot:
        print(json.dumps(result))


def launch(size: str, ranks: int, threads: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(ranks), sys.executable, __file__,
               "--worker", "--size", size, "--threads", str(threads), "--backend", args.backend,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(output.strip().splitlines()[-1])


def driver(args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    configs = list(dict.fromkeys([(1, cores), (1, max(1, cores // 2)), (2, max(1, cores // 2))]))
    print(f"{args.backend} backend, global batch {args.batch}, {cores} cores; medians of {args.steps} steps (ms), "
          f"best of {args.repeats} launches; load average {os.getloadavg()[0]:.2f} at the start\n")
    print("| model | ranks x threads | step | compute | wait | all-reduce | update | all-reduce share | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in SIZES:
        best: dict = {}
        for _ in range(args.repeats):  # interleaved, so that a busy moment does not hit one configuration only
            for config in configs:
                r = launch(size, *config, args)
                if config not in best or r["step"] < best[config]["step"]:
                    best[config] = r
        base: Optional[float] = None
        for (ranks, threads), r in best.items():
            base = r["step"] if base is None else base
            print(f"| {size} ({r['params'] / 1e6:.1f}M) | {ranks} x {threads} | {r['step']:.1f} | "
                  f"{r['compute']:.1f} | {r['wait']:.2f} | {r['allreduce']:.2f} | {r['update']:.1f} | "
                  f"{100 * r['allreduce'] / r['step']:.0f}% | {base / r['step']:.2f}x |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numba", choices=("numpy", "numba", "cupy"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
    parser.add_argument("--repeats", type=int, default=3, help="launches per configuration; the fastest is shown")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=tuple(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    (worker if args.worker else driver)(args)


if __name__ == "__main__":
    main()
