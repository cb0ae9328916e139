"""Checkpoints: pickle-free ``.npz`` files of module parameters and optimizer state, written atomically.

A checkpoint is an ordinary NumPy ``.npz`` archive. Entry ``__meta__`` holds
UTF-8 JSON (as a uint8 array) with the format name and version, the library
version, every array's variable name, shape and dtype, and the optimizer's
class, hyperparameters, step counter ``t``, skipped-step count and loss-scale
state. The arrays are ``param:<variable>`` (module parameters) and
``state:<variable>:<buffer>`` (optimizer buffers ``ms``, ``mg``, ``mom``,
``master``). Files are read with ``allow_pickle=False`` and written with no
object arrays, so loading never runs code from the file.

Writing is atomic: the archive goes to a temporary file in the destination
folder, is flushed and fsynced, renamed over the destination with
:func:`os.replace`, and the folder is fsynced. A process killed mid-save leaves
the previous checkpoint intact (and possibly a stray ``.<name>.*.tmp`` file,
safe to delete).

Loading validates everything first (names, shapes, dtypes, and by default the
hyperparameters) and raises :class:`CheckpointMismatchError` listing every
mismatch before any parameter or state is modified. Arrays are stored on the
host, so a checkpoint saved on one backend (cupy, numba, numpy) loads on any
other, and in either state mode (``useGlobalState`` True or False).

This module knows the file format only. What an optimizer's state and
hyperparameters are, it asks the optimizer (:class:`CheckpointableOptimizer`:
``stateArrays``, ``hyperparameters``, ``lossScaleState``, ``loadState``), so it
imports no optimizer.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import zipfile
from typing import Any, Mapping, Optional, Protocol, Union

import numpy as np

from puzzle_rms import backends
from puzzle_rms.validation import check_choice
from puzzle_rms.variable import Variable

__all__ = ["CheckpointError", "CheckpointMismatchError", "CheckpointableOptimizer", "FORMAT", "VERSION",
           "checkpointInfo", "loadModule", "loadOptimizer", "loadTraining", "saveModule", "saveOptimizer",
           "saveTraining"]

FORMAT = "puzzle_rms.checkpoint"
VERSION = 1
META_KEY = "__meta__"
# Hyperparameters added to the optimizers after format version 1 was first written, with the value every
# optimizer had before they existed: a file without one of them compares as having that value.
_ADDED_HYPERPARAMETERS = {"sparseDuplicates": "sum", "clipValueFirst": False, "gradientAccumulationSteps": 1,
                          "emaMomentum": None, "emaOverwriteFrequency": None, "emaStart": "first-update",
                          "stateDtype": "float32", "stateSeed": 0}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HYPERPARAMETER_MODES = ("check", "keep")

PathLike = Union[str, "os.PathLike[str]"]
EntryKey = tuple[str, str, Optional[str]]  # (section, variable, buffer); buffer is None for module parameters
_OPTIMIZER_METHODS = ("stateArrays", "hyperparameters", "lossScaleState", "loadState")


class CheckpointableOptimizer(Protocol):
    """What a checkpoint reads from and writes into an optimizer; :class:`puzzle_rms.optimizers.Optimizer` has it.

    ``stateArrays()`` gives name -> buffer -> array view, ``hyperparameters()`` a JSON description, and
    ``loadState(arrays, t, skippedSteps, lossScaleState)`` validates all of its arguments before it
    changes anything. ``backend`` is the backend its state lives on; with ``nodeinfo`` set (data parallel),
    only rank 0 writes files.
    """

    t: int
    skippedSteps: int
    backend: Any
    nodeinfo: Any

    def stateArrays(self) -> dict[str, dict[str, Any]]: ...

    def hyperparameters(self) -> dict[str, Any]: ...

    def lossScaleState(self) -> Optional[dict[str, Any]]: ...

    def loadState(self, arrays: Mapping[str, Mapping[str, np.ndarray]], t: int, skippedSteps: int,
                  lossScaleState: Optional[Mapping[str, Any]] = None) -> None: ...


class CheckpointError(ValueError):
    """A file is not a readable puzzle_rms checkpoint (wrong format, newer version, damaged entry)."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint does not fit the module or optimizer it is loaded into; nothing was modified.

    Attributes
    ----------
    mismatches : list of str
        One line per mismatching name, shape, dtype or hyperparameter.
    """

    def __init__(self, path: str, mismatches: list[str]) -> None:
        self.mismatches = list(mismatches)
        lines = "\n".join(f"  - {line}" for line in self.mismatches)
        hint = ("\n(pass hyperparameters='keep' to resume with the optimizer's own hyperparameters)"
                if any(line.startswith("hyperparameter ") for line in self.mismatches) else "")
        super().__init__(f"checkpoint {path!r} does not match ({len(self.mismatches)} mismatches); "
                         f"nothing was loaded:\n{lines}{hint}")


# --- public API ---------------------------------------------------------------------------------
def saveModule(path: PathLike, module: Any) -> None:
    """Write the parameters of ``module`` (a Module, or a dict name -> Variable) to ``path`` atomically."""
    path = _check_path("saveModule", path)
    _write(path, _module_arrays("saveModule", module), module=module, optimizer=None)


def loadModule(path: PathLike, module: Any) -> None:
    """Load parameters saved by :func:`saveModule` or :func:`saveTraining` into ``module`` in place.

    Raises
    ------
    CheckpointMismatchError
        A name, shape or dtype differs (all differences are listed); nothing was modified.
    CheckpointError
        ``path`` is not a readable checkpoint.
    """
    path = _check_path("loadModule", path)
    _load("loadModule", path, module, None, "check")


def saveOptimizer(path: PathLike, optimizer: "CheckpointableOptimizer") -> None:
    """Write the optimizer's state buffers, step counter, skip count, loss-scale state and hyperparameters.

    With ``optimizer.nodeinfo`` set, only rank 0 writes; every rank then learns whether it succeeded (and raises if not).
    """
    path = _check_path("saveOptimizer", path)
    arrays = _optimizer_arrays("saveOptimizer", optimizer)
    _distributed_write(optimizer, lambda: _write(path, arrays, module=None, optimizer=optimizer))


def loadOptimizer(path: PathLike, optimizer: "CheckpointableOptimizer", hyperparameters: str = "check") -> None:
    """Restore what :func:`saveOptimizer` or :func:`saveTraining` wrote into a set-up optimizer.

    Parameters
    ----------
    path : str or path-like
    optimizer : Optimizer
        Already set up (``setupOn``) on variables of the same names, shapes and dtypes, in either state mode.
    hyperparameters : {"check", "keep"}
        "check" (default): the saved hyperparameters (class, learning rate or schedule, factor, epsilon, ...,
        parameter groups, loss-scale settings) must equal the optimizer's, else the differences are listed in
        the error. "keep": resume with the optimizer's own hyperparameters (e.g. a new learning rate).

    Raises
    ------
    CheckpointMismatchError
        Names, shapes, dtypes or (with "check") hyperparameters differ; nothing was modified.
    """
    path = _check_path("loadOptimizer", path)
    check_choice("loadOptimizer", "hyperparameters", hyperparameters, HYPERPARAMETER_MODES)
    _load("loadOptimizer", path, None, optimizer, hyperparameters)


def saveTraining(path: PathLike, module: Any, optimizer: "CheckpointableOptimizer") -> None:
    """Write a module's parameters and an optimizer's complete state to one file, atomically.

    Together they resume training exactly: ``N`` steps, :func:`saveTraining`, :func:`loadTraining` (in a
    new process), ``M`` steps gives bit for bit the parameters of ``N + M`` uninterrupted steps on the CPU
    backends. With ``optimizer.nodeinfo`` set, only rank 0 writes; every rank raises if that write failed.
    """
    path = _check_path("saveTraining", path)
    arrays = {**_module_arrays("saveTraining", module), **_optimizer_arrays("saveTraining", optimizer)}
    _distributed_write(optimizer, lambda: _write(path, arrays, module=module, optimizer=optimizer))


def loadTraining(path: PathLike, module: Any, optimizer: "CheckpointableOptimizer",
                 hyperparameters: str = "check") -> None:
    """Load what :func:`saveTraining` wrote into ``module`` and ``optimizer``; all checks come before any write.

    ``hyperparameters`` is as in :func:`loadOptimizer`.
    """
    path = _check_path("loadTraining", path)
    check_choice("loadTraining", "hyperparameters", hyperparameters, HYPERPARAMETER_MODES)
    _load("loadTraining", path, module, optimizer, hyperparameters)


def checkpointInfo(path: PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint: format version, entries (names, shapes, dtypes), optimizer step and settings."""
    path = _check_path("checkpointInfo", path)
    with _open(path) as archive:
        return _metadata(path, archive)


# --- what is saved ------------------------------------------------------------------------------
def _check_path(owner: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {path!r} ({type(path).__name__})")
    return os.fspath(path)


def _module_table(owner: str, module: Any) -> dict[str, Variable]:
    """name -> Variable of a Module or a dict of Variables."""
    if hasattr(module, "namedVariables"):
        table = module.namedVariables()
    elif isinstance(module, dict):
        table = module
    else:
        raise TypeError(f"{owner}: module must be a Module or a dict of name -> Variable, got {type(module).__name__}")
    for name, var in table.items():
        if not isinstance(var, Variable):
            raise TypeError(f"{owner}: module entry {name!r} is a {type(var).__name__}, expected a Variable")
    return table


def _module_arrays(owner: str, module: Any) -> dict[EntryKey, Any]:
    return {("module", name, None): var.data for name, var in _module_table(owner, module).items()}


def _optimizer_arrays(owner: str, optimizer: Any) -> dict[EntryKey, Any]:
    """(section, variable, buffer) -> view of that state buffer, for every optimized variable."""
    if not all(callable(getattr(optimizer, method, None)) for method in _OPTIMIZER_METHODS):
        raise TypeError(f"{owner}: optimizer must be a puzzle_rms Optimizer (with {', '.join(_OPTIMIZER_METHODS)}), "
                        f"got {type(optimizer).__name__}")
    arrays: dict[EntryKey, Any] = {}
    for name, views in optimizer.stateArrays().items():
        for buffer, view in views.items():
            arrays[("optimizer", name, buffer)] = view
        if not views:
            arrays[("optimizer", name, None)] = None  # a stateless rule (SGD): record the name only
    return arrays


def _host(array: Any) -> np.ndarray:
    return np.asarray(backends.current().to_host(array), order="C")  # keeps 0-d shapes, unlike ascontiguousarray


def _write(path: str, arrays: dict[EntryKey, Any], module: Any, optimizer: Any) -> None:
    """Build the archive from ``arrays`` and the metadata, then write it atomically."""
    entries, payload = [], {}
    for (section, name, buffer), array in arrays.items():
        if array is None:
            entries.append({"key": None, "section": section, "variable": name, "buffer": None})
            continue
        key = f"param:{name}" if section == "module" else f"state:{name}:{buffer}"
        host = _host(array)
        payload[key] = host
        entries.append({"key": key, "section": section, "variable": name, "buffer": buffer,
                        "shape": list(host.shape), "dtype": str(host.dtype)})
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION, "library": _library_version(),
                            "backend": (backends.current() if optimizer is None else optimizer.backend).name,
                            "entries": entries}
    if module is not None:
        meta["module"] = {"class": type(module).__qualname__}
    if optimizer is not None:
        meta["optimizer"] = {"hyperparameters": optimizer.hyperparameters(), "t": int(optimizer.t),
                             "skippedSteps": int(optimizer.skippedSteps), "lossScaleState": optimizer.lossScaleState()}
    text = json.dumps(meta, sort_keys=True).encode("utf-8")
    _atomic_savez(path, {META_KEY: np.frombuffer(text, dtype=np.uint8), **payload})


def _library_version() -> str:
    from puzzle_rms import __version__

    return __version__


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz to a temporary file beside ``path``, fsync it, rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            np.savez(stream, allow_pickle=False, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); folders cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _distributed_write(optimizer: Any, write: Any) -> None:
    """Run ``write`` on rank 0 only when ``optimizer.nodeinfo`` is set, then tell every rank whether it worked.

    The outcome travels in one collective (``nodeinfo.meanValue``), which every rank reaches even when the
    write failed: rank 0 re-raises its error, the other ranks raise CheckpointError, so no rank trains on
    believing a checkpoint exists that does not.
    """
    nodeinfo = getattr(optimizer, "nodeinfo", None)
    if nodeinfo is None:
        write()
        return
    error = None
    if nodeinfo.isRoot:
        try:
            write()
        except Exception as caught:  # handed to every rank below, then re-raised here
            error = caught
    if nodeinfo.meanValue(0.0 if error is None else 1.0) > 0:
        if error is not None:
            raise error
        raise CheckpointError("rank 0 could not write the checkpoint; see its error")


# --- loading ------------------------------------------------------------------------------------
def _open(path: str) -> Any:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from None
    except ValueError:  # NumPy's text here advises allow_pickle=True: wrong for a file that is no checkpoint
        raise CheckpointError(f"{path!r} is not a puzzle_rms checkpoint (an .npz archive): {_what_it_is(path)}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{path!r} is not a puzzle_rms checkpoint (an .npz archive): {error}") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} holds a single .npy array, not a puzzle_rms checkpoint (.npz archive)")
    return archive


def _is_hdf5_file(path: str) -> bool:
    """True when the file at ``path`` starts with the HDF5 signature."""
    try:
        with open(path, "rb") as stream:
            return stream.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    except OSError:
        return False


def _what_it_is(path: str) -> str:
    if _is_hdf5_file(path):
        return "it is an HDF5 file; PuzzleLib's HDF5 files load from a path ending in .hdf, .h5 or .hdf5"
    return "it is not a readable .npz or .npy file"


def _metadata(path: str, archive: Any) -> dict[str, Any]:
    if META_KEY not in archive.files:
        raise CheckpointError(f"{path!r} is an .npz archive without {META_KEY!r}: not a puzzle_rms checkpoint")
    try:
        meta = json.loads(_read_entry(path, archive, META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path!r}: the metadata is damaged: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{path!r}: checkpoint format version {version!r}; this puzzle_rms "
                              f"({_library_version()}) reads versions 1 to {VERSION}")
    return meta


def _read_entry(path: str, archive: Any, key: str) -> np.ndarray:
    try:
        return archive[key]
    except KeyError:
        raise CheckpointError(f"{path!r}: entry {key!r} is listed in the metadata but missing") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{path!r}: entry {key!r} is damaged: {error}") from error


def _label(key: EntryKey) -> str:
    section, name, buffer = key
    if section == "module":
        return f"parameter {name!r}"
    return f"optimizer variable {name!r}" if buffer is None else f"optimizer state {buffer!r} of {name!r}"


def _compare_entries(expected: dict[EntryKey, Any], saved: dict[EntryKey, dict], what: str) -> list[str]:
    """One line per entry missing on either side or differing in shape or dtype."""
    lines = []
    for key, array in expected.items():
        entry = saved.get(key)
        if entry is None:
            lines.append(f"{_label(key)}: in the {what} but not in the checkpoint")
        elif array is not None:
            if tuple(entry["shape"]) != tuple(array.shape):
                lines.append(f"{_label(key)}: shape {tuple(entry['shape'])} in the checkpoint, "
                             f"{tuple(array.shape)} in the {what}")
            if np.dtype(entry["dtype"]) != np.dtype(array.dtype):
                lines.append(f"{_label(key)}: dtype {entry['dtype']} in the checkpoint, {array.dtype} in the {what}")
    lines += [f"{_label(key)}: in the checkpoint but not in the {what}" for key in saved if key not in expected]
    return lines


def _saved_hyperparameters(meta: dict[str, Any]) -> dict[str, Any]:
    """The saved hyperparameters in today's shape.

    Version-1 files written before parameter groups lost their never-used ``extra`` field have
    ``"extra": {}`` in every group; it is dropped here. A non-empty ``extra`` is kept, so it shows as a mismatch.
    Groups written before they had a ``learnRateScale`` had the scale 1.
    """
    saved = dict(meta["optimizer"]["hyperparameters"])
    if isinstance(saved.get("groups"), list):
        saved["groups"] = [{"learnRateScale": 1.0, **{key: value for key, value in group.items()
                                                      if not (key == "extra" and value == {})}}
                           if isinstance(group, dict) else group for group in saved["groups"]]
    return saved


def _compare_hyperparameters(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per hyperparameter that differs; one the file predates counts as its old value."""
    lines = []
    for name in sorted(set(saved) | set(current)):
        old, new = saved.get(name, _ADDED_HYPERPARAMETERS.get(name, "<absent>")), current.get(name, "<absent>")
        if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            lines.append(f"hyperparameter {name}: {json.dumps(old)} in the checkpoint, {json.dumps(new)} in the "
                         f"optimizer")
    return lines


def _load(owner: str, path: str, module: Any, optimizer: Any, hyperparameters: str) -> None:
    """Validate everything, read every array, and only then write into the module and the optimizer."""
    expected: dict[EntryKey, Any] = {}
    if module is not None:
        expected.update(_module_arrays(owner, module))
    if optimizer is not None:
        expected.update(_optimizer_arrays(owner, optimizer))
    with _open(path) as archive:
        meta = _metadata(path, archive)
        saved = {(e["section"], e["variable"], e["buffer"]): e for e in meta["entries"]}
        mismatches = []
        if module is not None:
            if not any(key[0] == "module" for key in saved):
                raise CheckpointError(f"{path!r} holds no module parameters (it was written by saveOptimizer)")
            mismatches += _compare_entries({k: v for k, v in expected.items() if k[0] == "module"},
                                           {k: e for k, e in saved.items() if k[0] == "module"}, "module")
        if optimizer is not None:
            if "optimizer" not in meta:
                raise CheckpointError(f"{path!r} holds no optimizer state (it was written by saveModule)")
            mismatches += _compare_entries({k: v for k, v in expected.items() if k[0] == "optimizer"},
                                           {k: e for k, e in saved.items() if k[0] == "optimizer"}, "optimizer")
            if hyperparameters == "check":
                mismatches += _compare_hyperparameters(_saved_hyperparameters(meta), optimizer.hyperparameters())
        if mismatches:
            raise CheckpointMismatchError(path, mismatches)
        values = {}
        for key, target in expected.items():
            if target is None:
                continue
            entry = saved[key]
            array = _read_entry(path, archive, entry["key"])
            if array.shape != tuple(entry["shape"]) or array.dtype != np.dtype(entry["dtype"]):
                raise CheckpointError(f"{path!r}: entry {entry['key']!r} holds shape {array.shape} and dtype "
                                      f"{array.dtype}, but the metadata says {tuple(entry['shape'])} and "
                                      f"{entry['dtype']}: the file is damaged")
            values[key] = array
    staged = _stage_module(owner, values, expected)
    if optimizer is not None:
        _load_optimizer_state(path, optimizer, values, expected, meta["optimizer"])
    for target, value in staged:
        target[...] = value


def _stage_module(owner: str, values: dict[EntryKey, np.ndarray], targets: dict[EntryKey, Any]) -> list:
    """(parameter, its new value on the current backend) for every module entry; nothing is written yet."""
    backend = backends.current()
    keys = [key for key in values if key[0] == "module"]
    for key in keys:
        if not backend.owns(targets[key]):
            raise TypeError(f"{owner}: {_label(key)} is a {type(targets[key]).__name__} but the current backend is "
                            f"{backend.name!r}; use the backend the module was built on")
    return [(targets[key], backend.to_device(values[key])) for key in keys]


def _load_optimizer_state(path: str, optimizer: Any, values: dict[EntryKey, np.ndarray],
                          targets: dict[EntryKey, Any], saved: dict[str, Any]) -> None:
    """Hand the arrays and counters to ``optimizer.loadState``, which checks them all before it writes."""
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for section, name, buffer in targets:
        if section == "optimizer":
            buffers = arrays.setdefault(name, {})
            if buffer is not None:
                buffers[buffer] = values[(section, name, buffer)]
    try:
        optimizer.loadState(arrays, saved.get("t"), saved.get("skippedSteps"), saved.get("lossScaleState"))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path!r}: the optimizer state in the checkpoint does not load: {error}") from error
