"""Every case of every ``tests/goldens/*.json``, printed by the real frameworks, through puzzle_rms.

Optimizer cases run ``RMSProp.like(preset, **kwargs)`` (with the framework's parameter groups through
:func:`~puzzle_rms.optimizers.presets.preset_group`) on the case's parameters and per-step gradients,
in local and global state; op cases run the named function of :mod:`puzzle_rms.ops`. After every step
each parameter (and op state array) must satisfy ``|got - want| <= atol + rtol * |want|`` (float32,
default atol 1e-6, rtol 1e-5), on every available backend. A case marked ``deliberate`` must show
exactly its documented difference instead (see ``tests/goldens/README.md``). No framework is needed:
the files hold the framework's numbers.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from backend_switch import using

from puzzle_rms import backends, ops
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.optimizers.presets import preset_group
from puzzle_rms.optimizers.schedules import CosineDecay, ExponentialDecay, PiecewiseConstant
from puzzle_rms.sparse import RowSparseVariable
from puzzle_rms.variable import Variable

GOLDENS = Path(__file__).parent / "goldens"
FILES = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(GOLDENS.glob("*.json"))}
CASES = [(stem, case) for stem, document in FILES.items() for case in document["cases"]]
BACKENDS = ["numpy", "numba", pytest.param("cupy", marks=pytest.mark.gpu)]
OP_STATE = {"ms": "meanSquare", "mom": "moment", "mg": "meanGrad"}


# --- reading the file format ----------------------------------------------------------------------
def array(values: Any) -> np.ndarray:
    """Nested lists of floats (NaN/inf written as strings) as a float32 array."""
    return np.array(values, dtype=object).astype(np.float32) if _has_strings(values) else np.array(values, np.float32)


def _has_strings(values: Any) -> bool:
    return isinstance(values, str) or (isinstance(values, list) and any(_has_strings(v) for v in values))


def _lr_schedule(spec: dict) -> Callable[[int], float]:
    """A schedule written under the framework's own names (README: "Schedule values") as a puzzle_rms one."""
    kind = spec["schedule"]
    if kind == "ExponentialDecay":  # keras.optimizers.schedules
        return ExponentialDecay(spec["initial_learning_rate"], spec["decay_rate"], spec["decay_steps"],
                                spec.get("staircase", False))
    if kind == "CosineDecay":
        return CosineDecay(spec["initial_learning_rate"], spec["decay_steps"], spec.get("alpha", 0.0))
    if kind == "PiecewiseConstantDecay":  # Keras: values[i + 1] once step > boundaries[i] (integer steps)
        return PiecewiseConstant([b + 1 for b in spec["boundaries"]], spec["values"])
    if kind == "optax.exponential_decay":
        return ExponentialDecay(spec["init_value"], spec["decay_rate"], spec["transition_steps"],
                                spec.get("staircase", False))
    if kind == "optax.cosine_decay_schedule":
        return CosineDecay(spec["init_value"], spec["decay_steps"], spec.get("alpha", 0.0))
    if kind == "optax.piecewise_constant_schedule":
        boundaries = [b for b, _ in spec["boundaries_and_scales"]]
        values = np.cumprod([spec["init_value"]] + [s for _, s in spec["boundaries_and_scales"]]).tolist()
        return PiecewiseConstant(boundaries, values)
    if kind == "tf1.exponential_decay":  # global_step counts the updates done
        return ExponentialDecay(spec["learning_rate"], spec["decay_rate"], spec["decay_steps"],
                                spec.get("staircase", False))
    if kind == "torch.ExponentialLR":  # lr_scheduler stepped after every optimizer step
        return ExponentialDecay(spec["lr"], spec["gamma"], 1)
    if kind == "torch.StepLR":
        return ExponentialDecay(spec["lr"], spec["gamma"], spec["step_size"], staircase=True)
    raise ValueError(f"test_goldens: unknown schedule {kind!r} (documented ones: tests/goldens/README.md)")


def kwargs_of(values: dict) -> dict:
    """The case's kwargs with schedule values turned into schedule objects."""
    return {k: _lr_schedule(v) if isinstance(v, dict) and "schedule" in v else v for k, v in values.items()}


def sparse_names(case: dict) -> set:
    return {name for step in case["steps"] for name, grad in step.items() if "indices" in grad}


# --- running a case -------------------------------------------------------------------------------
def run_optimizer_case(case: dict, useGlobalState: bool) -> list[dict[str, np.ndarray]]:
    """The parameters after each step, as host float32 arrays."""
    backend = backends.current()
    rowSparse = sparse_names(case)
    variables = {name: (RowSparseVariable if name in rowSparse else Variable)(
        backend.to_device(array(case["params"][name])), name=name) for name in case["names"]}
    if case.get("groups"):
        target = [{**preset_group(case["preset"], {k: kwargs_of({k: v})[k] for k, v in group.items() if k != "params"}),
                   "params": {name: variables[name] for name in group["params"]}} for group in case["groups"]]
    else:
        target = variables
    optimizer = RMSProp.like(case["preset"], **kwargs_of(case["kwargs"]))
    optimizer.setupOn(target, useGlobalState=useGlobalState)
    trajectory = []
    for step in case["steps"]:
        optimizer.zeroGradParams()
        for name, grad in step.items():
            if "dense" in grad:
                variables[name].grad[...] = backend.to_device(array(grad["dense"]))
            else:
                variables[name].rowGrad.add(backend.to_device(np.array(grad["indices"], np.int64)),
                                            backend.to_device(array(grad["values"])))
        optimizer.update()
        trajectory.append({name: backend.to_host(var.data).copy() for name, var in variables.items()})
    return trajectory


def run_op_case(case: dict) -> list[dict[str, Any]]:
    """``var`` and the state arrays after each step of ``puzzle_rms.ops.<op>``."""
    backend = backends.current()
    function = getattr(ops, case["op"])
    var = backend.to_device(array(case["params"]["var"]))
    state = {name: backend.to_device(array(values)) for name, values in case["state"].items()}
    trajectory = []
    for t, step in enumerate(case["steps"]):
        scalars = {k: float(v[t] if isinstance(v, list) else v) for k, v in case["scalars"].items()}
        grad = step["var"]
        arguments = {"var": var, **{OP_STATE[name]: value for name, value in state.items()}, **scalars,
                     **case.get("options", {})}
        if "dense" in grad:
            arguments["grad"] = backend.to_device(array(grad["dense"]))
        else:
            arguments["grad"] = backend.to_device(array(grad["values"]))
            arguments["indices"] = backend.to_device(np.array(grad["indices"], np.int64))
        function(**arguments)
        trajectory.append({"var": backend.to_host(var).copy(),
                           "state": {name: backend.to_host(value).copy() for name, value in state.items()}})
    return trajectory


def flatten(after: dict) -> dict[str, Any]:
    """{"var": a, "state": {"ms": b}} -> {"var": a, "state.ms": b}; optimizer entries unchanged."""
    out = {}
    for name, value in after.items():
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            out[name] = value
    return out


# --- comparing --------------------------------------------------------------------------------------
def mismatch(got: np.ndarray, want: np.ndarray, tolerance: dict) -> np.ndarray:
    """Where ``got`` is outside the tolerance around ``want`` (NaN matches NaN, inf matches the same inf)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    close = np.abs(got - want) <= tolerance["atol"] + tolerance["rtol"] * np.abs(want)
    same = (np.isnan(got) & np.isnan(want)) | (np.isinf(want) & (got == want))
    return ~(close | same)


def compare(case: dict, got: list[dict], want: list[dict]) -> list[str]:
    """One line per (step, array) that does not match, with the largest error."""
    problems = []
    for t, (g, w) in enumerate(zip(got, want)):
        g, w = flatten(g), flatten(w)
        for name, values in w.items():
            bad = mismatch(g[name], array(values), case["tolerance"])
            if bad.any():
                err = np.abs(np.asarray(g[name], np.float64) - array(values).astype(np.float64))
                problems.append(f"step {t + 1} {name}: {int(bad.sum())} of {bad.size} elements differ, "
                                f"max |got - want| {np.nanmax(np.where(bad, err, 0)):.3g}")
    return problems


def check_centered_clamp(case: dict, got: list[dict]) -> None:
    """The framework went NaN (centered variance rounded below 0); puzzle_rms clamps at 0: every element the
    framework left finite matches, every NaN element is finite here, and there is at least one."""
    nanSeen = False
    for t, (g, w) in enumerate(zip(got, case["expected"])):
        g, w = flatten(g), flatten(w)
        for name, values in w.items():
            want = array(values)
            nan = np.isnan(want)
            nanSeen |= bool(nan.any())
            assert np.isfinite(g[name][nan]).all(), f"step {t + 1} {name}: clamped elements must stay finite"
            bad = mismatch(g[name][~nan], want[~nan], case["tolerance"])
            assert not bad.any(), f"step {t + 1} {name}: {int(bad.sum())} finite elements differ"
    assert nanSeen, "a centered-clamp case must contain the framework's NaN"


def check_documented(case: dict, got: list[dict]) -> None:
    """puzzle_rms follows the documented formula (``expected_puzzle_rms``, from the generator's NumPy
    reference), and the framework's numbers really differ from it."""
    assert "expected_puzzle_rms" in case, f"deliberate {case['deliberate']!r} needs expected_puzzle_rms"
    problems = compare(case, got, case["expected_puzzle_rms"])
    assert not problems, "\n".join(problems)
    assert compare(case, got, case["expected"]), "the documented difference does not show: the framework agrees"


DELIBERATE = {"centered-clamp": check_centered_clamp}


# --- the tests ----------------------------------------------------------------------------------------
def case_ids() -> list[str]:
    return [f"{stem}:{case['id']}" for stem, case in CASES]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stem, case", CASES, ids=case_ids())
def test_golden_case(stem, case, backend):
    with using(backend):
        states = [False, True] if case["kind"] == "optimizer" else [None]
        for useGlobalState in states:
            got = run_optimizer_case(case, useGlobalState) if case["kind"] == "optimizer" else run_op_case(case)
            where = f"{stem}:{case['id']} ({case['call']}) on {backend}" + (
                "" if useGlobalState is None else f", useGlobalState={useGlobalState}")
            if case["deliberate"] is None:
                problems = compare(case, got, case["expected"])
                assert not problems, where + "\n" + "\n".join(problems)
            else:
                DELIBERATE.get(case["deliberate"], check_documented)(case, got)


def test_golden_files_are_well_formed():
    assert FILES, f"no golden files in {GOLDENS}"
    readme = (GOLDENS / "README.md").read_text(encoding="utf-8")
    for stem, document in FILES.items():
        assert document["framework"] == stem and document["version"] and document["generator"], stem
        ids = [case["id"] for case in document["cases"]]
        assert len(ids) == len(set(ids)), f"{stem}: case ids repeat"
        for case in document["cases"]:
            assert case["kind"] in ("optimizer", "op"), (stem, case["id"])
            assert len(case["steps"]) == len(case["expected"]) >= 1, (stem, case["id"])
            assert case["dtype"] == "float32", (stem, case["id"])
            if case["deliberate"] is not None:
                assert f"`{case['deliberate']}`" in readme, f"{stem}:{case['id']}: deliberate " \
                                                            f"{case['deliberate']!r} is not documented in the README"
