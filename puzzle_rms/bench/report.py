"""What a run prints and writes: the machine it ran on, one table per case, and the JSON file."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np


def load_average() -> Optional[tuple[float, float, float]]:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def machine_info(torch: Any) -> dict[str, Any]:
    """Date, CPU, core count, load and library versions, for the header and the JSON file."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "nproc": os.cpu_count(),
                            "python": platform.python_version(), "numpy": np.__version__,
                            "loadavg": load_average(),
                            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")}
    if "numba" in sys.modules:
        import numba

        info["numba"] = numba.__version__
        info["numbaThreads"] = numba.get_num_threads()
        try:
            info["numbaThreadingLayer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel ran yet
            info["numbaThreadingLayer"] = None
    if torch is not None:
        info["torch"] = torch.__version__
        info["torchThreads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["torchGpu"] = torch.cuda.get_device_name()
    if "cupy" in sys.modules:
        import cupy

        info["cupy"] = cupy.__version__
        info["gpu"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return info


def format_header(info: dict[str, Any]) -> str:
    """The run's first lines: machine, load before and after (``info["loadavgBefore"]``), versions, units."""
    return (f"puzzle_rms.bench {info['date']} | {info['cpu']} | nproc {info['nproc']} | load before/after "
            f"{_load(info['loadavgBefore'])} / {_load(info['loadavg'])} | numpy {info['numpy']}"
            + (f" | numba {info['numba']} ({info['numbaThreads']} threads, {info['numbaThreadingLayer']})"
               if "numba" in info else "")
            + (f" | torch {info['torch']} ({info['torchThreads']} threads)" if "torch" in info else "")
            + (f" | GLIBC_TUNABLES={info['GLIBC_TUNABLES']}" if info["GLIBC_TUNABLES"] else "")
            + "\nGB/s counts the step's own bytes (nonFinite=raise reads g once more); 'of probe' = probe time / row "
              "time.")


def format_case(summary: dict[str, Any]) -> str:
    """A fixed-width table of one case, its speed-ups and its notes."""
    lines = [f"== {summary['name']}: {summary['title']} =="]
    if summary["rows"]:
        header = (f"{'dev':3} {'backend':7} {'row':62} {'min ms':>9} {'median ms':>10} {'max ms':>9} {'GB/s':>6} "
                  f"{'of probe':>8}")
        lines += [header, "-" * len(header)]
        for r in summary["rows"]:
            ofProbe = r["ofProbe"] if r["ofProbe"] is not None else r["ofCopy"]
            lines.append(f"{r['device']:3} {r['backend']:7} {r['label'][:62]:62} {r['minMs']:9.3f} "
                         f"{r['medianMs']:10.3f} {r['maxMs']:9.3f} {r['gbps']:6.1f} "
                         f"{'' if ofProbe is None else f'{ofProbe:.0%}':>8}")
        byRow: dict[tuple[str, str], list[str]] = {}
        for s in summary["speedups"]:
            byRow.setdefault((s["backend"], s["row"]), []).append(f"{s['ratio']:.1f}x {s['baseline']}")
        for (backend, row), parts in byRow.items():
            lines.append(f"  speed-up of {backend} {row}: " + "; ".join(parts))
    lines += [f"  note: {note}" for note in summary["notes"]]
    return "\n".join(lines)


def _load(load: Optional[Sequence[float]]) -> str:
    return "n/a" if load is None else f"{load[0]:.2f}"


def write_json(report: dict[str, Any], path: str) -> None:
    """Every number of the run, indented, NumPy scalars as plain numbers."""
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
    """NumPy scalars as Python numbers (json writes lists, tuples and dicts itself)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
