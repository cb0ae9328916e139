"""One line on stderr when Numba starts compiling this package's kernels, so a cold first run is not a silent wait.

The kernels are compiled with ``cache=True``. Numba fires its ``numba:compile`` event only when it is about to
compile a signature for real: a hit in the disk cache loads the machine code without it. So a process that finds
the cache warm prints nothing, and one that compiles (first run on a machine, a new dtype, a changed kernel source
or Numba version) prints :data:`MESSAGE` once.
"""
from __future__ import annotations

import sys

from numba.core import event

MESSAGE = "compiling Numba kernels (first run only, ~5 s)..."

_installed = False


class CompileNotice(event.Listener):
    """Prints :data:`MESSAGE` once, when a function of module ``module`` starts compiling."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.shown = False

    def on_start(self, ev: event.Event) -> None:
        if not self.shown and ev.data["dispatcher"].py_func.__module__ == self.module:
            self.shown = True
            print(MESSAGE, file=sys.stderr, flush=True)

    def on_end(self, ev: event.Event) -> None:
        """Nothing: the notice is printed when compiling starts."""


def install(module: str) -> None:
    """Listen for compiles of ``module``'s functions (once per process; later calls do nothing)."""
    global _installed
    if not _installed:
        event.register("numba:compile", CompileNotice(module))
        _installed = True
