"""Shared fixtures: run a test on each backend (cupy marked ``gpu``), skip GPU-marked tests without a usable CuPy device."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import pytest

from puzzle_rms import backends
from backend_switch import using

CPU_BACKENDS = ["numpy", "numba"]
# every backend-parametrised test runs on cupy too wherever a GPU is usable (skipped, saying why, elsewhere)
BACKENDS = CPU_BACKENDS + [pytest.param("cupy", marks=pytest.mark.gpu)]


# PUZZLE_RMS_TEST_CUPY_ON_HOST=1: the backend-parametrised tests run their cupy case on the CuPy backend's own
# Python code and CUDA kernels executed on the CPU (tests/cuda_host.py); the other GPU tests skip.
CUPY_ON_HOST = os.environ.get("PUZZLE_RMS_TEST_CUPY_ON_HOST") == "1"


def pytest_configure(config: pytest.Config) -> None:
    if CUPY_ON_HOST:
        from cuda_host import install_host_cupy

        install_host_cupy()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when the CuPy backend cannot run here, saying why."""
    gpuItems = [item for item in items if item.get_closest_marker("gpu") is not None]
    if CUPY_ON_HOST:
        for item in gpuItems:
            if getattr(getattr(item, "callspec", None), "params", {}).get("backend_name") != "cupy":
                item.add_marker(pytest.mark.skip(reason="needs a real GPU (PUZZLE_RMS_TEST_CUPY_ON_HOST=1 runs only "
                                                        "the cupy case of the backend-parametrised tests)"))
        return
    reason = backends.unavailable_reason("cupy") if gpuItems else None
    for item in gpuItems if reason is not None else []:
        item.add_marker(pytest.mark.skip(reason=f"needs the cupy backend: {reason}"))


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make each backend current in turn (skipped when not usable here); restore the previous one after."""
    with using(request.param):
        yield request.param


@pytest.fixture(params=CPU_BACKENDS + [pytest.param("cupy", marks=pytest.mark.gpu)])
def every_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """:func:`backend_name` over the CPU backends and CuPy, whose runs are marked gpu (skipped without a device)."""
    with using(request.param):
        yield request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator, the same in every test."""
    return np.random.default_rng(0)
