"""The GPU check: ``python -m puzzle_rms.gpu_check`` on a machine with an NVIDIA GPU (under 5 minutes).

It installs nothing: it needs the GPU extra (``pip install -e ".[cuda12]"``) and, for the tests, the test
extra. It runs the tests marked ``gpu`` (the cupy case of every backend-parametrised test, tests/test_gpu.py,
the multi-rank and example runs on cupy), then times on the current GPU, with CUDA events, the median of
``REPEAT`` calls after ``WARMUP``:

* one ``RMSProp.update()`` over 64M float32 parameters (global state, ``nonFinite="ignore"``) against a
  device-to-device copy of the same number of bytes in the same run (the bandwidth ceiling: the step reads
  w, g, ms and writes w, ms, 20 bytes per parameter; the copy of 10 bytes per parameter moves as many);
* the same step with the default ``nonFinite="raise"`` (one more pass over the gradient, one host copy);
* 2,000 tensors of 100 parameters, global state, against ``torch.optim.RMSprop(foreach=True)`` on the
  same GPU when torch with CUDA is installed;

and prints one table. Returns 1 when a test failed or no GPU is usable, else 0.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from puzzle_rms import Variable, backends
from puzzle_rms.optimizers import RMSProp

ROOT = Path(__file__).resolve().parents[1]
LARGE = 64 * 1024 * 1024
SMALL_COUNT, SMALL_SIZE = 2000, 100
WARMUP, REPEAT = 3, 20


def _time_ms(call: Callable[[], object]) -> float:
    """Median milliseconds of ``call`` on the GPU (CUDA events around each call, after WARMUP calls)."""
    import cupy

    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(REPEAT):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        call()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def _optimizer(sizes: list[int], nonFinite: str) -> RMSProp:
    backend = backends.current()
    variables = [Variable(backend.to_device(np.full(size, 0.5, np.float32)), name=f"v{i}")
                 for i, size in enumerate(sizes)]
    optimizer = RMSProp(learnRate=1e-3, nonFinite=nonFinite)
    optimizer.setupOn(variables, useGlobalState=True)
    optimizer.buckets[0].g.fill(0.01)
    return optimizer


def _torch_foreach_ms() -> Optional[float]:
    """One ``torch.optim.RMSprop(foreach=True)`` step over SMALL_COUNT CUDA tensors, or None without torch+CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    params = [torch.full((SMALL_SIZE,), 0.5, device="cuda", requires_grad=True) for _ in range(SMALL_COUNT)]
    for p in params:
        p.grad = torch.full_like(p, 0.01)
    optimizer = torch.optim.RMSprop(params, lr=1e-3, alpha=0.9, eps=1e-5, foreach=True)
    return _time_ms(optimizer.step)


def run_tests() -> tuple[int, str]:
    """``pytest -m gpu`` in the repository; returns its exit status and its summary line."""
    if not (ROOT / "tests").is_dir():
        return 1, f"no tests folder at {ROOT / 'tests'} (run from a clone)"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                             str(ROOT / "tests")], cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode not in (0, 5):
        print(result.stdout[-6000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    return result.returncode, lines[-1] if lines else result.stderr.strip()[-300:]


def run_benchmarks() -> list[tuple[str, float, str]]:
    """Rows ``(what, median ms, note)`` of the GPU benchmark on the current device."""
    import cupy

    rows = []
    ignore = _optimizer([LARGE], "ignore")
    stepMs = _time_ms(ignore.update)
    source = cupy.empty(LARGE * 10 // 4, np.float32)  # 10 bytes per parameter, read once and written once
    target = cupy.empty_like(source)
    copyMs = _time_ms(lambda: target.__setitem__(Ellipsis, source))
    gbps = 20 * LARGE / stepMs / 1e6
    rows.append(("64M float32, update(), nonFinite='ignore'", stepMs, f"{gbps:.0f} GB/s, {copyMs / stepMs:.0%} of copy"))
    rows.append(("64M float32, device copy of the same bytes", copyMs, f"{20 * LARGE / copyMs / 1e6:.0f} GB/s"))
    del ignore
    raiseMs = _time_ms(_optimizer([LARGE], "raise").update)
    rows.append(("64M float32, update(), nonFinite='raise'", raiseMs, f"{raiseMs / stepMs:.2f}x 'ignore'"))
    smallMs = _time_ms(_optimizer([SMALL_SIZE] * SMALL_COUNT, "ignore").update)
    torchMs = _torch_foreach_ms()
    note = "torch with CUDA not installed" if torchMs is None else f"{torchMs / smallMs:.1f}x faster than torch"
    rows.append((f"{SMALL_COUNT} x {SMALL_SIZE} float32, update(), global state", smallMs, note))
    if torchMs is not None:
        rows.append((f"{SMALL_COUNT} x {SMALL_SIZE} float32, torch RMSprop foreach", torchMs, ""))
    return rows


def main() -> int:
    reason = backends.unavailable_reason("cupy")
    if reason is not None:
        print(f"GPU check: the cupy backend is not usable here: {reason}")
        return 1
    status, summary = run_tests()
    backends.use("cupy")
    import cupy

    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())["name"].decode()
    rows = [("gpu-marked tests", float("nan"), summary)] + run_benchmarks()
    width = max(len(row[0]) for row in rows)
    print(f"\nGPU check on {device} (CuPy {cupy.__version__}); medians of {REPEAT} runs")
    print(f"{'what':<{width}}  {'ms':>9}  note")
    for what, ms, note in rows:
        print(f"{what:<{width}}  {'' if np.isnan(ms) else f'{ms:9.3f}':>9}  {note}")
    return 0 if status in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
