"""Shared fixtures: run a test on each CPU backend (or every backend), skip GPU-marked tests without a usable CuPy device."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from puzzle_rms import backends
from backend_switch import using

CPU_BACKENDS = ["numpy", "numba"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when the CuPy backend cannot run here, saying why."""
    gpuItems = [item for item in items if item.get_closest_marker("gpu") is not None]
    reason = backends.unavailable_reason("cupy") if gpuItems else None
    for item in gpuItems if reason is not None else []:
        item.add_marker(pytest.mark.skip(reason=f"needs the cupy backend: {reason}"))


@pytest.fixture(params=CPU_BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """Make each CPU backend current in turn (skipped when not installed); restore the previous one after."""
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
