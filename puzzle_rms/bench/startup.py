"""Numba's start-up cost: a fresh process's first updates with an empty and with a filled compile cache.

Measured in subprocesses, because a process that has compiled once cannot show a cold start again.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import puzzle_rms

_STARTUP_SCRIPT = r"""
import json, time
start = time.perf_counter()
import numpy as np
from puzzle_rms import backends
backends.use("numba")
from puzzle_rms.optimizers.rmsprop import RMSProp
from puzzle_rms.variable import Variable
imported = time.perf_counter()
firsts = {}
# a small model runs the serial kernels, a large one on two threads asked for the parallel ones: each first update
# loads or compiles its own
for label, size in (("small", 1000), ("large", 1 << 17)):
    if label == "large":
        backends.setNumThreads(2)
    variables = [Variable(np.ones(size, np.float32)), Variable(np.ones(10, np.float32))]
    optimizer = RMSProp(1e-3, nonFinite="raise")
    optimizer.setupOn(variables, useGlobalState=True)
    begin = time.perf_counter()
    optimizer.update()
    firsts[label] = time.perf_counter() - begin
print(json.dumps({"importSeconds": imported - start, "firstUpdateSeconds": firsts,
                  "totalSeconds": time.perf_counter() - start}))
"""


def numba_startup() -> dict[str, Any]:
    """A fresh process's first updates with an empty Numba cache (compiling) and again with it filled (loading).

    Returns ``{"cold": ..., "warm": ...}``, each with the import time, the first update of a small model
    (serial kernels) and of a large one (parallel kernels), and the process total, in seconds.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(puzzle_rms.__file__)))
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="puzzle_rms_numba_cache_") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache,
                   PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        for label in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT], env=env, capture_output=True, text=True,
                                  timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"the numba start-up subprocess failed:\n{done.stderr}")
            result[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def format_startup(startup: dict[str, Any]) -> str:
    """The cold and the warm run of :func:`numba_startup`, one line each."""
    lines = ["== numba start-up: fresh processes, NUMBA_CACHE_DIR in a new temporary directory =="]
    for label, what in (("cold", "empty cache, compiles"), ("warm", "cache hit, loads")):
        r = startup[label]
        lines.append(f"  {label} ({what}): import {r['importSeconds']:.2f} s; first update of a small model (serial "
                     f"kernels) {r['firstUpdateSeconds']['small']:.2f} s, of a large one (parallel kernels) "
                     f"{r['firstUpdateSeconds']['large']:.2f} s; process total {r['totalSeconds']:.2f} s")
    return "\n".join(lines)
