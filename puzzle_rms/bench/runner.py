"""One case from start to finish: build its rows per device, time them, and summarise them as plain data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.bench.baselines import naive_embedding_row, naive_row, torch_rows
from puzzle_rms.bench.cases import Case, case_arrays
from puzzle_rms.bench.probes import cpu_probe, gpu_probes
from puzzle_rms.bench.library_rows import embedding_rows, optimizer_rows
from puzzle_rms.bench.timing import Row, measure


@dataclass
class CaseResult:
    """One case's timed rows and the notes on what it left out."""

    case: Case
    rows: list[Row]
    notes: list[str]

    def summary(self) -> dict[str, Any]:
        """The case and its rows as plain data; ``ofProbe`` = probe time / row time on the same device."""
        rows = [row.summary() for row in self.rows]
        probes = {r["device"]: r["medianMs"] for r in rows if r["kind"] == "probe"}
        copies = {r["device"]: r["medianMs"] for r in rows if r["kind"] == "copy"}
        for r in rows:
            dense = self.case.embedding is None and r["kind"] not in ("probe", "copy")
            r["ofProbe"] = probes[r["device"]] / r["medianMs"] if dense and r["device"] in probes else None
            r["ofCopy"] = copies[r["device"]] / r["medianMs"] if dense and r["device"] in copies else None
        return {"name": self.case.name, "family": self.case.family, "variant": self.case.variant,
                "params": self.case.params, "tensors": self.case.tensors, "tensorSize": self.case.tensorSize,
                "dtype": self.case.dtype, "bytesPerParam": self.case.bytesPerParam,
                "embedding": list(self.case.embedding) if self.case.embedding else None,
                "title": self.case.title(), "rows": rows, "speedups": speedups(rows), "notes": self.notes}


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How many times faster each global-state update row is than the naive, torch, local-state and flat rows
    of its device (the ratio of median times)."""
    out = []
    for r in rows:
        if r["kind"] != "update" or r["state"] != "global":
            continue
        for base in rows:
            sameBackend = (base["backend"] == r["backend"] and base["kind"] == "update"
                           and base["state"] in ("local", "flat") and base["nonFinite"] == r["nonFinite"])
            if base["device"] == r["device"] and (base["kind"] in ("naive", "torch") or sameBackend):
                out.append({"backend": r["backend"], "row": r["label"], "baseline": base["label"],
                            "baselineBackend": base["backend"], "ratio": base["medianMs"] / r["medianMs"]})
    return out


def run_case(case: Case, backendNames: Sequence[str], torch: Any, repeat: int, warmup: int, minTime: float,
             naive: bool, seed: int, progress: Callable[[str], None]) -> CaseResult:
    """Build every row of ``case`` for the chosen backends, time them per device, and return the result."""
    notes: list[str] = []
    arrays = case_arrays(case, seed) if case.embedding is None else []
    devices = {"cpu": [b for b in backendNames if b != "cupy"], "gpu": [b for b in backendNames if b == "cupy"]}
    if case.dtype == "float16" and not devices["gpu"]:
        return CaseResult(case, [], ["skipped: float16 parameters are timed on the GPU only (the cupy backend is "
                                     f"{'not selected' if 'cupy' not in backendNames else 'not usable'}); Numba has "
                                     "no float16 arithmetic and converts through float32 copies"])
    allRows: list[Row] = []
    for device, names in devices.items():
        if not names or (case.dtype == "float16" and device == "cpu"):
            continue
        rows: list[Row] = []
        if device == "cpu":
            xp, sync, torchDevice = np, (lambda: None), "cpu"
        else:
            xp = backends.use("cupy").xp
            sync, torchDevice = xp.cuda.get_current_stream().synchronize, "cuda"
        if case.embedding is None:
            if device == "cpu":
                probe = cpu_probe(case, case.params)
                if probe is None:
                    notes.append("no CPU probe: Numba is not installed (NumPy cannot fuse the pattern loop)")
                rows += [probe] if probe is not None else []
            else:
                rows += gpu_probes(case, case.params)
            for name in names:
                rows += optimizer_rows(case, name, arrays, device)
            if naive:
                rows.append(naive_row(case, xp, arrays, device, sync))
            if torch is not None and (device == "cpu" or torch.cuda.is_available()):
                rows += torch_rows(case, torch, arrays, torchDevice)
        else:
            for name in names:
                rows += embedding_rows(case, name, device, seed)
            if naive:
                rows.append(naive_embedding_row(case, xp, device, seed, sync))
        measure(rows, repeat, warmup, minTime, lambda text: progress(f"{device}: {text}"))
        allRows += rows
    if case.embedding is not None:
        notes.append("no torch row: torch.optim.RMSprop does not accept sparse gradients")
    elif torch is None:
        notes.append("no torch rows: torch is not installed (pip install torch) or --no-torch was given")
    return CaseResult(case, allRows, notes)
