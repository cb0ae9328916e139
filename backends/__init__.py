"""Array backends for puzzle_rms (``puzzle_rms.backends``): a registry of NumPy, Numba and CuPy.

A backend is an object with ``.name``, the array module ``.xp``, host/device
transfer, allocation and the fused optimizer kernels (see
:class:`puzzle_rms.backends.backend.Backend`). Code above this package asks the registry
for the current backend and never branches on which one it is.

The backend is picked at first use from the environment variable
``PUZZLE_RMS_BACKEND`` (default ``auto``: cupy when a CUDA device is usable,
else numba, else numpy), or explicitly with :func:`use`.

How many threads the CPU work runs on is set by ``PUZZLE_RMS_THREADS`` (read when
the first backend is created) or :func:`setNumThreads`; see :mod:`.threads`.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional

from .backend import Backend, BackendUnavailableError
from .threads import getNumThreads, setNumThreads

__all__ = ["Backend", "BackendUnavailableError", "ENV_VAR", "NAMES", "available", "current", "getNumThreads",
           "setNumThreads", "use"]

ENV_VAR = "PUZZLE_RMS_BACKEND"

# name -> module; each module has probe() -> Optional[str] (why it cannot run) and create() -> Backend.
_MODULES = {
    "numpy": ".numpy_backend",
    "numba": ".numba_backend",
    "cupy": ".cupy_backend",
}
_AUTO_ORDER = ("cupy", "numba", "numpy")
NAMES = tuple(_MODULES) + ("auto",)

_instances: dict[str, Backend] = {}
_current: Optional[Backend] = None


def _module(name: str):
    return importlib.import_module(_MODULES[name], __name__)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name.lower() not in NAMES:
        raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(NAMES)}")
    return name.lower()


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run here (missing package or device), or None when it can."""
    return _module(_check_name(name)).probe()


def available() -> list[str]:
    """Names of the backends usable on this machine, in preference order."""
    return [name for name in _AUTO_ORDER if unavailable_reason(name) is None]


def _resolve(name: str) -> str:
    name = _check_name(name)
    if name != "auto":
        return name
    return available()[0]


def use(name: str) -> Backend:
    """Make backend ``name`` current and return it.

    Raises
    ------
    ValueError
        ``name`` is not a known backend.
    BackendUnavailableError
        The named backend's package or device is missing; the message says
        what is missing and how to install it. There is no silent fallback.
    """
    global _current
    resolved = _resolve(name)
    if resolved not in _instances:
        reason = unavailable_reason(resolved)
        if reason is not None:
            raise BackendUnavailableError(f"backend {resolved!r} is not usable here: {reason}")
        getNumThreads()  # applies PUZZLE_RMS_THREADS (to NumPy's BLAS too) before the first computation
        _instances[resolved] = _module(resolved).create()
    _current = _instances[resolved]
    return _current


def current() -> Backend:
    """The current backend; on first call it is chosen from ``PUZZLE_RMS_BACKEND`` (default auto)."""
    if _current is None:
        return use(os.environ.get(ENV_VAR, "auto") or "auto")
    return _current
