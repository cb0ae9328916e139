"""``using(name)``: make a backend current for a block of a test, skipping the test when it cannot run here."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from puzzle_rms import backends


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Make backend ``name`` current for the block (skip the test when it is unusable); restore the previous one."""
    reason = backends.unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} is not usable: {reason}")
    previous = backends.current().name
    backends.use(name)
    try:
        yield
    finally:
        backends.use(previous)
