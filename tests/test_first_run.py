"""What a newcomer sees on the first run: one line while Numba compiles into an empty cache, nothing once it is warm."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba", reason="the compile notice is about the numba backend")

from puzzle_rms.backends.numba_compile_notice import MESSAGE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEP = """\
import numpy as np
from puzzle_rms import Variable
from puzzle_rms.optimizers import RMSProp
var = Variable(np.ones(8, np.float32), grad=np.full(8, 0.5, np.float32), name="w")
optimizer = RMSProp(learnRate=0.1)
optimizer.setupOn([var], useGlobalState=True)
optimizer.update()
print(var.data[0])
"""


def run_step(cacheDir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cacheDir), "PUZZLE_RMS_BACKEND": "numba"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", STEP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_compile_notice_shows_on_a_cold_cache_only(tmp_path):
    first = run_step(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stderr == MESSAGE + "\n"
    assert any(tmp_path.rglob("numba_kernels.*.nbi")), "the kernels were not cached on disk"
    second = run_step(tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    # One RMSProp step from ms = 0: w - lr * g / (sqrt((1 - 0.9) g^2) + 1e-5), the same whether compiled or loaded.
    expected = 1.0 - 0.1 * 0.5 / ((0.1 * 0.25) ** 0.5 + 1e-5)
    assert float(first.stdout) == float(second.stdout) == pytest.approx(expected, rel=1e-6)


def test_numpy_backend_prints_no_notice(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PUZZLE_RMS_BACKEND": "numpy"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", STEP], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
