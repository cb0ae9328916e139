"""What only a real GPU can show (skipped without one): device placement, contexts, streams, devices, the
host-device traffic of a step, and the paths the GPU compiles differently (half2, NaN through the clamp).

The numbers of every option, preset, dtype, layout, raw op, lazy row and checkpoint on the GPU come from the
cupy case of the backend-parametrised tests (tests/conftest.py); the kernels' arithmetic is also checked on
the CPU in tests/test_cuda_kernels_on_host.py.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from puzzle_rms import Variable, backends
from puzzle_rms.backends import gpuarray
from puzzle_rms.optimizers import RMSProp

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy_backend():
    """Make the CuPy backend current for one test, then restore the previous backend."""
    previous = backends.current().name
    yield backends.use("cupy")
    backends.use(previous)


def _variables(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [Variable(rng.standard_normal(shape).astype(dtype), name=f"v{i}") for i, shape in enumerate(shapes)]


def _train(variables, grads, **options):
    optimizer = RMSProp(learnRate=0.01, **options)
    optimizer.setupOn(variables, useGlobalState=True)
    for step in grads:
        for var, g in zip(variables, step):
            var.grad[...] = backends.current().to_device(g)
        optimizer.update()
    return optimizer


def test_probe_creates_no_cuda_context():
    """probe() (run by backends.available() in every rank) must leave GPU 0 alone: no context is current after."""
    code = ("from puzzle_rms.backends import cupy_backend\n"
            "assert cupy_backend.probe() is None\n"
            "from cupy.cuda import driver\n"
            "print(driver.ctxGetCurrent())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_arrays_live_on_the_current_device_and_global_state_views_share_memory(cupy_backend):
    xp = cupy_backend.xp
    ary = gpuarray.to_gpu(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(ary, xp.ndarray) and type(ary.get()) is np.ndarray
    assert ary.device.id == xp.cuda.runtime.getDevice()
    np.testing.assert_array_equal(gpuarray.get(ary), np.arange(6).reshape(2, 3))
    variables = [Variable(np.ones(3, np.float32), name="a"), Variable(np.ones((2, 2), np.float32), name="b")]
    optimizer = RMSProp()
    optimizer.setupOn(variables, useGlobalState=True)
    optimizer.buckets[0].w[...] = 5
    assert all(bool((var.data == 5).all()) for var in variables)


def test_a_step_waits_for_the_device_once(cupy_backend, monkeypatch):
    """nonFinite="raise" with 6 local-state tensors: one device-to-host copy (all sums at once), no bincount."""
    xp = cupy_backend.xp
    variables = _variables([(7,), (33, 5), (1,), (4096,), (3, 3), (1000,)], np.float32)
    optimizer = RMSProp(learnRate=0.01)
    optimizer.setupOn(variables)
    for var in variables:
        var.grad[...] = 1
    copies = []
    real = xp.asnumpy
    monkeypatch.setattr(xp, "asnumpy", lambda a, *args, **kwargs: copies.append(a.size) or real(a, *args, **kwargs))
    monkeypatch.setattr(xp, "bincount", lambda *args, **kwargs: pytest.fail("bincount in a step"))
    optimizer.update()
    assert copies == [len(variables)]


def test_sums_of_squares_are_the_same_bits_every_time(cupy_backend):
    rng = np.random.default_rng(1)
    g = cupy_backend.to_device(rng.standard_normal(3_000_001).astype(np.float32))
    layout = cupy_backend.make_layout([1_000_000, 2_000_001])
    first = cupy_backend.segment_sumsq(g, layout)
    assert all(cupy_backend.segment_sumsq(g, layout).tobytes() == first.tobytes() for _ in range(5))
    host = cupy_backend.to_host(g).astype(np.float64)
    np.testing.assert_allclose(first, [np.dot(host[:1_000_000], host[:1_000_000]),
                                       np.dot(host[1_000_000:], host[1_000_000:])], rtol=1e-12)


def test_float16_after_odd_sized_tensors_matches_the_numpy_backend(cupy_backend):
    """Segments start at even offsets, so blocks after an odd-sized tensor take the half2 path; same numbers."""
    shapes = [(3,), (1001,), (64, 7), (5,), (2049,)]
    rng = np.random.default_rng(2)
    grads = [[rng.standard_normal(s).astype(np.float16) for s in shapes] for _ in range(5)]
    results = {}
    for name in ("numpy", "cupy"):
        backends.use(name)
        variables = _variables(shapes, np.float16)
        optimizer = _train(variables, grads, momentum=0.9, centered=True)
        assert all(int(o) % 2 == 0 for o in optimizer.buckets[0].offsets)
        results[name] = [backends.current().to_host(var.data) for var in variables]
    for want, got in zip(results["numpy"], results["cupy"]):
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_an_inf_gradient_gives_nan_not_inf_through_the_centered_clamp(cupy_backend):
    """Compiled with -ftz=true, `v > 0 ? v : 0` became max.ftz.f32 and turned NaN into 0: -inf weights."""
    var = Variable(np.ones(4, np.float32), name="w")
    optimizer = RMSProp(learnRate=0.01, centered=True, momentum=0.9, nonFinite="ignore")
    optimizer.setupOn([var], useGlobalState=True)
    var.grad[...] = cupy_backend.to_device(np.array([1, np.inf, 1, 1], np.float32))
    optimizer.update()
    data = cupy_backend.to_host(var.data)
    assert np.isnan(data[1]) and np.isfinite(np.delete(data, 1)).all()
    assert np.isnan(cupy_backend.to_host(optimizer.stateOf("w")["mom"])[1])


def test_an_update_on_a_side_stream_gives_the_default_streams_numbers(cupy_backend):
    xp = cupy_backend.xp
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(10_000).astype(np.float32)] for _ in range(3)]
    default = _train(_variables([(10_000,)], np.float32), grads, momentum=0.9)
    stream = xp.cuda.Stream(non_blocking=True)
    with stream:
        side = _train(_variables([(10_000,)], np.float32), grads, momentum=0.9)
    stream.synchronize()
    assert cupy_backend.to_host(side.buckets[0].w).tobytes() == cupy_backend.to_host(default.buckets[0].w).tobytes()


def test_kernels_and_layouts_are_made_per_device(cupy_backend):
    xp = cupy_backend.xp
    if xp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs 2 GPUs")
    rng = np.random.default_rng(4)
    grads = [[rng.standard_normal(777).astype(np.float32)] for _ in range(2)]
    results = []
    for device in (0, 1):
        with xp.cuda.Device(device):
            optimizer = _train(_variables([(777,)], np.float32), grads)
            assert optimizer.buckets[0].w.device.id == device
            results.append(cupy_backend.to_host(optimizer.buckets[0].w))
    assert results[0].tobytes() == results[1].tobytes()
    assert {key[0] for key in cupy_backend._functions} >= {0, 1}
