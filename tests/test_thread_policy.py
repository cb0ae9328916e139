"""The threading policy: serial kernels unless the work per thread is large or threads were asked for; the knobs."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms.backends import threads
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.variable import Variable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_NUMBA = backends.unavailable_reason("numba") is None


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """Put the policy (and NumPy's BLAS threads, when they were set) back as they were."""
    saved = (threads._asked, threads._fromEnvironment)
    yield
    threads._asked, threads._fromEnvironment = saved
    if threads._asked is None and threads._openblas() is not None:
        threads.set_blas_threads(threads._openblas()[1])  # NumPy's own setting


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_auto_runs_serially_until_millions_of_elements_per_thread(restore_threads):
    backends.setNumThreads("auto")
    cores = threads._numba_max_threads()
    per = threads.AUTO_MIN_ELEMENTS_PER_THREAD
    assert backends.getNumThreads() == "auto"
    assert [threads.kernel_threads(n) for n in (1, 1 << 15, 1 << 20, 2 * per - 1)] == [1, 1, 1, 1]
    assert threads.kernel_threads(2 * per) == min(2, cores)
    assert threads.kernel_threads(1000 * per) == cores


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_asked_threads_go_parallel_from_small_layouts_and_never_beyond_numba(restore_threads):
    cores = threads._numba_max_threads()
    per = threads.ASKED_MIN_ELEMENTS_PER_THREAD
    backends.setNumThreads(1)
    assert backends.getNumThreads() == 1 and threads.kernel_threads(1 << 30) == 1
    backends.setNumThreads(2)
    assert [threads.kernel_threads(n) for n in (per, 2 * per, 1 << 30)] == [1, min(2, cores), min(2, cores)]
    backends.setNumThreads(64)
    assert threads.kernel_threads(1 << 30) == cores


@pytest.mark.parametrize("value", [0, -1, 1.5, "two", True, None])
def test_set_num_threads_rejects_what_is_not_a_count(value, restore_threads):
    with pytest.raises(ValueError, match=r"setNumThreads: threads must be a positive number of threads or 'auto', "
                                         rf"got {repr(value).replace('.', '[.]')}"):
        backends.setNumThreads(value)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_parallel_and_serial_kernels_give_the_same_bits(restore_threads):
    """Two threads asked for run the prange kernels over 200,000 elements; the result is the serial one's, bit
    for bit (the same per-element arithmetic in the same blocks), for the update and the finiteness check."""
    backends.use("numba")
    gen = np.random.default_rng(1)
    w0 = gen.standard_normal(200_000).astype(np.float32)
    grads = [gen.standard_normal(200_000).astype(np.float32) for _ in range(3)]
    results = []
    for count in (1, 2):
        backends.setNumThreads(count)
        var = Variable(w0.copy(), name="w")
        optimizer = RMSProp(learnRate=1e-2, centered=True, momentum=0.9)
        optimizer.setupOn([var], useGlobalState=True)
        for g in grads:
            optimizer.zeroGradParams()
            var.grad[...] = g
            assert optimizer.update()
        var.grad[123_456] = np.nan
        with pytest.raises(FloatingPointError, match="'w'"):
            optimizer.update()
        results.append((var.data.copy(), {k: v.copy() for k, v in optimizer.stateOf("w").items()}))
    (serialW, serialState), (parallelW, parallelState) = results
    np.testing.assert_array_equal(parallelW, serialW)
    for name in serialState:
        np.testing.assert_array_equal(parallelState[name], serialState[name])


def test_environment_variable_sets_numpys_blas_and_a_bad_value_is_named():
    code = ("import ctypes, numpy\n"
            "from puzzle_rms import backends\n"
            "from puzzle_rms.backends import threads\n"
            "backends.use('numpy')\n"
            "print(backends.getNumThreads())\n"
            "blas = threads._openblas()\n"
            "print('no-openblas' if blas is None else blas[0].__name__)\n"
            "paths = [line.split()[-1] for line in open('/proc/self/maps') if 'openblas' in line.lower()]\n"
            "getter = blas and getattr(ctypes.CDLL(paths[0]), blas[0].__name__.replace('set', 'get'))\n"
            "print('no-openblas' if blas is None else getter())\n")
    done = run_python(code, PUZZLE_RMS_THREADS="1")
    assert done.returncode == 0, done.stderr
    asked, name, blas = done.stdout.split()
    assert asked == "1" and (blas == "1" or name == blas == "no-openblas")
    done = run_python("from puzzle_rms import backends\nbackends.use('numpy')\n", PUZZLE_RMS_THREADS="many")
    assert done.returncode != 0
    assert ("ValueError: the environment variable PUZZLE_RMS_THREADS: value must be a positive number of threads or "
            "'auto', got 'many'") in done.stderr


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed")
def test_the_first_numba_kernel_call_freezes_the_objects_alive_then():
    """gc.freeze after the first kernel call keeps the collector (and the exit-time collection) off Numba's objects;
    the process prints nothing it did not print before."""
    code = ("import gc, numpy as np\n"
            "from puzzle_rms import backends, Variable\n"
            "from puzzle_rms.optimizers import RMSProp\n"
            "backends.use('numba')\n"
            "before = gc.get_freeze_count()\n"
            "var = Variable(np.ones(10, np.float32))\n"
            "optimizer = RMSProp()\n"
            "optimizer.setupOn([var])\n"
            "optimizer.update()\n"
            "import sys; print(before, gc.get_freeze_count() > 1000, file=sys.stderr)\n")
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr.split() == ["0", "True"]


def test_host_products_run_on_the_blas_threads_their_size_earns(monkeypatch, restore_threads):
    """auto: a product below AUTO_MIN_FLOPS_PER_THREAD flops per thread runs on fewer BLAS threads and NumPy's
    setting comes back right after; one large enough keeps it; asked threads leave the pool alone per call."""
    calls = []

    def setter(count):
        calls.append(count)

    monkeypatch.setattr(threads, "_openblas", lambda: (setter, 4))
    backends.setNumThreads("auto")
    calls.clear()
    gen = np.random.default_rng(0)
    a, b = gen.standard_normal((8, 16)), gen.standard_normal((16, 4))
    np.testing.assert_array_equal(threads.host_matmul(a, b), a @ b)
    assert calls == [1, 4]
    calls.clear()
    monkeypatch.setattr(threads, "AUTO_MIN_FLOPS_PER_THREAD", 64)
    assert threads.host_matmul(a, b).shape == (8, 4) and calls == []  # 2 * 8 * 16 * 4 = 1024 flops: 16 threads earned
    threads.host_matmul(a[:4], b[:, :2])  # 256 flops: 4 threads, all there are
    assert calls == []
    threads.host_matmul(a[:2], b[:, :2])  # 128 flops: 2 threads
    assert calls == [2, 4]
    calls.clear()
    backends.setNumThreads(3)
    threads.host_matmul(a, b)
    assert calls == [3]  # set once by setNumThreads, not per product


def test_linear_layers_multiply_through_the_backend(backend_name, monkeypatch):
    """Linear's three products go through Backend.matmul (so that the policy sizes their BLAS threads)."""
    from puzzle_rms.modules import Linear

    backend = backends.current()
    shapes = []
    real = type(backend).matmul
    monkeypatch.setattr(backend, "matmul", lambda a, b: shapes.append((a.shape, b.shape)) or real(backend, a, b))
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    layer(np.ones((5, 3), np.float32))
    layer.backward(np.ones((5, 2), np.float32))
    assert shapes == [((5, 3), (3, 2)), ((5, 2), (2, 3)), ((3, 5), (5, 2))]
