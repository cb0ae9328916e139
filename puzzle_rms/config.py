"""Config: PuzzleLib's backend switch, ``Config.backend = Config.Backend.cuda | cpu | intel``."""
from __future__ import annotations

from enum import Enum

from puzzle_rms import backends


class Backend(str, Enum):
    """PuzzleLib's backend names."""

    cuda = "cuda"
    hip = "hip"
    cpu = "cpu"
    intel = "intel"


BACKEND_NAMES = {Backend.cuda: "cupy", Backend.cpu: "numba", Backend.intel: "numpy"}


class ConfigNamespace:
    """What ``from puzzle_rms import Config`` gives: ``Config.backend`` reads and sets the current backend by
    PuzzleLib's name (cuda -> cupy, cpu -> numba, intel -> numpy; hip has no counterpart here).

    Setting it switches at once, as :func:`puzzle_rms.backends.use` does, with the same error when the
    backend cannot run here; set it before creating modules and arrays.
    """

    Backend = Backend

    @property
    def backend(self) -> Backend:
        name = backends.current().name
        return next(key for key, value in BACKEND_NAMES.items() if value == name)

    @backend.setter
    def backend(self, value: Backend | str) -> None:
        try:
            key = Backend(value)
        except ValueError:
            raise ValueError(f"Config.backend must be one of {[b.value for b in Backend]}, got {value!r}") from None
        if key not in BACKEND_NAMES:
            raise ValueError(f"Config.backend {key.value!r} has no counterpart here; expected one of "
                             f"{[b.value for b in BACKEND_NAMES]} (cupy, numba, numpy)")
        backends.use(BACKEND_NAMES[key])


Config = ConfigNamespace()
