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

import difflib
import importlib
import os
from typing import Optional

from .backend import Backend, BackendUnavailableError, UnknownBackendError
from .threads import getNumThreads, setNumThreads

__all__ = ["Backend", "BackendUnavailableError", "ENV_VAR", "NAMES", "UnknownBackendError", "available", "current",
           "describe", "getNumThreads", "setNumThreads", "use"]

ENV_VAR = "PUZZLE_RMS_BACKEND"

# name -> module; each module has probe() -> Optional[str] (why it cannot run) and create() -> Backend.
_MODULES = {
    "numpy": ".numpy_backend",
    "numba": ".numba_backend",
    "cupy": ".cupy_backend",
}
_AUTO_ORDER = ("cupy", "numba", "numpy")
NAMES = tuple(_MODULES) + ("auto",)
# Other libraries' names for the GPU backend (PuzzleLib's is "cuda").
_ALIASES = {"cuda": "cupy", "gpu": "cupy"}

_instances: dict[str, Backend] = {}
_current: Optional[Backend] = None
_why = ""  # how the current backend was chosen, for describe()


def _module(name: str):
    return importlib.import_module(_MODULES[name], __name__)


def _check_name(name: object, source: str = "") -> str:
    """``name`` in lower case, or UnknownBackendError saying where it came from (``source``) and what was meant."""
    if isinstance(name, str) and name.lower() in NAMES:
        return name.lower()
    hint = ""
    if isinstance(name, str) and name.lower() in _ALIASES:
        hint = (f"; did you mean {_ALIASES[name.lower()]!r}? (backends are named after their array library here: "
                f"cupy is the CUDA GPU backend, PuzzleLib's 'cuda')")
    elif isinstance(name, str):
        close = difflib.get_close_matches(name.lower(), NAMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownBackendError(f"unknown backend {name!r}{source}: expected one of {', '.join(NAMES)}{hint}")


def unavailable_reason(name: str) -> Optional[str]:
    """Why backend ``name`` cannot run here (missing package or device), or None when it can."""
    return _module(_check_name(name)).probe()


def available() -> list[str]:
    """Names of the backends usable on this machine, in preference order."""
    return [name for name in _AUTO_ORDER if unavailable_reason(name) is None]


def _short(reason: str) -> str:
    """A probe's reason without its install hint in parentheses (``the package 'cupy' is not installed``)."""
    return reason.split(" (", 1)[0]


def _resolve(name: str) -> tuple[str, str]:
    """The backend ``name`` stands for, and for ``auto`` why the ones before it were passed over."""
    if name != "auto":
        return name, ""
    passedOver = []
    for candidate in _AUTO_ORDER:
        reason = unavailable_reason(candidate)
        if reason is None:
            return candidate, "auto: " + "".join(f"{skipped}; " for skipped in passedOver)
        passedOver.append(_short(reason))
    raise BackendUnavailableError(f"no backend is usable here: {'; '.join(passedOver)}")


def describe() -> str:
    """The current backend and how it was chosen.

    For example ``numba (auto: CuPy found no CUDA device; PUZZLE_RMS_BACKEND unset)``: ``auto`` picked numba for
    the reason given, and the name ``auto`` came from the environment variable's default.
    """
    backend = current()
    return f"{backend.name} ({_why})"


def use(name: str, origin: str = "backends.use()") -> Backend:
    """Make backend ``name`` current and return it.

    ``origin`` says where the name came from (a command-line option, say); :func:`describe` reports it.

    Raises
    ------
    ValueError
        ``name`` is not a known backend.
    BackendUnavailableError
        The named backend's package or device is missing; the message says
        what is missing and how to install it. There is no silent fallback.
    """
    return _select(_check_name(name), origin)


def _select(name: str, origin: str) -> Backend:
    global _current, _why
    resolved, how = _resolve(name)
    if resolved not in _instances:
        reason = unavailable_reason(resolved)
        if reason is not None:
            raise BackendUnavailableError(f"backend {resolved!r} is not usable here: {reason}")
        getNumThreads()  # applies PUZZLE_RMS_THREADS (to NumPy's BLAS too) before the first computation
        _instances[resolved] = _module(resolved).create()
    _current, _why = _instances[resolved], how + origin
    return _current


def current() -> Backend:
    """The current backend; on first call it is chosen from ``PUZZLE_RMS_BACKEND`` (default auto).

    Raises UnknownBackendError (a ValueError) naming the variable when its value is not a backend name.
    """
    if _current is None:
        value = os.environ.get(ENV_VAR)
        origin = f"{ENV_VAR} unset" if value is None else f"{ENV_VAR}={value or repr(value)}"
        return _select(_check_name(value or "auto", f" in the environment variable {ENV_VAR}"), origin)
    return _current
