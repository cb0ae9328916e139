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
the previous checkpoint intact and a stray ``.<name>.<digest>.<host>.<pid>.*.tmp``
file, which the next save to the same path on the same host removes once
process ``<pid>`` is gone. Names are checked before anything is written: every
variable name must be a str without NUL that UTF-8 can encode, and no two
arrays may share an entry, so each array round-trips.

Reading is bounded: a checkpoint must be a regular file (a FIFO or a device is
refused without blocking); the metadata entry may hold at most
:data:`METADATA_LIMIT` bytes; every array entry's ``.npy`` header (shape,
dtype) is read and compared with the metadata, and the metadata with the
module and optimizer, before any of its data is read; an entry is then read
into an array of exactly the declared size and refused if it holds more. A
damaged or hostile file raises :class:`CheckpointError` naming the problem, and
memory stays within the size of the model, the metadata limit and the zip
directory (which is as long as the file holds entries).

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
import hashlib
import json
import os
import secrets
import socket
import stat
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, Callable, Mapping, Optional, Protocol, Union

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
METADATA_LIMIT = 16 << 20  # bytes of JSON metadata a checkpoint may hold (about 80,000 entries)
METADATA_DEPTH = 64  # deepest nesting of lists and objects accepted in the metadata
NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, APFS, NTFS)
_READ_CHUNK = 1 << 20
# what a damaged zip entry or .npy header can raise while it is read (zlib, struct and zipfile errors included)
_DAMAGE = (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error,
           struct.error, UnicodeError, OverflowError, KeyError, TypeError, SyntaxError, RecursionError)

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


def _entry_key(section: str, name: str, buffer: Optional[str]) -> str:
    return f"param:{name}" if section == "module" else f"state:{name}:{buffer}"


def _check_names(path: str, arrays: dict[EntryKey, Any]) -> None:
    """Refuse names that would not round-trip, before anything is written.

    A name must be a str (JSON keeps 0 and "0" apart, the archive's entry names do not), hold no NUL
    (zip entry names end there) and be encodable as UTF-8 (no lone surrogates); no two arrays may share
    an entry.
    """
    owners: dict[str, EntryKey] = {}
    for key in arrays:
        section, name, buffer = key
        for what, value in (("variable name", name), ("state buffer name", buffer)):
            if value is None and what == "state buffer name":
                continue
            if not isinstance(value, str):
                raise TypeError(f"checkpoint {path!r}: {what} {value!r} is a {type(value).__name__}; names must be "
                                f"str (so that 0 and '0' stay apart); nothing was written")
            if "\0" in value:
                raise ValueError(f"checkpoint {path!r}: {what} {value!r} contains a NUL character, which a zip entry "
                                 f"name cannot hold; nothing was written")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"checkpoint {path!r}: {what} {value!r} cannot be encoded as UTF-8 ({error}); "
                                 f"nothing was written") from None
        if arrays[key] is None:
            continue
        entry = _entry_key(section, name, buffer)
        if entry in owners:
            raise ValueError(f"checkpoint {path!r}: {_label(owners[entry])} and {_label(key)} would share the "
                             f"archive entry {entry!r}; rename one of them; nothing was written")
        owners[entry] = key


def _write(path: str, arrays: dict[EntryKey, Any], module: Any, optimizer: Any) -> None:
    """Build the archive from ``arrays`` and the metadata, then write it atomically."""
    _check_names(path, arrays)
    entries, payload = [], {}
    for (section, name, buffer), array in arrays.items():
        if array is None:
            entries.append({"key": None, "section": section, "variable": name, "buffer": None})
            continue
        key = _entry_key(section, name, buffer)
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


def _temporary_prefix(path: str) -> str:
    """The start of the names of this host's temporary files for ``path``: ``.<name>.<digest>.<host>.``.

    ``<name>`` is the file name cut to leave room for the rest within :data:`NAME_MAX` bytes; the digest of
    the whole name keeps cut names apart.
    """
    name = os.path.basename(path)
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    host = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = NAME_MAX - len(f"..{digest}.{host}.{2 ** 32}.{'0' * 8}.tmp")
    cut = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return f".{cut}.{digest}.{host}."


def _remove_stray_temporaries(folder: str, prefix: str) -> None:
    """Delete temporary files ``<prefix><pid>.<token>.tmp`` whose writer process no longer exists."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            pid = entry.name[len(prefix):].split(".")[0]
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp") and pid.isdigit()):
                continue
            if int(pid) == os.getpid() or _process_exists(int(pid)):
                continue
            with contextlib.suppress(OSError):
                os.remove(entry.path)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # alive but not ours, or not answerable: keep its file
    return True


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz to ``path`` atomically (:func:`_atomic_write`)."""
    _atomic_write(path, lambda stream: np.savez(stream, allow_pickle=False, **arrays))


def _atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, fsync it, rename it over ``path``, fsync the
    folder. Temporary files left by writers of the same path on this host that have died are removed first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    _remove_stray_temporaries(folder, prefix)
    temporary = os.path.join(folder, f"{prefix}{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
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
class _Archive:
    """A checkpoint file open for reading: its zip directory, entries read one at a time with bounded memory."""

    def __init__(self, path: str, stream: Any) -> None:
        self.path = path
        self.stream = stream
        try:
            self.zip = zipfile.ZipFile(stream)
            self.infos = {info.filename: info for info in self.zip.infolist()}
        except _DAMAGE as error:
            stream.close()
            raise CheckpointError(f"{path!r} is not a puzzle_rms checkpoint (an .npz zip archive): "
                                  f"{_describe(error)}") from None

    def __enter__(self) -> "_Archive":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.zip.close()
        self.stream.close()

    def has(self, key: str) -> bool:
        return f"{key}.npy" in self.infos

    def read(self, key: str, check: Any) -> np.ndarray:
        """Entry ``key``: its .npy header is read first and ``check(shape, dtype)`` returns what is wrong with it
        (or None); only then is the data read, into an array of exactly that size."""
        info = self.infos.get(f"{key}.npy")
        if info is None:
            raise CheckpointError(f"{self.path!r}: entry {key!r} is listed in the metadata but missing")
        try:
            with self.zip.open(info) as entry:
                version = np.lib.format.read_magic(entry)
                if version not in ((1, 0), (2, 0)):  # np.savez writes 1.0 (2.0 for headers over 64 KiB)
                    raise ValueError(f".npy format version {version}, expected 1.0 or 2.0")
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(entry)
                if dtype.hasobject:
                    raise CheckpointError(f"{self.path!r}: entry {key!r} holds Python objects (a pickle): not a "
                                          f"puzzle_rms checkpoint, which holds numbers only; it was not read")
                problem = check(tuple(shape), dtype)
                if problem is not None:
                    raise CheckpointError(f"{self.path!r}: entry {key!r} {problem}: the file is damaged")
                return _read_data(entry, tuple(shape), dtype, fortran)
        except CheckpointError:
            raise
        except _DAMAGE as error:
            raise CheckpointError(f"{self.path!r}: entry {key!r} is damaged: {_describe(error)}") from None


def _read_data(entry: Any, shape: tuple, dtype: np.dtype, fortran: bool) -> np.ndarray:
    """Exactly the bytes of a ``shape`` and ``dtype`` array from ``entry``, refusing any more or fewer."""
    array = np.empty(shape[::-1] if fortran else shape, dtype)
    target = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < target.nbytes:
        chunk = entry.read(min(_READ_CHUNK, target.nbytes - done))
        if not chunk:
            raise ValueError(f"the data ends after {done} of {target.nbytes} bytes")
        target[done:done + len(chunk)] = chunk
        done += len(chunk)
    if entry.read(1):  # also reaches the end of the zip entry, where its CRC is checked
        raise ValueError(f"it holds more data than the {target.nbytes} bytes its header declares")
    return array.T if fortran else array


def _describe(error: BaseException) -> str:
    """An error's message without NumPy's advice to load with allow_pickle (checkpoints never need it)."""
    text = str(error) or type(error).__name__
    cut = text.find("allow_pickle")
    if cut >= 0:
        text = text[:text.rfind(".", 0, cut) + 1 or cut].strip() or "not an array this reader accepts"
    return text


def _open(path: str) -> _Archive:
    """Open ``path`` for reading; a FIFO, a device or a folder is refused without blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path!r} does not exist") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                    "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "not a regular file")
            raise CheckpointError(f"{path!r} is {kind}; a checkpoint is a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        stream = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    try:
        head = stream.read(len(_HDF5_SIGNATURE))
        stream.seek(0)
    except OSError as error:
        stream.close()
        raise CheckpointError(f"{path!r} cannot be read: {error}") from None
    if head.startswith(b"\x93NUMPY"):
        stream.close()
        raise CheckpointError(f"{path!r} holds a single .npy array, not a puzzle_rms checkpoint (.npz archive)")
    if head == _HDF5_SIGNATURE:
        stream.close()
        raise CheckpointError(f"{path!r} is not a puzzle_rms checkpoint (an .npz archive): it is an HDF5 file; "
                              f"PuzzleLib's HDF5 files load from a path ending in .hdf, .h5 or .hdf5")
    return _Archive(path, stream)


def _is_hdf5_file(path: str) -> bool:
    """True when the file at ``path`` starts with the HDF5 signature."""
    try:
        with open(path, "rb") as stream:
            return stream.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    except OSError:
        return False


def _metadata(path: str, archive: _Archive) -> dict[str, Any]:
    """The checked metadata: at most METADATA_LIMIT bytes of JSON, of this format and a known version, with
    well-formed entries (see :func:`_check_meta`)."""
    if not archive.has(META_KEY):
        raise CheckpointError(f"{path!r} is an .npz archive without {META_KEY!r}: not a puzzle_rms checkpoint")

    def check(shape: tuple, dtype: np.dtype) -> Optional[str]:
        if len(shape) != 1 or dtype != np.uint8:
            return f"has shape {shape} and dtype {dtype}, expected 1-D uint8 JSON text"
        if shape[0] > METADATA_LIMIT:
            return f"declares {shape[0]} bytes of metadata, more than the limit of {METADATA_LIMIT}"
        return None

    text = archive.read(META_KEY, check)
    try:
        meta = json.loads(text.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path!r}: the metadata is damaged: {type(error).__name__}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r}: format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(f"{path!r}: checkpoint format version {version!r}; this puzzle_rms "
                              f"({_library_version()}) reads versions 1 to {VERSION}")
    _check_meta(path, meta)
    return meta


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (iteratively, so deep input cannot recurse)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_meta(path: str, meta: dict[str, Any]) -> None:
    """Check the structure of the metadata, so that damage is reported by name rather than as a raw error."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path!r}: the metadata is damaged: {what}")

    if _depth(meta) > METADATA_DEPTH:
        raise bad(f"it nests deeper than {METADATA_DEPTH} levels")
    entries = meta.get("entries")
    if not isinstance(entries, list):
        raise bad(f"'entries' must be a list, got {type(entries).__name__}")
    seen: set = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(f"entry {i} must be an object, got {type(entry).__name__}")
        missing = [k for k in ("key", "section", "variable", "buffer") if k not in entry]
        if missing:
            raise bad(f"entry {i} lacks {missing}")
        section, name, buffer, key = (entry[k] for k in ("section", "variable", "buffer", "key"))
        if section not in ("module", "optimizer"):
            raise bad(f"entry {i} has section {section!r}, expected 'module' or 'optimizer'")
        if not isinstance(name, str) or not (buffer is None or isinstance(buffer, str)):
            raise bad(f"entry {i} must name a variable (str) and a buffer (str or null), got {name!r} and {buffer!r}")
        if (section, name, buffer) in seen:
            raise bad(f"entry {i} repeats {_label((section, name, buffer))}")
        seen.add((section, name, buffer))
        if key is None:
            if section != "optimizer" or buffer is not None:
                raise bad(f"entry {i} ({_label((section, name, buffer))}) has no archive key")
            continue
        if not isinstance(key, str) or key == META_KEY:
            raise bad(f"entry {i} has archive key {key!r}, expected a str naming an array")
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if (not isinstance(shape, list) or len(shape) > 32
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise bad(f"entry {i} ({key!r}) has shape {shape!r}, expected a list of at most 32 integers >= 0")
        try:
            parsed = np.dtype(dtype) if isinstance(dtype, str) else None
        except (TypeError, ValueError, SyntaxError):
            parsed = None
        if parsed is None or parsed.hasobject or parsed.kind not in "biufc":
            raise bad(f"entry {i} ({key!r}) has dtype {dtype!r}, expected the name of a numeric dtype")
    for part in ("module", "optimizer"):
        if part in meta and not isinstance(meta[part], dict):
            raise bad(f"{part!r} must be an object, got {type(meta[part]).__name__}")
    if "optimizer" in meta:
        optimizer = meta["optimizer"]
        missing = [k for k in ("hyperparameters", "t", "skippedSteps", "lossScaleState") if k not in optimizer]
        if missing:
            raise bad(f"the optimizer record lacks {missing}")
        if not isinstance(optimizer["hyperparameters"], dict):
            raise bad(f"the optimizer's hyperparameters must be an object, got "
                      f"{type(optimizer['hyperparameters']).__name__}")


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
        elif array is not None and entry.get("key") is None:
            lines.append(f"{_label(key)}: the checkpoint holds no array for it, the {what} does")
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
            if target is not None:
                entry = saved[key]
                values[key] = archive.read(entry["key"], _matches(tuple(entry["shape"]), np.dtype(entry["dtype"])))
    staged = _stage_module(owner, values, expected)
    if optimizer is not None:
        _load_optimizer_state(path, optimizer, values, expected, meta["optimizer"])
    for target, value in staged:
        target[...] = value


def _matches(shape: tuple, dtype: np.dtype) -> Any:
    """A header check: what differs from the metadata's ``shape`` and ``dtype``, or None."""
    def check(fileShape: tuple, fileDtype: np.dtype) -> Optional[str]:
        if fileShape == shape and fileDtype == dtype:
            return None
        return f"declares shape {fileShape} and dtype {fileDtype}, but the metadata says {shape} and {dtype}"
    return check


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
