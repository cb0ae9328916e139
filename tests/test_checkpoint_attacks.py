"""Hostile and unlucky checkpoint files: bombs stay within bounded memory, damage gives a CheckpointError naming
the problem (never a raw KeyError, TypeError, NotImplementedError ...), names that cannot round-trip are refused
before the old file is touched, odd paths (long names, FIFOs) behave. Whatever fails, nothing is modified.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from backend_switch import using

from puzzle_rms.checkpoint import (METADATA_LIMIT, CheckpointError, loadModule, loadTraining, saveModule,
                                   saveTraining)
from puzzle_rms.optimizers import DynamicLossScale, RMSProp
from puzzle_rms.variable import Variable

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def _variables(seed: int = 0) -> dict[str, Variable]:
    rng = np.random.default_rng(seed)
    return {"w": Variable(rng.standard_normal((3, 4)).astype(np.float32), name="w"),
            "b": Variable(rng.standard_normal(4).astype(np.float32), name="b")}


def _trained(seed: int = 0) -> tuple[dict[str, Variable], RMSProp]:
    variables = _variables(seed)
    optimizer = RMSProp(0.01, momentum=0.5, centered=True, lossScale=DynamicLossScale(8.0, growthInterval=2))
    optimizer.setupOn(variables, useGlobalState=True)
    rng = np.random.default_rng(seed + 1)
    for _ in range(3):
        for var in variables.values():
            var.grad[...] = 8.0 * rng.standard_normal(var.shape).astype(np.float32)
        optimizer.update()
    return variables, optimizer


def _snapshot(variables: dict[str, Variable], optimizer: RMSProp) -> bytes:
    parts = [var.data.tobytes() for var in variables.values()]
    parts += [view.tobytes() for views in optimizer.stateArrays().values() for view in views.values()]
    return b"".join(parts) + repr((optimizer.t, optimizer.skippedSteps, optimizer.lossScaleState())).encode()


def _npy_header(shape: tuple, dtype: Any) -> bytes:
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return stream.getvalue()


def _zip_with(path: Path, entries: dict[str, tuple[bytes, int]]) -> None:
    """A deflated zip: entry name -> (head bytes, count of zero bytes streamed after them)."""
    zeros = bytes(16 * MIB)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, (head, zeroCount) in entries.items():
            with archive.open(name, "w", force_zip64=True) as entry:
                entry.write(head)
                while zeroCount > 0:
                    entry.write(zeros[:min(zeroCount, len(zeros))])
                    zeroCount -= len(zeros)


def _meta_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive, archive.open("__meta__.npy") as entry:
        np.lib.format.read_magic(entry)
        np.lib.format.read_array_header_1_0(entry)
        return entry.read()


# --- bombs -----------------------------------------------------------------------------------------
MEASURE = r"""
import json, resource, sys
import numpy as np
from puzzle_rms import backends
from puzzle_rms.checkpoint import CheckpointError, loadModule
from puzzle_rms.variable import Variable
backends.use("numpy")
variables = {"w": Variable(np.zeros((3, 4), np.float32), name="w"), "b": Variable(np.zeros(4, np.float32), name="b")}
loadModule(sys.argv[1], variables)  # a good file first: every code path is imported and warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = {}
for path in sys.argv[2:]:
    try:
        loadModule(path, variables)
        outcome[path] = "loaded"
    except CheckpointError as error:
        outcome[path] = "CheckpointError: " + str(error)
    except BaseException as error:
        outcome[path] = type(error).__name__ + ": " + str(error)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growthKiB": peak - before, "outcome": outcome}))
"""


def test_bomb_files_raise_checkpoint_errors_within_bounded_memory(tmp_path):
    """Each bomb is a few MiB on disk and decompresses to 512 MiB or declares 32 GiB; loading any of them must
    raise CheckpointError while peak RSS grows by less than 64 MiB (measured in a fresh process)."""
    with using("numpy"):
        saveModule(tmp_path / "good.npz", _variables())
    meta = _meta_bytes(tmp_path / "good.npz")
    metaEntry = _npy_header((len(meta),), np.uint8) + meta
    w, b = np.ones((3, 4), np.float32), np.ones(4, np.float32)
    good = {"__meta__.npy": (metaEntry, 0), "param:b.npy": (_npy_header((4,), np.float32) + b.tobytes(), 0)}
    big = 512 * MIB
    files = {
        # the array's header declares 512 MiB of data, the metadata (3, 4)
        "data-bomb": {**good, "param:w.npy": (_npy_header((big // 4,), np.float32), big)},
        # the metadata entry's header declares 512 MiB of JSON (spaces would be valid JSON)
        "metadata-bomb": {"__meta__.npy": (_npy_header((len(meta) + big,), np.uint8) + meta, big),
                          "param:w.npy": (_npy_header((3, 4), np.float32) + w.tobytes(), 0)},
        # the header agrees with the metadata, but 512 MiB more data follow the 48 declared bytes
        "overlong": {**good, "param:w.npy": (_npy_header((3, 4), np.float32) + w.tobytes(), big)},
        # a header declaring 32 GiB
        "32GiB-header": {**good, "param:w.npy": (_npy_header((8 << 30,), np.float32), MIB)},
    }
    for name, entries in files.items():
        _zip_with(tmp_path / f"{name}.npz", entries)
        assert (tmp_path / f"{name}.npz").stat().st_size < 4 * MIB
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "good.npz"),
                             *(str(tmp_path / f"{name}.npz") for name in files)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    outcomes = {Path(path).stem: text for path, text in report["outcome"].items()}
    assert all(text.startswith("CheckpointError: ") for text in outcomes.values()), outcomes
    assert "declares shape (134217728,) and dtype float32, but the metadata says (3, 4)" in outcomes["data-bomb"]
    assert f"more than the limit of {METADATA_LIMIT}" in outcomes["metadata-bomb"]
    assert "more data than the 48 bytes its header declares" in outcomes["overlong"]
    assert "declares shape (8589934592,)" in outcomes["32GiB-header"]
    assert report["growthKiB"] < 64 * 1024, report


# --- names that would not round-trip ------------------------------------------------------------------
def test_names_that_cannot_round_trip_are_refused_before_the_old_file_is_touched(tmp_path):
    with using("numpy"):
        path = tmp_path / "model.npz"
        saveModule(path, _variables())
        before = path.read_bytes()
        one = lambda: Variable(np.ones(2, np.float32))  # noqa: E731
        cases = [({"a\0b": one()}, ValueError, r"variable name 'a\\x00b' contains a NUL character"),
                 ({0: one(), "0": one()}, TypeError, r"variable name 0 is a int; names must be str"),
                 ({"\ud800": one()}, ValueError, r"cannot be encoded as UTF-8")]
        for table, kind, pattern in cases:
            with pytest.raises(kind, match=pattern):
                saveModule(path, table)
            assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
        variables, optimizer = _trained()
        optimizer.setupOn({"a\0": variables["w"], "b": variables["b"]}, useGlobalState=True)
        with pytest.raises(ValueError, match="contains a NUL character"):
            saveTraining(path, {"w": variables["w"], "b": variables["b"]}, optimizer)
        assert path.read_bytes() == before


# --- damaged metadata: structural fuzzing -------------------------------------------------------------
REPLACEMENTS = [None, 0, -1, 2.5, True, "x", "", [], {}, [[[]]], {"k": None}]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    out = [prefix] if prefix else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        out += _paths(child, prefix + (key,))
    return out


def _write_meta(path: Path, source: Path, meta: Any) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w") as new:
        for info in old.infolist():
            if info.filename != "__meta__.npy":
                new.writestr(info, old.read(info))
        text = json.dumps(meta).encode()
        new.writestr("__meta__.npy", _npy_header((len(text),), np.uint8) + text)


def test_fuzzed_metadata_gives_checkpoint_errors_and_loads_nothing(tmp_path):
    """Every value of the metadata (and every key) is replaced by values of other kinds, or deleted; a deeply
    nested document is tried too. Each load either works or raises CheckpointError, never a raw error, and a
    failed load leaves the model and optimizer bit-identical."""
    with using("numpy"):
        saved, savedOptimizer = _trained(0)
        source = tmp_path / "good.npz"
        saveTraining(source, saved, savedOptimizer)
        meta = json.loads(_meta_bytes(source))
        variants = []
        for path in _paths(meta):
            for replacement in REPLACEMENTS + ["<delete>"]:
                edited = copy.deepcopy(meta)
                parent = edited
                for key in path[:-1]:
                    parent = parent[key]
                if replacement == "<delete>":
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = replacement
                variants.append(edited)
        deep: Any = []
        for _ in range(100_000):
            deep = [deep]
        variants += [dict(meta, entries=deep), dict(meta, optimizer=dict(meta["optimizer"], hyperparameters=deep)),
                     [], "text", 7]
        variables, optimizer = _trained(5)
        before = _snapshot(variables, optimizer)
        raw, loaded = [], 0
        target = tmp_path / "fuzzed.npz"
        for i, edited in enumerate(variants):
            try:
                _write_meta(target, source, edited)
            except RecursionError:  # the encoder cannot write this one: write the text by hand
                text = b"[" * 100_000 + b"]" * 100_000
                with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
                    for info in old.infolist():
                        if info.filename != "__meta__.npy":
                            new.writestr(info, old.read(info))
                    new.writestr("__meta__.npy", _npy_header((len(text),), np.uint8) + text)
            try:
                loadTraining(target, variables, optimizer, hyperparameters="keep")
            except CheckpointError:
                assert _snapshot(variables, optimizer) == before, f"variant {i} changed the state"
                continue
            except Exception as error:  # collected, reported below
                raw.append(f"variant {i}: {type(error).__name__}: {error}"[:300])
                continue
            loaded += 1
            # a harmless edit (library version, backend name ...): the saved state arrived; put ours back
            loadTraining(source, variables, optimizer, hyperparameters="keep")
            before = _snapshot(variables, optimizer)
        assert not raw, f"{len(raw)} of {len(variants)} damaged files raised raw errors:\n" + "\n".join(raw[:20])
        assert len(variants) > 400 and loaded < len(variants) // 2


# --- single-byte flips ----------------------------------------------------------------------------------
def test_single_byte_flips_give_checkpoint_errors_or_the_saved_values(tmp_path):
    """A seeded sample of single-byte flips (plus every byte of each zip header's flags and compression
    method): each load raises CheckpointError leaving everything untouched, or loads exactly the saved values."""
    with using("numpy"):
        saved, savedOptimizer = _trained(0)
        source = tmp_path / "good.npz"
        saveTraining(source, saved, savedOptimizer)
        original = source.read_bytes()
        expected = _snapshot(saved, savedOptimizer)
        positions = set(np.random.default_rng(7).choice(len(original), size=min(600, len(original)),
                                                        replace=False).tolist())
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():  # local header: flags at +6, method at +8; central: +8 and +10
                positions |= {info.header_offset + k for k in (6, 7, 8, 9)}
        central = original.rfind(b"PK\x01\x02", 0)
        while central >= 0:
            positions |= {central + k for k in (8, 9, 10, 11)}
            central = original.rfind(b"PK\x01\x02", 0, central)
        variables, optimizer = _trained(5)
        before = _snapshot(variables, optimizer)
        flipped = tmp_path / "flipped.npz"
        raw, caught = [], 0
        rng = np.random.default_rng(11)
        for position in sorted(positions):
            data = bytearray(original)
            data[position] ^= int(rng.integers(1, 256))
            flipped.write_bytes(bytes(data))
            try:
                loadTraining(flipped, variables, optimizer, hyperparameters="keep")
            except CheckpointError:
                caught += 1
                assert _snapshot(variables, optimizer) == before, f"flip at {position} changed the state"
                continue
            except Exception as error:  # collected, reported below
                raw.append(f"byte {position}: {type(error).__name__}: {error}"[:200])
                continue
            assert _snapshot(variables, optimizer) == expected, f"flip at {position} loaded other values"
            loadTraining(tmp_path / "good.npz", variables, optimizer, hyperparameters="keep")
            variables, optimizer = _trained(5)
        assert not raw, f"{len(raw)} of {len(positions)} flips raised raw errors:\n" + "\n".join(raw[:20])
        assert caught > len(positions) // 2


# --- odd files and paths ------------------------------------------------------------------------------------
def test_a_garbage_file_error_gives_no_allow_pickle_advice(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with using("numpy"):
        with pytest.raises(CheckpointError, match="not a puzzle_rms checkpoint") as caught:
            loadModule(path, _variables())
    assert "allow_pickle" not in str(caught.value) and "pickle" not in str(caught.value)


@pytest.mark.parametrize("length", [234, 240, 250, 255])
def test_file_names_up_to_name_max_save_and_load(tmp_path, length):
    path = tmp_path / ("c" * (length - 4) + ".npz")
    with using("numpy"):
        variables, optimizer = _trained(0)
        saveTraining(path, variables, optimizer)
        saveTraining(path, variables, optimizer)  # over an existing file too
        other, otherOptimizer = _trained(3)
        loadTraining(path, other, otherOptimizer)
        assert _snapshot(other, otherOptimizer) == _snapshot(variables, optimizer)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
def test_loading_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    with using("numpy"):
        variables, optimizer = _trained(0)
        before = _snapshot(variables, optimizer)
        outcome: list[Any] = []

        def load() -> None:
            try:
                loadTraining(fifo, variables, optimizer)
            except BaseException as error:  # checked by the test
                outcome.append(error)

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        thread.join(20)
        if thread.is_alive():  # blocked in open(): a writer end releases it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(20)
            pytest.fail("loadTraining blocked on a FIFO")
        assert len(outcome) == 1 and isinstance(outcome[0], CheckpointError), outcome
        assert "is a FIFO; a checkpoint is a regular file" in str(outcome[0])
        assert _snapshot(variables, optimizer) == before
        with pytest.raises(CheckpointError, match="is a folder"):
            loadModule(tmp_path, variables)


# --- counters and loss-scale state are checked before anything is written ------------------------------
BAD_COUNTERS = [
    ("t", -1), ("t", 1.5), ("t", "3"), ("t", True), ("t", None), ("t", 2 ** 70), ("skippedSteps", -2),
    ("skippedSteps", 0.5), ("skippedSteps", 2 ** 64), ("lossScaleState", {"scale": 0.0, "goodSteps": 0}),
    ("lossScaleState", {"scale": float("nan"), "goodSteps": 0}),
    ("lossScaleState", {"scale": float("inf"), "goodSteps": 0}),
    ("lossScaleState", {"scale": -4.0, "goodSteps": 0}), ("lossScaleState", {"scale": 1e-39, "goodSteps": 0}),
    ("lossScaleState", {"scale": 2.0 ** 70, "goodSteps": 0}), ("lossScaleState", {"scale": 8.0, "goodSteps": -1}),
    ("lossScaleState", {"scale": 8.0, "goodSteps": 1.5}), ("lossScaleState", {"scale": 8.0}),
    ("lossScaleState", {"scale": 8.0, "goodSteps": 0, "extra": 1}), ("lossScaleState", [8.0, 0]),
    ("lossScaleState", "8"),
]


@pytest.mark.parametrize("field,value", BAD_COUNTERS, ids=[f"{f}={v!r}" for f, v in BAD_COUNTERS])
def test_bad_counters_and_loss_scale_state_leave_model_and_optimizer_bit_identical(tmp_path, field, value):
    with using("numpy"):
        saved, savedOptimizer = _trained(0)
        source = tmp_path / "good.npz"
        saveTraining(source, saved, savedOptimizer)
        meta = json.loads(_meta_bytes(source))
        meta["optimizer"][field] = value
        _write_meta(tmp_path / "bad.npz", source, meta)
        variables, optimizer = _trained(5)
        before = _snapshot(variables, optimizer)
        with pytest.raises(CheckpointError, match=r"the optimizer state in the checkpoint does not load"):
            loadTraining(tmp_path / "bad.npz", variables, optimizer, hyperparameters="keep")
        assert _snapshot(variables, optimizer) == before
