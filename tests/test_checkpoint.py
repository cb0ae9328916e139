"""Checkpoints: exact resume in a fresh process, across backends and state modes; atomic writes; strict loading.

Run as a script (``python tests/test_checkpoint.py PHASE ...``) this file is also the worker that the
fresh-process and crash tests start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_switch import using

from puzzle_rms import backends
from puzzle_rms import checkpoint
from puzzle_rms.checkpoint import (CheckpointError, CheckpointMismatchError, checkpointInfo, loadModule,
                                   loadTraining, saveModule, saveTraining)
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import SGD, DynamicLossScale, ExponentialDecay, RMSProp
from puzzle_rms.variable import Variable

ROOT = Path(__file__).resolve().parent.parent
DATA = np.random.default_rng(123)
X = DATA.standard_normal((4, 6, 3))
Y = DATA.standard_normal((4, 6, 2))
POISON = (2, 7)  # steps whose gradient gets a NaN: skipped (and the dynamic loss scale backs off)
N_FIRST, M_MORE = 5, 7


def host(array: Any) -> np.ndarray:
    return np.array(backends.current().to_host(array))


def build_model(seed: int, dtype: Any = np.float32) -> Sequential:
    rng = np.random.default_rng(seed)
    model = Sequential()
    model.extend([Linear(3, 5, rng=rng), Activation(tanh), Linear(5, 2, rng=rng)])
    if np.dtype(dtype) != np.float32:
        model.calcMode(dtype)
    return model


def build_optimizer(kind: str) -> RMSProp:
    """Two option sets that make every piece of resumable state matter."""
    if kind == "rich":  # schedule and bias correction read t; the dynamic loss scale grows and backs off
        return RMSProp(ExponentialDecay(0.02, 0.5, 6), factor=0.8, epsilon=1e-3, epsInSqrt=True, momentum=0.7,
                       centered=True, biasCorrection=True, weightDecay=1e-3,
                       lossScale=DynamicLossScale(initialScale=64.0, growthInterval=3), clipNorm=5.0)
    if kind == "half":  # float16 parameters with float32 master weights, skipped steps counted
        return RMSProp(0.01, momentum=0.5, lrInMomentum=False, masterWeights=True, nonFinite="skip")
    raise ValueError(kind)


def train(model: Sequential, optimizer: RMSProp, start: int, stop: int) -> None:
    """Updates number ``start`` to ``stop - 1``; the batch and any poisoning depend on the update number only."""
    first = next(iter(model.namedVariables().values()))
    for k in range(start, stop):
        optimizer.zeroGradParams()
        _, grad = MSE()(model(X[k % 4]), Y[k % 4])
        model.backward(grad * optimizer.lossScaleValue)
        if k in POISON:
            first.grad[(0,) * first.grad.ndim] = np.nan
        optimizer.update()


def snapshot(model: Sequential, optimizer: RMSProp) -> dict[str, np.ndarray]:
    """Every parameter, every state buffer and the optimizer's counters, as host arrays."""
    out = {}
    for name, var in model.namedVariables().items():
        out[f"param:{name}"] = host(var.data)
        for buffer, view in optimizer.stateOf(name).items():
            out[f"state:{name}:{buffer}"] = host(view)
    out["t"] = np.array(optimizer.t)
    out["skippedSteps"] = np.array(optimizer.skippedSteps)
    scale = optimizer.lossScale
    out["lossScale"] = np.array([scale.scale, scale.goodSteps] if isinstance(scale, DynamicLossScale) else [0, 0])
    return out


def assert_bitwise_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert actual[key].dtype == expected[key].dtype and actual[key].shape == expected[key].shape, key
        assert actual[key].tobytes() == expected[key].tobytes(), f"{key} differs"


# (backend, useGlobalState when saving, useGlobalState when resuming, option set)
RESUME_CASES = [
    ("numpy", True, True, "rich"), ("numpy", False, False, "rich"), ("numba", True, True, "rich"),
    ("numba", False, False, "rich"), ("numba", True, False, "rich"), ("numpy", False, True, "rich"),
    ("numba", True, True, "half"), ("numpy", False, False, "half"), ("numba", False, True, "half"),
]


def case_id(case: tuple) -> str:
    backend, saveGlobal, loadGlobal, kind = case
    mode = lambda flag: "global" if flag else "local"  # noqa: E731
    return f"{backend}-{mode(saveGlobal)}-to-{mode(loadGlobal)}-{kind}"


def dtype_of(kind: str) -> Any:
    return np.float16 if kind == "half" else np.float32


def run_worker(*args: str, **popen: Any) -> Any:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env, **popen)


def worker_first(folder: str) -> None:
    """Fresh process 1: N updates from the seed-0 model, then saveTraining."""
    for case in RESUME_CASES:
        backend, saveGlobal, _, kind = case
        backends.use(backend)
        model = build_model(0, dtype_of(kind))
        optimizer = build_optimizer(kind)
        optimizer.setupOn(model, useGlobalState=saveGlobal)
        train(model, optimizer, 0, N_FIRST)
        saveTraining(os.path.join(folder, case_id(case) + ".npz"), model, optimizer)


def worker_resume(folder: str) -> None:
    """Fresh process 2: a differently initialised model, loadTraining, M more updates; write a snapshot."""
    for case in RESUME_CASES:
        backend, _, loadGlobal, kind = case
        backends.use(backend)
        model = build_model(99, dtype_of(kind))
        optimizer = build_optimizer(kind)
        optimizer.setupOn(model, useGlobalState=loadGlobal)
        loadTraining(os.path.join(folder, case_id(case) + ".npz"), model, optimizer)
        train(model, optimizer, N_FIRST, N_FIRST + M_MORE)
        np.savez(os.path.join(folder, case_id(case) + ".result.npz"), **snapshot(model, optimizer))


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    for phase in ("first", "resume"):
        proc = run_worker(phase, str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    for case in RESUME_CASES:
        backend, saveGlobal, _, kind = case
        with using(backend):
            model = build_model(0, dtype_of(kind))
            optimizer = build_optimizer(kind)
            optimizer.setupOn(model, useGlobalState=saveGlobal)
            train(model, optimizer, 0, N_FIRST + M_MORE)
            expected = snapshot(model, optimizer)
        with np.load(tmp_path / (case_id(case) + ".result.npz")) as result:
            actual = {key: result[key] for key in result.files}
        assert_bitwise_equal(actual, expected)
        # the run really exercised the resumable state
        assert expected["t"] == N_FIRST + M_MORE - len(POISON)
        if kind == "half":
            assert expected["skippedSteps"] == len(POISON) and "state:0.W:master" in expected
        else:  # 64, halved at steps 2 and 7, doubled after 3 good steps in a row: at 5 (just resumed) and 10
            assert expected["lossScale"].tolist() == [64.0, 1]
            saved = checkpointInfo(tmp_path / (case_id(case) + ".npz"))["optimizer"]["lossScaleState"]
            assert saved == {"scale": 32.0, "goodSteps": 2}


# --- in one process: state modes, backends, what the file holds ---------------------------------
@pytest.mark.parametrize("saveGlobal,loadGlobal", [(True, False), (False, True), (True, True), (False, False)])
def test_load_restores_every_array_and_counter_in_either_state_mode(backend_name, tmp_path, saveGlobal, loadGlobal):
    model, optimizer = build_model(0), build_optimizer("rich")
    optimizer.setupOn(model, useGlobalState=saveGlobal)
    train(model, optimizer, 0, N_FIRST)
    saved = snapshot(model, optimizer)
    optimizer.save(tmp_path / "opt.npz")
    model.save(tmp_path / "model.npz")
    fresh, freshOptimizer = build_model(7), build_optimizer("rich")
    freshOptimizer.setupOn(fresh, useGlobalState=loadGlobal)
    fresh.load(tmp_path / "model.npz")
    freshOptimizer.load(tmp_path / "opt.npz")
    assert_bitwise_equal(snapshot(fresh, freshOptimizer), saved)


@pytest.mark.parametrize("source,target", [("numpy", "numba"), ("numba", "numpy"),
                                           pytest.param("cupy", "numpy", marks=pytest.mark.gpu),
                                           pytest.param("numpy", "cupy", marks=pytest.mark.gpu)])
def test_checkpoint_moves_between_backends(tmp_path, source, target):
    with using(source):
        model, optimizer = build_model(0), build_optimizer("rich")
        optimizer.setupOn(model, useGlobalState=True)
        train(model, optimizer, 0, N_FIRST)
        saveTraining(tmp_path / "run.npz", model, optimizer)
        saved = snapshot(model, optimizer)
    with using(target):
        model, optimizer = build_model(1), build_optimizer("rich")
        optimizer.setupOn(model, useGlobalState=False)
        loadTraining(tmp_path / "run.npz", model, optimizer)
        assert_bitwise_equal(snapshot(model, optimizer), saved)
        assert checkpointInfo(tmp_path / "run.npz")["backend"] == source


def test_file_is_a_plain_npz_with_versioned_json_metadata(tmp_path):
    with using("numpy"):
        model, optimizer = build_model(0), build_optimizer("rich")
        optimizer.setupOn(model, useGlobalState=True)
        train(model, optimizer, 0, 3)
        saveTraining(tmp_path / "run.npz", model, optimizer)
        with np.load(tmp_path / "run.npz", allow_pickle=False) as archive:
            meta = json.loads(archive["__meta__"].tobytes().decode("utf-8"))
            assert archive["__meta__"].dtype == np.uint8
            np.testing.assert_array_equal(archive["param:0.W"], host(model.getVar("0.W").data))
            np.testing.assert_array_equal(archive["state:2.b:mom"], host(optimizer.stateOf("2.b")["mom"]))
            assert all(archive[key].dtype != object for key in archive.files)
    assert meta["format"] == "puzzle_rms.checkpoint" and meta["version"] == checkpoint.VERSION
    entry = next(e for e in meta["entries"] if e["key"] == "param:0.W")
    assert entry == {"key": "param:0.W", "section": "module", "variable": "0.W", "buffer": None,
                     "shape": [3, 5], "dtype": "float32"}
    buffers = {e["buffer"] for e in meta["entries"] if e["section"] == "optimizer"}
    assert buffers == {"ms", "mg", "mom"}
    hyper = meta["optimizer"]["hyperparameters"]
    assert hyper["class"] == "RMSProp" and hyper["factor"] == 0.8 and hyper["centered"] is True
    assert hyper["learnRate"]["initial"] == 0.02 and hyper["learnRate"]["decaySteps"] == 6
    assert hyper["lossScale"]["type"] == "DynamicLossScale" and hyper["lossScale"]["growthInterval"] == 3
    assert meta["optimizer"]["t"] == 2  # three updates, one of them (step 2) skipped
    assert meta["optimizer"]["lossScaleState"] == {"scale": 32.0, "goodSteps": 0}
    assert checkpointInfo(tmp_path / "run.npz") == meta


def test_sgd_and_raw_variables_round_trip(tmp_path):
    with using("numba"):
        variables = {"a": Variable(np.arange(6, dtype=np.float64).reshape(2, 3), name="a"),
                     "b": Variable(np.ones(4, np.float32), name="b")}
        optimizer = SGD(0.1)
        optimizer.setupOn(variables, useGlobalState=True)
        for var in variables.values():
            var.grad[...] = 1
        optimizer.update()
        saveTraining(tmp_path / "sgd.npz", variables, optimizer)
        copies = {name: Variable(np.zeros(var.shape, var.dtype), name=name) for name, var in variables.items()}
        other = SGD(0.1)
        other.setupOn(copies)
        loadTraining(tmp_path / "sgd.npz", copies, other)
        for name in variables:
            np.testing.assert_array_equal(copies[name].data, variables[name].data)
        assert other.t == 1


def test_every_shape_and_dtype_round_trips(backend_name, tmp_path):
    rng = np.random.default_rng(3)
    specs = [((), np.float32), ((0,), np.float64), ((1,), np.float16), ((0, 3), np.float16), ((2, 3, 4), np.float64)]

    def make(seed: int) -> dict[str, Variable]:
        gen = np.random.default_rng(seed)
        return {f"v{i}": Variable(gen.standard_normal(shape).astype(dtype), name=f"v{i}")
                for i, (shape, dtype) in enumerate(specs)}

    variables = make(0)
    optimizer = RMSProp(0.01, momentum=0.9, centered=True, masterWeights=True)
    optimizer.setupOn(variables, useGlobalState=True)
    for _ in range(2):
        for var in variables.values():
            var.grad[...] = rng.standard_normal(var.shape).astype(var.dtype)
        optimizer.update()
    saveTraining(tmp_path / "all.npz", variables, optimizer)
    copies = make(1)
    other = RMSProp(0.01, momentum=0.9, centered=True, masterWeights=True)
    other.setupOn(copies)
    loadTraining(tmp_path / "all.npz", copies, other)
    for name, var in variables.items():
        assert copies[name].shape == var.shape and copies[name].dtype == var.dtype
        assert host(copies[name].data).tobytes() == host(var.data).tobytes()
        saved, loaded = optimizer.stateOf(name), other.stateOf(name)
        assert sorted(saved) == sorted(loaded) and all(host(saved[k]).tobytes() == host(loaded[k]).tobytes()
                                                       for k in saved)
    assert "master" in other.stateOf("v2") and other.t == 2


# --- strict loading ------------------------------------------------------------------------------
def test_mismatching_names_shapes_and_dtypes_are_all_listed_and_nothing_changes(tmp_path):
    with using("numpy"):
        saved = {"w": Variable(np.ones((2, 3), np.float32), name="w"), "b": Variable(np.ones(3, np.float32), name="b"),
                 "h": Variable(np.ones(4, np.float32), name="h"), "gone": Variable(np.ones(1, np.float32), name="gone")}
        optimizer = RMSProp(0.1, momentum=0.9)
        optimizer.setupOn(saved, useGlobalState=True)
        for var in saved.values():
            var.grad[...] = 0.5
        optimizer.update()
        saveTraining(tmp_path / "run.npz", saved, optimizer)

        target = {"w": Variable(np.full((3, 2), 7, np.float32), name="w"),
                  "b": Variable(np.full(3, 7, np.float32), name="b"),
                  "h": Variable(np.full(4, 7, np.float64), name="h"),
                  "new": Variable(np.full(2, 7, np.float32), name="new")}
        other = RMSProp(0.1, momentum=0.9)
        other.setupOn(target, useGlobalState=False)
        for var in target.values():
            var.grad[...] = 0.25
        other.update()
        before = {name: (host(var.data).copy(), {k: host(v).copy() for k, v in other.stateOf(name).items()})
                  for name, var in target.items()}
        with pytest.raises(CheckpointMismatchError) as info:
            loadTraining(tmp_path / "run.npz", target, other)
    lines = info.value.mismatches
    for expected in ["parameter 'w': shape (2, 3) in the checkpoint, (3, 2) in the module",
                     "optimizer state 'ms' of 'w': shape (2, 3) in the checkpoint, (3, 2) in the optimizer",
                     "parameter 'h': dtype float32 in the checkpoint, float64 in the module",
                     "optimizer state 'mom' of 'h': dtype float32 in the checkpoint, float64 in the optimizer",
                     "parameter 'new': in the module but not in the checkpoint",
                     "parameter 'gone': in the checkpoint but not in the module",
                     "optimizer state 'ms' of 'gone': in the checkpoint but not in the optimizer"]:
        assert expected in lines
    assert not any("'b'" in line for line in lines)
    assert all(line in str(info.value) for line in lines)
    for name, var in target.items():  # nothing was modified, not even the matching 'b'
        data, state = before[name]
        assert host(var.data).tobytes() == data.tobytes()
        assert all(host(v).tobytes() == state[k].tobytes() for k, v in other.stateOf(name).items())
    assert other.t == 1


def test_hyperparameters_are_checked_unless_kept(tmp_path):
    with using("numpy"):
        variables = {"w": Variable(np.ones(3, np.float32), name="w")}
        optimizer = RMSProp(0.1, factor=0.9)
        optimizer.setupOn(variables)
        variables["w"].grad[...] = 1
        optimizer.update()
        optimizer.save(tmp_path / "opt.npz")
        changed = RMSProp(0.05, factor=0.95)
        changed.setupOn({"w": Variable(np.ones(3, np.float32), name="w")})
        with pytest.raises(CheckpointMismatchError) as info:
            changed.load(tmp_path / "opt.npz")
        assert info.value.mismatches == ["hyperparameter factor: 0.9 in the checkpoint, 0.95 in the optimizer",
                                         "hyperparameter learnRate: 0.1 in the checkpoint, 0.05 in the optimizer"]
        assert "hyperparameters='keep'" in str(info.value) and changed.t == 0
        changed.load(tmp_path / "opt.npz", hyperparameters="keep")
        assert changed.t == 1 and changed.factor == 0.95
        np.testing.assert_array_equal(changed.stateOf("w")["ms"], optimizer.stateOf("w")["ms"])


def test_wrong_section_and_setup_errors(tmp_path):
    with using("numpy"):
        variables = {"w": Variable(np.ones(3, np.float32), name="w")}
        saveModule(tmp_path / "model.npz", variables)
        optimizer = RMSProp()
        with pytest.raises(RuntimeError, match="setupOn"):
            optimizer.save(tmp_path / "opt.npz")
        optimizer.setupOn(variables)
        with pytest.raises(CheckpointError, match="no optimizer state"):
            optimizer.load(tmp_path / "model.npz")
        optimizer.save(tmp_path / "opt.npz")
        with pytest.raises(CheckpointError, match="no module parameters"):
            loadModule(tmp_path / "opt.npz", variables)


# --- the optimizer describes its own state: stateArrays, hyperparameters, loadState ----------------
DATA_DIR = Path(__file__).resolve().parent / "data"


def _two_variables(seed: int, dtype: Any = np.float32) -> dict[str, Variable]:
    gen = np.random.default_rng(seed)
    return {"w": Variable(gen.standard_normal((3, 2)).astype(dtype), name="w"),
            "b": Variable(gen.standard_normal(2).astype(np.float32), name="b")}


def _trained(useGlobalState: bool, seed: int = 0, steps: int = 3) -> tuple[RMSProp, dict[str, Variable]]:
    """A dynamic-loss-scale RMSProp with every state buffer (ms, mg, mom, master), after ``steps`` updates."""
    variables = _two_variables(seed, np.float16)
    optimizer = RMSProp(0.01, momentum=0.5, centered=True, masterWeights=True,
                        lossScale=DynamicLossScale(initialScale=8.0, growthInterval=2))
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    gen = np.random.default_rng(seed + 1)
    for _ in range(steps):
        for var in variables.values():
            var.grad[...] = backends.current().to_device(gen.standard_normal(var.shape).astype(var.dtype))
        optimizer.update()
    return optimizer, variables


def _state_snapshot(optimizer: RMSProp) -> dict[str, Any]:
    return {"arrays": {name: {buffer: host(view).copy() for buffer, view in views.items()}
                       for name, views in optimizer.stateArrays().items()},
            "t": optimizer.t, "skippedSteps": optimizer.skippedSteps, "lossScale": optimizer.lossScaleState()}


def _assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert (actual["t"], actual["skippedSteps"], actual["lossScale"]) == \
        (expected["t"], expected["skippedSteps"], expected["lossScale"])
    assert {n: sorted(b) for n, b in actual["arrays"].items()} == {n: sorted(b) for n, b in expected["arrays"].items()}
    for name, buffers in expected["arrays"].items():
        for buffer, array in buffers.items():
            got = actual["arrays"][name][buffer]
            assert got.dtype == array.dtype and got.tobytes() == array.tobytes(), (name, buffer)


@pytest.mark.parametrize("useGlobalState", [True, False])
def test_state_arrays_are_named_views_of_every_buffer(backend_name, useGlobalState):
    optimizer, variables = _trained(useGlobalState)
    arrays = optimizer.stateArrays()
    assert list(arrays) == ["w", "b"]
    assert sorted(arrays["w"]) == ["master", "mg", "mom", "ms"] and sorted(arrays["b"]) == ["mg", "mom", "ms"]
    for name, views in arrays.items():
        for buffer, view in views.items():
            assert view.shape == variables[name].shape and view.dtype == np.float32, (name, buffer)
    arrays["w"]["ms"][...] = 0.25  # a view: writing through it is writing the optimizer's state
    assert (host(optimizer.stateOf("w")["ms"]) == 0.25).all()
    sgd = SGD(0.1)
    sgd.setupOn(_two_variables(0))
    assert sgd.stateArrays() == {"w": {}, "b": {}}
    with pytest.raises(RuntimeError, match=r"RMSProp: call setupOn\(module\) before stateArrays\(\)"):
        RMSProp().stateArrays()


def test_hyperparameters_are_only_the_declared_ones():
    optimizer = RMSProp(0.1, factor=0.8, momentum=0.5, lossScale=DynamicLossScale(initialScale=4.0))
    described = optimizer.hyperparameters()
    assert set(described) == set(RMSProp.HYPERPARAMETERS) | {"class", "groups"}
    assert described["factor"] == 0.8 and described["momentum"] == 0.5 and described["groups"] == []
    assert described["lossScale"] == {"type": "DynamicLossScale", "growthFactor": 2.0, "backoffFactor": 0.5,
                                      "growthInterval": 2000, "minScale": 1.0}
    optimizer.someNewAttribute = 5  # a new attribute is not silently part of the file format
    optimizer.lossScale.record(False)  # nor is run-time state
    optimizer.t, optimizer.skippedSteps = 9, 4
    assert optimizer.hyperparameters() == described
    assert RMSProp(0.1, factor=0.8, momentum=0.5, lossScale=DynamicLossScale(initialScale=4.0),
                   nonFinite="skip").hyperparameters() == described  # the failure policy is not a hyperparameter
    assert set(SGD(0.1).hyperparameters()) == {"class", "groups", "learnRate", "lossScale", "clipNorm",
                                                "globalClipNorm", "sparseUpdate", "sparseDuplicates"}


def _no_decay(name: str) -> bool:
    return name != "b"


# every RMSProp argument but nodeinfo (wiring) and nonFinite (policy), with a value other than the default
CHANGED_ARGUMENTS = {
    "learnRate": 0.5, "factor": 0.5, "epsilon": 1e-3, "epsInSqrt": True, "momentum": 0.7, "lrInMomentum": False,
    "nesterov": True, "centered": True, "initialMeanSquare": 1.0, "biasCorrection": True, "weightDecay": 0.1,
    "decoupledWeightDecay": 0.1, "decayFilter": _no_decay, "wdBeforeClip": False, "clipValue": 1.0,
    "clipWeights": 1.0, "maximize": True, "masterWeights": True, "lossScale": 8.0, "clipNorm": 1.0,
    "globalClipNorm": 1.0, "sparseUpdate": "lazy", "sparseDuplicates": "clip-per-occurrence", "clipValueFirst": True,
    "gradientAccumulationSteps": 2, "emaMomentum": 0.9, "emaOverwriteFrequency": 3, "emaStart": "initial-weights",
    "stateDtype": "bfloat16", "stateSeed": 1,
}


def test_every_constructor_argument_is_a_declared_hyperparameter():
    """A new RMSProp argument fails here until it is declared in HYPERPARAMETERS (or named as not one)."""
    import inspect

    arguments = {name for name, parameter in inspect.signature(RMSProp.__init__).parameters.items()
                 if parameter.kind != parameter.VAR_KEYWORD} - {"self", "nodeinfo", "nonFinite"}
    assert arguments == set(CHANGED_ARGUMENTS)
    base = RMSProp(momentum=0.5).hyperparameters()
    for name, value in CHANGED_ARGUMENTS.items():
        assert RMSProp(**{"momentum": 0.5, name: value}).hyperparameters() != base, name


@pytest.mark.parametrize("useGlobalState", [True, False])
def test_load_state_restores_arrays_and_counters(backend_name, useGlobalState):
    source, _ = _trained(True, seed=0, steps=4)
    expected = _state_snapshot(source)
    # 4 good steps: the scale 8 doubled after the 2nd and the 4th
    assert expected["t"] == 4 and expected["lossScale"] == {"scale": 32.0, "goodSteps": 0}
    target, _ = _trained(useGlobalState, seed=5, steps=1)
    target.loadState(expected["arrays"], expected["t"], expected["skippedSteps"], expected["lossScale"])
    _assert_same_state(_state_snapshot(target), expected)


def _bad_loads(good: dict[str, Any]) -> list[tuple[str, dict[str, Any], type, str]]:
    """(case, loadState arguments, exception, message pattern): each one bad in exactly one way."""
    def arrays(edit: Any) -> dict[str, dict[str, np.ndarray]]:
        copy = {name: dict(buffers) for name, buffers in good["arrays"].items()}
        edit(copy)
        return copy

    def args(**changes: Any) -> dict[str, Any]:
        return {"arrays": good["arrays"], "t": good["t"], "skippedSteps": good["skippedSteps"],
                "lossScaleState": good["lossScale"], **changes}

    def reshaped(copy): copy["b"]["mom"] = np.zeros((2, 1), np.float32)  # noqa: E704
    def recast(copy): copy["w"]["master"] = copy["w"]["master"].astype(np.float64)  # noqa: E704
    def unknown(copy): copy["extra"] = {}  # noqa: E704
    def missing(copy): del copy["w"]  # noqa: E704
    def noBuffer(copy): del copy["b"]["mg"]  # noqa: E704
    def newBuffer(copy): copy["b"]["velocity"] = np.zeros(2, np.float32)  # noqa: E704
    def onDevice(copy): copy["b"]["ms"] = copy["b"]["ms"].tolist()  # noqa: E704

    return [
        ("negative t", args(t=-1), ValueError, r"RMSProp\.loadState: t must be an integer >= 0, got -1"),
        ("fractional t", args(t=2.5), TypeError, r"t must be an integer, got 2\.5"),
        ("boolean t", args(t=True), TypeError, r"t must be an integer, got True"),
        ("negative skippedSteps", args(skippedSteps=-2), ValueError, r"skippedSteps must be an integer >= 0"),
        ("zero scale", args(lossScaleState={"scale": 0.0, "goodSteps": 1}), ValueError, r"'scale' must be in \(0"),
        ("NaN scale", args(lossScaleState={"scale": float("nan"), "goodSteps": 1}), ValueError, "must be finite"),
        ("infinite scale", args(lossScaleState={"scale": float("inf"), "goodSteps": 1}), ValueError, "must be finite"),
        ("negative goodSteps", args(lossScaleState={"scale": 2.0, "goodSteps": -1}), ValueError,
         r"'goodSteps' must be an integer >= 0"),
        ("loss-scale keys", args(lossScaleState={"scale": 2.0}), TypeError, r"keys 'scale' and 'goodSteps'"),
        ("shape", args(arrays=arrays(reshaped)), ValueError, r"state 'mom' of 'b': shape \(2, 1\), expected \(2,\)"),
        ("dtype", args(arrays=arrays(recast)), ValueError, r"state 'master' of 'w': dtype float64, expected float32"),
        ("unknown variable", args(arrays=arrays(unknown)), ValueError, r"variable 'extra': not optimized"),
        ("missing variable", args(arrays=arrays(missing)), ValueError, r"variable 'w': missing"),
        ("missing buffer", args(arrays=arrays(noBuffer)), ValueError, r"state 'mg' of 'b': missing"),
        ("unknown buffer", args(arrays=arrays(newBuffer)), ValueError, r"state 'velocity' of 'b': not a buffer"),
        ("not an array", args(arrays=arrays(onDevice)), TypeError, r"state 'ms' of 'b' must be a numpy array"),
        ("not a mapping", args(arrays=[1, 2]), TypeError, r"arrays must be a mapping"),
    ]


@pytest.mark.parametrize("useGlobalState", [True, False])
def test_load_state_rejects_bad_input_and_changes_nothing(backend_name, useGlobalState):
    source, _ = _trained(True, seed=0, steps=4)
    good = _state_snapshot(source)
    target, variables = _trained(useGlobalState, seed=5, steps=1)
    before = _state_snapshot(target)
    weights = {name: host(var.data).copy() for name, var in variables.items()}
    for case, arguments, error, pattern in _bad_loads(good):
        with pytest.raises(error, match=pattern):
            target.loadState(**arguments)
        _assert_same_state(_state_snapshot(target), before)  # not even the arrays that did fit were written
        assert all(host(var.data).tobytes() == weights[name].tobytes() for name, var in variables.items()), case
    target.loadState(good["arrays"], good["t"], good["skippedSteps"], good["lossScale"])  # still loads after all that
    _assert_same_state(_state_snapshot(target), good)


def test_load_state_lists_every_mismatch_at_once():
    with using("numpy"):
        target, _ = _trained(True)
        arrays = _state_snapshot(target)["arrays"]
        arrays["w"]["ms"] = np.zeros((2, 3), np.float32)
        arrays["b"]["mom"] = np.zeros(2, np.float16)
        del arrays["b"]["mg"]
        with pytest.raises(ValueError, match=r"\(3 mismatches\); nothing was loaded") as info:
            target.loadState(arrays, 1, 0)
    message = str(info.value)
    for line in ["state 'ms' of 'w': shape (2, 3), expected (3, 2)", "state 'mg' of 'b': missing",
                 "state 'mom' of 'b': dtype float16, expected float32"]:
        assert line in message


def test_dynamic_loss_scale_load_state_is_validated():
    scale = DynamicLossScale(initialScale=4.0)
    with pytest.raises(ValueError, match=r"DynamicLossScale\.loadState: loss-scale state 'scale' must be in \(0"):
        scale.loadState({"scale": -1.0, "goodSteps": 0})
    assert scale.state() == {"scale": 4.0, "goodSteps": 0}
    scale.loadState({"scale": 2.0, "goodSteps": 3})
    assert scale.state() == {"scale": 2.0, "goodSteps": 3}


def _rewrite_meta(path: Path, edit: Any) -> None:
    """Rewrite the archive at ``path`` with the same arrays and edited metadata (a damaged or hand-made file)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key != "__meta__"}
        meta = json.loads(archive["__meta__"].tobytes())
    edit(meta)
    _meta_archive(path, meta, **arrays)


@pytest.mark.parametrize("field,value,pattern", [("t", -3, r"t must be an integer >= 0, got -3"),
                                                 ("t", None, r"t must be an integer, got None"),
                                                 ("skippedSteps", 1.5, r"skippedSteps must be an integer"),
                                                 ("lossScaleState", {"scale": 0, "goodSteps": 0}, r"'scale' must")])
def test_a_checkpoint_with_bad_counters_loads_nothing(tmp_path, field, value, pattern):
    with using("numpy"):
        saved, variables = _trained(True)
        saveTraining(tmp_path / "run.npz", variables, saved)
        _rewrite_meta(tmp_path / "run.npz", lambda meta: meta["optimizer"].__setitem__(field, value))
        target, targetVariables = _trained(False, seed=5, steps=1)
        before = _state_snapshot(target)
        weights = {name: host(var.data).copy() for name, var in targetVariables.items()}
        with pytest.raises(CheckpointError, match=r"the optimizer state in the checkpoint does not load.*" + pattern):
            loadTraining(tmp_path / "run.npz", targetVariables, target)
        _assert_same_state(_state_snapshot(target), before)
        assert all(host(var.data).tobytes() == weights[name].tobytes() for name, var in targetVariables.items())


def test_checkpoints_written_before_the_groups_lost_extra_still_load():
    """tests/data/checkpoint_v1*.npz were written by puzzle_rms at commit 6d2d51f (format version 1, with the
    never-used ``"extra": {}`` in every parameter group); they load with the hyperparameters checked."""
    with using("numpy"):
        variables = _two_variables(9)
        optimizer = RMSProp(ExponentialDecay(0.02, 0.5, 6), factor=0.8, epsilon=1e-3, epsInSqrt=True, momentum=0.7,
                            centered=True, biasCorrection=True, weightDecay=1e-3,
                            lossScale=DynamicLossScale(initialScale=64.0, growthInterval=3), clipNorm=5.0)
        optimizer.setupOn([{"params": {"w": variables["w"]}},
                           {"params": {"b": variables["b"]}, "learnRate": 0.01, "weightDecay": 0.0}])
        loadTraining(DATA_DIR / "checkpoint_v1.npz", variables, optimizer)
        with np.load(DATA_DIR / "checkpoint_v1.npz", allow_pickle=False) as archive:
            meta = json.loads(archive["__meta__"].tobytes())
            assert all(group["extra"] == {} for group in meta["optimizer"]["hyperparameters"]["groups"])
            for name, var in variables.items():
                assert host(var.data).tobytes() == archive[f"param:{name}"].tobytes()
                for buffer, view in optimizer.stateOf(name).items():
                    assert host(view).tobytes() == archive[f"state:{name}:{buffer}"].tobytes()
        assert (optimizer.t, optimizer.skippedSteps) == (3, 1)
        assert optimizer.lossScaleState() == {"scale": 32.0, "goodSteps": 2}

        sgd = SGD([0.1, 0.05], clipNorm=2.0)
        sgd.setupOn({"v": Variable(np.zeros(4), name="v")})
        sgd.load(DATA_DIR / "checkpoint_v1_sgd.npz")
        assert sgd.t == 3 and sgd.stateArrays() == {"v": {}}


def test_a_non_empty_group_extra_is_a_listed_mismatch(tmp_path):
    path = tmp_path / "sgd.npz"
    path.write_bytes((DATA_DIR / "checkpoint_v1_sgd.npz").read_bytes())
    _rewrite_meta(path, lambda meta: meta["optimizer"]["hyperparameters"]["groups"][0].__setitem__("extra", {"k": 1}))
    with using("numpy"):
        sgd = SGD([0.1, 0.05], clipNorm=2.0)
        sgd.setupOn({"v": Variable(np.zeros(4), name="v")})
        with pytest.raises(CheckpointMismatchError, match=r"hyperparameter groups: .*\"extra\": \{\"k\": 1\}"):
            sgd.load(path)
        assert sgd.t == 0
        sgd.load(path, hyperparameters="keep")
        assert sgd.t == 3


def test_a_group_learn_rate_scale_is_checked_and_older_groups_count_as_scale_1(tmp_path):
    """The v1 SGD file predates learnRateScale: it loads into groups of scale 1 and is a mismatch for scale 2."""
    with using("numpy"):
        variables = {"v": Variable(np.zeros(4), name="v")}
        same = SGD([0.1, 0.05], clipNorm=2.0)
        same.setupOn([{"params": variables, "learnRateScale": 1.0}])
        same.load(DATA_DIR / "checkpoint_v1_sgd.npz")
        scaled = SGD([0.1, 0.05], clipNorm=2.0)
        scaled.setupOn([{"params": variables, "learnRateScale": 2.0}])
        with pytest.raises(CheckpointMismatchError, match=r"hyperparameter groups: .*\"learnRateScale\": 2\.0"):
            scaled.load(DATA_DIR / "checkpoint_v1_sgd.npz")
        scaled.save(tmp_path / "scaled.npz")
        with pytest.raises(CheckpointMismatchError) as raised:
            same.load(tmp_path / "scaled.npz")
        saved, current = str(raised.value).split(" in the checkpoint, ")
        assert '"learnRateScale": 2.0' in saved and '"learnRateScale": 1.0' in current


# --- files that are not (good) checkpoints -------------------------------------------------------
def _meta_archive(path: Path, meta: dict, **arrays: np.ndarray) -> None:
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def test_bad_files_raise_checkpoint_errors_and_run_no_code(tmp_path):
    with using("numpy"):
        variables = {"w": Variable(np.ones(3, np.float32), name="w")}
        saveModule(tmp_path / "good.npz", variables)
        with np.load(tmp_path / "good.npz") as archive:
            meta = json.loads(archive["__meta__"].tobytes())

        marker = tmp_path / "pwned"

        class Exploit:
            def __reduce__(self):
                return (Path.touch, (marker,))

        np.save(tmp_path / "pickled.npy", np.array([Exploit()], dtype=object), allow_pickle=True)
        with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as archive:
            archive.writestr("__meta__.npy", (tmp_path / "pickled.npy").read_bytes())
        (tmp_path / "text.npz").write_text("not a checkpoint")
        np.savez(tmp_path / "plain.npz", w=np.ones(3))
        _meta_archive(tmp_path / "future.npz", dict(meta, version=checkpoint.VERSION + 1))
        _meta_archive(tmp_path / "other.npz", dict(meta, format="something.else"))
        _meta_archive(tmp_path / "missing.npz", meta)
        _meta_archive(tmp_path / "lying.npz", meta, **{"param:w": np.ones(4, np.float32)})
        good = (tmp_path / "good.npz").read_bytes()
        (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
        cases = {"pickled.npz": "not a puzzle_rms checkpoint|damaged", "text.npz": "not a puzzle_rms checkpoint",
                 "plain.npz": "without '__meta__'", "future.npz": f"version {checkpoint.VERSION + 1}.*reads versions 1",
                 "other.npz": "format 'something.else'", "missing.npz": "listed in the metadata but missing",
                 "lying.npz": "damaged", "truncated.npz": "not a puzzle_rms checkpoint|damaged",
                 "pickled.npy": "single .npy array|not a puzzle_rms checkpoint"}
        for name, pattern in cases.items():
            with pytest.raises(CheckpointError, match=pattern):
                loadModule(tmp_path / name, variables)
            np.testing.assert_array_equal(variables["w"].data, 1)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            loadModule(tmp_path / "absent.npz", variables)
    assert not marker.exists()


# --- distributed: rank 0 writes, every rank learns whether it worked ------------------------------
class FakeNode:
    """Duck-typed stand-in for one rank of a two-rank NodeInfo: ``meanValue`` averages this rank's value with
    ``peerValue``, the value the other rank would contribute (1.0: rank 0 failed to write)."""

    def __init__(self, rank: int, peerValue: float = 0.0) -> None:
        self.rank, self.peerValue, self.collectives = rank, peerValue, 0

    @property
    def isRoot(self) -> bool:
        return self.rank == 0

    def broadcast(self, flat: Any, what: str = "") -> None:
        pass

    def allreduceMean(self, flat: Any, what: str = "") -> None:
        pass

    def checkSame(self, what: str, description: dict) -> None:
        pass

    def meanValue(self, value: float) -> float:
        self.collectives += 1
        return (value + self.peerValue) / 2


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_writes_and_every_rank_learns_the_outcome(tmp_path, rank):
    with using("numpy"):
        node = FakeNode(rank)
        variables = {"w": Variable(np.ones(3, np.float32), name="w")}
        optimizer = RMSProp(0.1, nodeinfo=node)
        optimizer.setupOn(variables, useGlobalState=True)
        saveTraining(tmp_path / "run.npz", variables, optimizer)
        assert (tmp_path / "run.npz").exists() == (rank == 0) and node.collectives == 1
        optimizer.save(tmp_path / "opt.npz")
        assert node.collectives == 2
        if rank == 0:
            optimizer.load(tmp_path / "opt.npz")
            with pytest.raises(FileNotFoundError):  # a failed write still reaches the collective
                optimizer.save(tmp_path / "no-such-folder" / "opt.npz")
            assert node.collectives == 3


def test_other_ranks_raise_when_rank_zero_could_not_write(tmp_path):
    with using("numpy"):
        node = FakeNode(1, peerValue=1.0)
        variables = {"w": Variable(np.ones(3, np.float32), name="w")}
        optimizer = RMSProp(0.1, nodeinfo=node)
        optimizer.setupOn(variables, useGlobalState=True)
        with pytest.raises(CheckpointError, match="rank 0 could not write the checkpoint"):
            saveTraining(tmp_path / "run.npz", variables, optimizer)
        assert node.collectives == 1 and not (tmp_path / "run.npz").exists()


# --- atomic writes: a killed writer leaves the previous checkpoint intact ------------------------
CRASH_VARIABLES, CRASH_SIZE = 6, 1 << 18


def _crash_variables(value: float) -> dict[str, Variable]:
    return {f"v{i}": Variable(np.full(CRASH_SIZE, value, np.float32), name=f"v{i}") for i in range(CRASH_VARIABLES)}


def _block_forever() -> None:
    print("BLOCKED", flush=True)
    threading.Event().wait()


def worker_crash(path: str, how: str) -> None:
    """Save version 1, then block inside the save of version 2 at the point ``how`` and wait to be killed."""
    backends.use("numpy")
    variables = _crash_variables(1.0)
    saveModule(path, variables)
    for var in variables.values():
        var.data[...] = 2.0
    if how == "mid-archive":  # after two of the arrays were written into the temporary file
        import numpy.lib.format as npformat

        original, calls = npformat.write_array, []

        def write_array(*args: Any, **kwargs: Any) -> None:
            calls.append(1)
            if len(calls) == 3:
                _block_forever()
            original(*args, **kwargs)

        npformat.write_array = write_array
    elif how == "before-rename":  # the temporary file is complete and fsynced, not yet renamed
        real = os.fsync

        def fsync(fd: int) -> None:
            real(fd)
            _block_forever()

        os.fsync = fsync
    saveModule(path, variables)


def worker_save_loop(path: str) -> None:
    """Save versions 0, 1, 2, ... (every variable holds the version number), reporting each finished save."""
    backends.use("numpy")
    variables = _crash_variables(0.0)
    for version in range(10_000):
        for var in variables.values():
            var.data[...] = version
        saveModule(path, variables)
        print(version, flush=True)


def _loaded_values(path: Path) -> set[float]:
    with using("numpy"):
        variables = _crash_variables(-1.0)
        loadModule(path, variables)
        return {float(v) for var in variables.values() for v in np.unique(var.data)}


@pytest.mark.parametrize("how", ["mid-archive", "before-rename"])
def test_killed_writer_leaves_the_previous_checkpoint_loadable(tmp_path, how):
    path = tmp_path / "ckpt.npz"
    proc = run_worker("crash", str(path), how, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "BLOCKED"
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the kill lands mid-save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert _loaded_values(path) == {1.0}


def test_next_save_removes_temporary_files_of_dead_writers_only(tmp_path):
    path = tmp_path / "ckpt.npz"
    proc = run_worker("crash", str(path), "before-rename", stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "BLOCKED"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    [stray] = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    pid = f".{proc.pid}."
    assert pid in stray
    alive = stray.replace(pid, f".{os.getppid()}.")  # a writer that is still running (our parent)
    other = ".other.npz.0123456789ab.01234567.999999999.deadbeef.tmp"  # another path's
    for name in (alive, other):
        (tmp_path / name).write_bytes(b"partial")
    with using("numpy"):
        saveModule(path, _crash_variables(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, alive, other])
    assert _loaded_values(path) == {3.0}


def test_writer_killed_at_random_moments_never_leaves_a_torn_checkpoint(tmp_path):
    rng = np.random.default_rng(2024)
    path = tmp_path / "ckpt.npz"
    for _ in range(3):
        waitFor = int(rng.integers(1, 4))
        pause = float(rng.uniform(0.0, 0.03))
        proc = run_worker("loop", str(path), stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(waitFor):
                proc.stdout.readline()
            threading.Event().wait(pause)  # lets the next save get some way before the kill
        finally:
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=60)
        lastReported = waitFor - 1 + len(rest.split())
        # all variables from one save: the last one reported, or the next one if the kill fell before its print
        assert _loaded_values(path) in ({float(lastReported)}, {float(lastReported + 1)})


if __name__ == "__main__":
    phase, *arguments = sys.argv[1:]
    {"first": worker_first, "resume": worker_resume, "crash": worker_crash, "loop": worker_save_loop}[phase](*arguments)
