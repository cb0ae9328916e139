"""The project's benchmark goals, and which of them a run met.

Each goal is a ratio that the global-state ``RMSProp.update()`` (in the train case, the whole training step)
should reach on one case: a fraction of the same-run probe (or device copy), or a speed-up over a baseline
row. Only cases that ran are checked.
"""
from __future__ import annotations

from typing import Any

# (device, case, backend, what, threshold): ``what`` is "ofProbe" or "ofCopy" (that fraction of the same-run
# ceiling), "flat" (flat-tensor time / this time) or a baseline row's label (baseline time / this time).
GOALS = (
    ("cpu", "16M", "numba", "ofProbe", 0.9),
    ("cpu", "16M", "numba", "torch.optim.RMSprop foreach=True (cpu)", 6.0),
    ("cpu", "16M", "numba", "naive numpy (textbook, temporaries)", 8.0),
    ("cpu", "2000x100", "numba", "torch.optim.RMSprop foreach=True (cpu)", 100.0),
    ("cpu", "64M", "numba", "ofProbe", 0.85),
    ("cpu", "2000x100", "numba", "flat", 1 / 1.2),
    ("cpu", "16M", "numpy", "naive numpy (textbook, temporaries)", 2.0),
    ("gpu", "64M", "cupy", "ofCopy", 0.9),
    ("gpu", "2000x100", "cupy", "torch.optim.RMSprop foreach=True (cuda)", 10.0),
) + tuple(  # the whole training step of the MLP 256-W-W-1 (the train case): never slower than torch, 2x at 64x64
    ("cpu", f"mlp{width}-b{batch}", "numba", "torch training step (cpu)", 2.0 if width == batch == 64 else 1.0)
    for width in (64, 512, 2048) for batch in (64, 256))


# (device, size, backend, stateDtype, threshold): the float32-state step time / this stateDtype's, same run
STATE_GOALS = (
    ("cpu", 64 << 20, "numba", "bfloat16", 1.2),
    ("cpu", 64 << 20, "numba", "int8", 1.3),
    ("gpu", 64 << 20, "cupy", "bfloat16", 1.2),
    ("gpu", 64 << 20, "cupy", "int8", 1.3),
)


def state_goal_checks(state: Any) -> list[dict[str, Any]]:
    """Each state goal against the ``state`` case's timing rows that ran (none when the case did not run)."""
    checks = []
    for device, size, backend, stateDtype, threshold in STATE_GOALS:
        for r in (state or {}).get("timing", []):
            if (r["device"], r["size"], r["backend"], r["stateDtype"]) == (device, size, backend, stateDtype):
                checks.append({"case": f"state-{size >> 20}M", "variant": "plain", "backend": backend,
                               "row": f"stateDtype={stateDtype}", "what": "float32", "threshold": threshold,
                               "value": r["speedup"], "met": r["speedup"] >= threshold})
    return checks


def goal_checks(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal against the global-state update rows (nonFinite ignore and raise) of the cases that ran."""
    checks = []
    for device, name, backend, what, threshold in GOALS:
        for case in (c for c in cases if c["name"] == name):
            for r in (r for r in case["rows"] if r["device"] == device and r["backend"] == backend
                      and r["kind"] in ("update", "train") and r["state"] == "global"):
                if what in ("ofProbe", "ofCopy"):
                    value = r[what]
                else:
                    found = [s["ratio"] for s in case["speedups"] if s["row"] == r["label"] and s["backend"] == backend
                             and (s["baseline"] == what or (what == "flat" and "flat tensor" in s["baseline"]))]
                    value = found[0] if found else None
                if value is not None:
                    checks.append({"case": name, "variant": case["variant"], "backend": backend, "row": r["label"],
                                   "what": what, "threshold": threshold, "value": value, "met": value >= threshold})
    return checks


def format_goals(checks: list[dict[str, Any]]) -> str:
    """One line per check of :func:`goal_checks`: met or MISSED, the value and the goal."""
    lines = ["== benchmark goals =="]
    for c in checks:
        what = {"ofProbe": "of the same-run probe", "ofCopy": "of the same-run device copy",
                "flat": "flat-tensor time / this time (within 1.2x means >= 0.83)",
                "float32": "x faster than float32 state"}.get(c["what"], f"x faster than {c['what']}")
        lines.append(f"  {'met   ' if c['met'] else 'MISSED'} {c['case']} {c['variant']} {c['backend']} {c['row']}: "
                     f"{c['value']:.2f} (goal >= {c['threshold']:.2f}) {what}")
    return "\n".join(lines)
