"""How many threads puzzle_rms's CPU work runs on: the policy, its two knobs and NumPy's BLAS pool.

A parallel kernel pays for its launch: ~2 us on an idle machine, but on a busy or small one (2 cores
shared with other processes, or with NumPy's and torch's spinning pools) a worker waits for a scheduler
time slice, ~10 ms, far more than a training step's update takes on one thread. So the policy is:

* ``"auto"`` (the default): a Numba kernel runs on ``n = min(cores, size // AUTO_MIN_ELEMENTS_PER_THREAD)``
  threads, serially while ``n < 2``: only layouts of millions of elements per thread, where even a lost time
  slice is amortised, go parallel (2 cores: from 8M elements; a 4.7M-parameter update gained nothing from a
  second thread on a quiet 2-core machine). The same rule sizes the BLAS pool for each matrix product a
  module computes on the host (:func:`host_matmul`): ``min(BLAS threads, flops // AUTO_MIN_FLOPS_PER_THREAD)``
  threads for that product, NumPy's own setting restored right after. A 64x256x64 product took 1.2 ms on
  OpenBLAS's 2 threads and 0.12 ms on one on a loaded 2-core machine.
* ``n`` threads, asked for (``PUZZLE_RMS_THREADS=n`` or :func:`setNumThreads`): the machine is the caller's,
  so a kernel goes parallel from ``ASKED_MIN_ELEMENTS_PER_THREAD`` elements per thread, on at most ``n``
  threads (and at most Numba's ``NUMBA_NUM_THREADS``), and NumPy's OpenBLAS pool is set to ``n`` threads
  too, so that the two pools never ask for more cores than were given. ``1`` runs everything on the
  calling thread: the fastest setting on a shared machine.

NumPy offers no call for its BLAS threads; the OpenBLAS that NumPy's wheels load is found among the
process's mapped libraries and its own ``openblas_set_num_threads`` is called (Linux; elsewhere, or with
another BLAS, the BLAS setting is left alone and ``OPENBLAS_NUM_THREADS`` set before NumPy is imported
does the same). ``OMP_WAIT_POLICY=passive`` (Numba's ``omp`` layer) stops idle workers from spinning.
"""
from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from typing import Any, Optional, Union

ENV_VAR = "PUZZLE_RMS_THREADS"
AUTO_MIN_ELEMENTS_PER_THREAD = 1 << 22
ASKED_MIN_ELEMENTS_PER_THREAD = 1 << 15
AUTO_MIN_FLOPS_PER_THREAD = 1 << 26  # a few ms of one core's matrix product (measured: 2^28 left W=512 behind torch)
_OPENBLAS_CALLS = tuple((f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}")
                        for prefix in ("scipy_openblas", "openblas") for suffix in ("64_", ""))

_asked: Optional[int] = None  # None: "auto"
_fromEnvironment = True  # until PUZZLE_RMS_THREADS is read, or setNumThreads overrides it


def setNumThreads(threads: Union[int, str]) -> None:
    """Run puzzle_rms's CPU work on ``threads`` threads (a positive int) or let the policy choose (``"auto"``).

    Overrides ``PUZZLE_RMS_THREADS``. A number also sets NumPy's OpenBLAS pool to that many threads.

    Raises
    ------
    ValueError
        ``threads`` is neither a positive int nor ``"auto"``.
    """
    global _asked, _fromEnvironment
    _asked = _parse("setNumThreads", "threads", threads)
    _fromEnvironment = False
    if _asked is not None:
        set_blas_threads(_asked)


def getNumThreads() -> Union[int, str]:
    """The setting in force: the number of threads asked for, or ``"auto"``."""
    asked = _asked_threads()
    return "auto" if asked is None else asked


def kernel_threads(size: int) -> int:
    """Threads a Numba kernel over ``size`` elements runs on under the policy (1: the serial kernel)."""
    asked = _asked_threads()
    perThread = AUTO_MIN_ELEMENTS_PER_THREAD if asked is None else ASKED_MIN_ELEMENTS_PER_THREAD
    return max(1, min(_numba_max_threads() if asked is None else min(asked, _numba_max_threads()),
                      size // perThread))


def set_blas_threads(threads: int) -> bool:
    """Set NumPy's OpenBLAS pool to ``threads``; False where no OpenBLAS with a known setter is loaded."""
    blas = _openblas()
    if blas is None:
        return False
    blas[0](threads)
    return True


def host_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` of two 2-D host arrays, on the BLAS threads the policy gives its ``2 m k n`` flops (auto only;
    threads asked for were set once for the whole pool)."""
    blas = _openblas() if _asked_threads() is None else None
    if blas is None:
        return a @ b
    setter, default = blas
    count = max(1, min(default, 2 * a.shape[0] * a.shape[1] * b.shape[1] // AUTO_MIN_FLOPS_PER_THREAD))
    if count == default:
        return a @ b
    setter(count)
    try:
        return a @ b
    finally:
        setter(default)


def _asked_threads() -> Optional[int]:
    """The threads asked for (None: auto); reads ``PUZZLE_RMS_THREADS`` on first use."""
    global _asked, _fromEnvironment
    if _fromEnvironment:
        _asked = _parse(f"the environment variable {ENV_VAR}", "value", os.environ.get(ENV_VAR) or "auto")
        _fromEnvironment = False
        if _asked is not None:
            set_blas_threads(_asked)
    return _asked


def _parse(owner: str, name: str, value: Any) -> Optional[int]:
    text = value.strip().lower() if isinstance(value, str) else value
    if text == "auto":
        return None
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if isinstance(text, bool) or not isinstance(text, int) or text < 1:
        raise ValueError(f"{owner}: {name} must be a positive number of threads or 'auto', got {value!r}")
    return text


@lru_cache(maxsize=None)
def _numba_max_threads() -> int:
    """Numba's thread count (``NUMBA_NUM_THREADS``, the cores by default); 1 without Numba."""
    try:
        from numba import config
    except ImportError:
        return 1
    return int(config.NUMBA_NUM_THREADS)


@lru_cache(maxsize=None)
def _openblas() -> Optional[tuple[Any, int]]:
    """``openblas_set_num_threads`` of the OpenBLAS mapped into this process (NumPy's) and its thread count
    when first asked (NumPy's own setting), or None."""
    import numpy  # noqa: F401  (loads NumPy's BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line},
                           key=lambda path: ("numpy" not in path, path))  # NumPy's own first (SciPy has another)
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for setName, getName in _OPENBLAS_CALLS:
            setter, getter = getattr(library, setName, None), getattr(library, getName, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                return setter, int(getter())
    return None
