"""The backend registry, PUZZLE_RMS_BACKEND, the errors for unknown and unusable backends, and gpuarray."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms.backends import BackendUnavailableError, gpuarray

ROOT = Path(__file__).resolve().parents[1]
CUPY_REASON = backends.unavailable_reason("cupy")


@pytest.fixture
def restore_backend():
    """Put the current backend back after a test that switches it."""
    previous = backends.current().name
    yield
    backends.use(previous)


def run_python(code: str, envValue) -> subprocess.CompletedProcess:
    """Run ``python -c code`` in a fresh process with PUZZLE_RMS_BACKEND set to ``envValue`` (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != backends.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if envValue is not None:
        env[backends.ENV_VAR] = envValue
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# --- registry -----------------------------------------------------------------------------------
def test_available_lists_usable_backends_in_preference_order():
    names = backends.available()
    assert "numpy" in names
    assert ("numba" in names) == (backends.unavailable_reason("numba") is None)
    assert ("cupy" in names) == (CUPY_REASON is None)
    assert names == [name for name in ("cupy", "numba", "numpy") if name in names]
    assert backends.NAMES == ("numpy", "numba", "cupy", "auto")


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_use_makes_a_backend_current(restore_backend, name):
    if backends.unavailable_reason(name) is not None:
        pytest.skip(f"{name} is not installed")
    chosen = backends.use(name)
    assert chosen.name == name and backends.current() is chosen
    assert chosen.xp is np
    assert backends.use(name) is chosen  # one instance per backend
    assert isinstance(chosen, backends.Backend)


def test_auto_picks_the_first_available(restore_backend):
    assert backends.use("auto").name == backends.available()[0]
    expected = "cupy" if CUPY_REASON is None else ("numba" if backends.unavailable_reason("numba") is None else "numpy")
    assert backends.current().name == expected


def test_unknown_name_lists_the_known_ones(restore_backend):
    before = backends.current()
    for bad in ("tpu", "", 3, None):
        with pytest.raises(ValueError) as info:
            backends.use(bad)
        message = str(info.value)
        assert repr(bad) in message and all(name in message for name in backends.NAMES)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        backends.unavailable_reason("tpu")
    assert backends.current() is before


@pytest.mark.skipif(CUPY_REASON is None, reason="CuPy and a CUDA device are usable here")
def test_unavailable_backend_says_what_is_missing_and_how_to_install(restore_backend):
    before = backends.current()
    with pytest.raises(BackendUnavailableError) as info:
        backends.use("cupy")
    message = str(info.value)
    assert "'cupy'" in message and CUPY_REASON in message
    if "not installed" in CUPY_REASON:
        assert "pip install" in message and "cuda12" in message and "cuda13" in message
    assert backends.current() is before  # no silent fallback, no change
    assert "cupy" not in backends.available()


def _fake_cupy(monkeypatch, devices=1, nvrtcError=None):
    """A stand-in ``cupy`` package that records the calls probe() makes and fails on anything that would
    create a CUDA context (an allocation, a kernel)."""
    import importlib.machinery
    import types

    calls = []

    def forbidden(*args, **kwargs):
        raise AssertionError("probe() created a CUDA context")

    def version():
        calls.append("nvrtc.getVersion")
        if nvrtcError is not None:
            raise nvrtcError
        return (12, 9)

    nvrtc = types.SimpleNamespace(getVersion=version)
    runtime = types.SimpleNamespace(getDeviceCount=lambda: calls.append("getDeviceCount") or devices,
                                    setDevice=forbidden, malloc=forbidden)
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime, cuda.nvrtc, cuda.Device = runtime, nvrtc, forbidden
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cupy.cuda, cupy.zeros, cupy.empty, cupy.asarray = cuda, forbidden, forbidden, forbidden
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    return calls


def test_cupy_probe_counts_devices_and_loads_nvrtc_without_a_context(monkeypatch):
    from puzzle_rms.backends import cupy_backend

    calls = _fake_cupy(monkeypatch)
    assert cupy_backend.probe() is None
    assert calls == ["getDeviceCount", "nvrtc.getVersion"]


def test_cupy_probe_says_exactly_what_is_missing(monkeypatch):
    from puzzle_rms.backends import cupy_backend

    _fake_cupy(monkeypatch, devices=0)
    assert cupy_backend.probe() == "CuPy found no CUDA device"
    _fake_cupy(monkeypatch, nvrtcError=RuntimeError("CuPy failed to load libnvrtc.so.12"))
    reason = cupy_backend.probe()
    assert reason.startswith("CuPy cannot load NVRTC, which compiles this backend's kernels (RuntimeError: CuPy "
                             "failed to load libnvrtc.so.12)")
    assert "pip install 'cupy-cuda12x[ctk]'" in reason and "nvidia-cuda-nvrtc-cu12" in reason


# --- the environment variable, in fresh processes -----------------------------------------------
@pytest.mark.parametrize("envValue, expected", [
    ("numpy", "numpy"), ("numba", "numba"), ("NumPy", "numpy"), ("auto", None), ("", None), (None, None),
])
def test_environment_variable_picks_the_backend(envValue, expected):
    expected = expected or backends.available()[0]
    if backends.unavailable_reason(expected) is not None:
        pytest.skip(f"{expected} is not usable here")
    code = ("import numpy as np\nfrom puzzle_rms import backends\nfrom puzzle_rms.backends import gpuarray\n"
            "x = gpuarray.to_gpu(np.ones(3, np.float32))\nprint(backends.current().name, type(x).__module__)")
    result = run_python(code, envValue)
    assert result.returncode == 0, result.stderr
    name, module = result.stdout.split()
    assert name == expected
    assert module.split(".")[0] == ("cupy" if expected == "cupy" else "puzzle_rms")


def test_environment_variable_with_unknown_name_fails_clearly():
    result = run_python("from puzzle_rms import backends; backends.current()", "nmuba")
    assert result.returncode != 0
    assert ("UnknownBackendError: unknown backend 'nmuba' in the environment variable PUZZLE_RMS_BACKEND: "
            "expected one of numpy, numba, cupy, auto; did you mean 'numba'?") in result.stderr


@pytest.mark.parametrize("name", ["cuda", "CUDA", "gpu"])
def test_puzzlelibs_gpu_backend_name_suggests_cupy(restore_backend, name):
    """PuzzleLib calls its GPU backend 'cuda'; here it is 'cupy', and the error says so."""
    before = backends.current()
    with pytest.raises(backends.UnknownBackendError, match=rf"unknown backend '{name}': expected one of .*; "
                                                          r"did you mean 'cupy'\? .*PuzzleLib's 'cuda'"):
        backends.use(name)
    assert issubclass(backends.UnknownBackendError, ValueError)
    assert backends.current() is before


def test_describe_says_which_backend_and_why(restore_backend):
    backends.use("numpy")
    assert backends.describe() == "numpy (backends.use())"
    backends.use("numpy", origin="--backend numpy")
    assert backends.describe() == "numpy (--backend numpy)"
    backends.use("auto")
    first = backends.available()[0]
    order = ("cupy", "numba", "numpy")
    passedOver = "".join(backends.unavailable_reason(name).split(" (")[0] + "; " for name in order[:order.index(first)])
    assert backends.describe() == f"{first} (auto: {passedOver}backends.use())"


@pytest.mark.parametrize("envValue, why", [(None, "PUZZLE_RMS_BACKEND unset"), ("numpy", "PUZZLE_RMS_BACKEND=numpy")])
def test_describe_names_the_environment_variable(envValue, why):
    result = run_python("from puzzle_rms import backends; print(backends.describe())", envValue)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.endswith(f"{why})")
    if envValue is None:
        assert line.startswith(f"{backends.available()[0]} (auto: ")
    else:
        assert line == f"numpy ({why})"


@pytest.mark.skipif(CUPY_REASON is None, reason="CuPy and a CUDA device are usable here")
def test_environment_variable_naming_an_unusable_backend_does_not_fall_back():
    result = run_python("from puzzle_rms import backends; backends.current()", "cupy")
    assert result.returncode != 0
    assert "BackendUnavailableError: backend 'cupy' is not usable here" in result.stderr
    assert CUPY_REASON in result.stderr


def test_use_overrides_the_environment_variable():
    result = run_python("from puzzle_rms import backends; backends.use('numpy'); print(backends.current().name)", "tpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["numpy"]


# --- gpuarray -----------------------------------------------------------------------------------
def test_to_gpu_copies_and_get_returns_host_arrays(backend_name):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    ary = gpuarray.to_gpu(host)
    assert backends.current().owns(ary)
    assert ary.shape == (3, 4) and ary.dtype == np.float32
    host[0, 0] = 100  # to_gpu copied
    for back in (ary.get(), gpuarray.get(ary)):
        assert type(back) is np.ndarray
        np.testing.assert_array_equal(back, np.arange(12).reshape(3, 4))
    assert gpuarray.to_gpu([1, 2], dtype=np.float64).dtype == np.float64
    assert gpuarray.to_gpu(np.ones(2, np.float16)).dtype == np.float16


def test_to_gpu_result_works_in_arithmetic(backend_name):
    ary = gpuarray.to_gpu(np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(gpuarray.get(ary * 2 + 1), [3.0, 5.0])
    np.testing.assert_array_equal((ary * 2).get(), [2.0, 4.0])


def test_allocation(backend_name):
    zeros = gpuarray.zeros((2, 3), dtype=np.float64)
    assert zeros.shape == (2, 3) and zeros.dtype == np.float64
    np.testing.assert_array_equal(zeros.get(), np.zeros((2, 3)))
    empty = gpuarray.empty(5)
    assert empty.shape == (5,) and empty.dtype == np.float32 and backends.current().owns(empty)
    np.testing.assert_array_equal(gpuarray.full((2,), 1.5).get(), [1.5, 1.5])
    assert gpuarray.GPUArray((4,), np.float32).shape == (4,)


def test_dtypes_supported(backend_name):
    supported = gpuarray.dtypesSupported()  # PuzzleLib's (dtype, atol) pairs
    assert [dtype for dtype, _ in supported] == list(backends.current().dtypesSupported)
    assert {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}.items() <= dict(supported).items()


def test_gpuarray_class_and_get_set_on_parameters(backend_name):
    from puzzle_rms.modules import Linear

    layer = Linear(3, 2)
    assert isinstance(layer.W, gpuarray.GPUArray) and not isinstance([1.0], gpuarray.GPUArray)
    layer.W.set(np.full((3, 2), 0.5, np.float32))
    layer.vars["b"].grad.set(np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(layer.W.get(), np.full((3, 2), 0.5))
    np.testing.assert_array_equal(layer.vars["b"].grad.get(), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"set: array of shape \(2,\) into an array of shape \(3, 2\)"):
        layer.W.set(np.zeros(2))
    assert isinstance(gpuarray.GPUArray((2,), np.float32), gpuarray.GPUArray)
