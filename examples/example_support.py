"""What the example scripts share: the command line, backend selection and the loss-curve plot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from puzzle_rms import backends

EXAMPLES_DIR = Path(__file__).resolve().parent


def select_backend(name: Optional[str]) -> backends.Backend:
    """Make backend ``name`` (the ``--backend`` option) current; None keeps the current one (chosen from
    ``PUZZLE_RMS_BACKEND`` at first use). :func:`puzzle_rms.backends.describe` then says which and why.

    Raises UnknownBackendError (a ValueError) for an unknown name and BackendUnavailableError for a backend that
    cannot run here.
    """
    return backends.current() if name is None else backends.use(name, origin=f"--backend {name}")


def parse_args(description: str, epochs: int, plotName: str, argv: Optional[Sequence[str]] = None,
               parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.Namespace:
    """The options every example takes: ``--backend``, ``--epochs``, ``--seed`` and ``--plot``/``--no-plot``.

    ``parents`` (parsers made with ``add_help=False``) add an example's own options.
    """
    parser = argparse.ArgumentParser(description=description, parents=list(parents))
    parser.add_argument("--backend", choices=backends.NAMES, default=None,
                        help=f"array backend (default: ${backends.ENV_VAR}, else auto)")
    parser.add_argument("--epochs", type=_positive_int, default=epochs, help=f"passes over the data (default {epochs})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, initial weights and shuffling")
    parser.add_argument("--plot", type=Path, default=EXAMPLES_DIR / plotName,
                        help="where to write the loss-curve PNG (needs matplotlib)")
    parser.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no plot")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def run(main: Callable[[argparse.Namespace], dict], args: argparse.Namespace) -> int:
    """Call ``main(args)``; an unknown backend name (from ``PUZZLE_RMS_BACKEND``) or a backend that cannot run here
    ends the script with a one-line ``error:`` and exit status 2."""
    try:
        main(args)
    except (backends.BackendUnavailableError, backends.UnknownBackendError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


class ProgressBar:
    """``prefix [#######.......] done/total`` for the minibatches of one epoch.

    On a terminal the bar is redrawn in place after every minibatch; elsewhere (a pipe, a log file) only the
    finished bar is printed, with :meth:`finish`'s summary on the same line.
    """

    WIDTH = 30

    def __init__(self, total: int, prefix: str, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.prefix, self.enabled = total, prefix, enabled
        self.stream = sys.stdout if stream is None else stream
        self.live = enabled and self.stream.isatty()

    def _bar(self, done: int) -> str:
        filled = self.WIDTH * done // self.total
        return f"{self.prefix} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total}"

    def update(self, done: int) -> None:
        """Show ``done`` of ``total`` steps (on a terminal only)."""
        if self.live:
            self.stream.write("\r" + self._bar(done))
            self.stream.flush()

    def finish(self, summary: str) -> None:
        """Print the full bar followed by ``summary`` and end the line."""
        if self.enabled:
            self.stream.write(("\r" if self.live else "") + f"{self._bar(self.total)}  {summary}\n")
            self.stream.flush()


PLOT_DPI = 200  # with a 8 x 5 inch figure: 1600 x 1000 pixels, sharp on a high-DPI screen


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or None (after saying so) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so no plot was written (pip install -e \".[plot]\")")
        return None
    return plt


def plot_curves(axes: Any, curves: dict[str, list[float]], ylabel: str, notes: Sequence[str], log: bool) -> None:
    """Each named per-epoch curve on ``axes`` with a grid, and ``notes`` (final metric, settings), if any, in the top
    right corner."""
    for label, values in curves.items():
        axes.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 30 else None, markersize=3,
                  label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    if log:
        axes.set_yscale("log")
    axes.grid(True, which="major", alpha=0.4)
    axes.grid(True, which="minor", alpha=0.15)
    axes.legend(loc="lower left")
    if notes:
        box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.9, "edgecolor": "0.7"}
        axes.text(0.98, 0.97, "\n".join(notes), transform=axes.transAxes, ha="right", va="top", fontsize=8,
                  family="monospace", bbox=box)


def save_figure(plt: Any, figure: Any, path: Path, what: str) -> Path:
    """Write ``figure`` (made with ``layout="constrained"``) to ``path`` as a PNG at :data:`PLOT_DPI`, close it and
    say where it went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=PLOT_DPI)
    plt.close(figure)
    print(f"{what} written to {path}")
    return path


def save_loss_plot(path: Optional[Path], curves: dict[str, list[float]], title: str, ylabel: str,
                   notes: Sequence[str] = ()) -> Optional[Path]:
    """Plot each named per-epoch curve to ``path`` as a PNG, with ``notes`` (the final test metric, the run's
    settings) in a corner; return the path, or None (no path, or no matplotlib)."""
    if path is None:
        return None
    plt = pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
    plot_curves(axes, curves, ylabel, notes, log=True)
    axes.set_title(title)
    return save_figure(plt, figure, path, "loss curve")
