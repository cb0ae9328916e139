"""PuzzleLib's HDF5 files: a model's parameters and an optimizer's state, read and written here.

``module.save(path)``, ``module.load(path)``, ``optimizer.save(path)`` and ``optimizer.load(path)`` use
this format when ``path`` ends in ``.hdf``, ``.h5`` or ``.hdf5`` (:func:`isHdfPath`); every other path
keeps the .npz checkpoint of :mod:`puzzle_rms.checkpoint`. It needs h5py (``pip install
"puzzle_rms[hdf5]"``), imported only here and only then. Loading reads numeric datasets only (no
strings, objects or pickles), checks every name, shape and dtype first, and writes nothing unless all
of them fit.

The layout, as PuzzleLib 1.0.2 writes it (``Module.save``, ``Container.save``, ``Optimizer.save``):

Model file
    ``/params/<i>``: one float dataset per distinct parameter, ``i = 0, 1, ...`` (gzip).
    ``/links/<root>.<name>``: a scalar integer, the ``i`` of that parameter. ``<name>`` is the dotted
    ``namedVariables`` name (``0.W``, ``par.left.b``) and ``<root>`` the root module's name, empty when it
    has none (so ``.0.W``). A parameter shared under two names is stored once and linked twice.
    ``/attrs.<root>``: a group containers write (empty for the modules here).
Optimizer file
    ``/.attrs/<attr>``: the step counter ``t`` and the hyperparameters, under PuzzleLib's names.
    ``/.states/<name>.<buffer>``: one state buffer of one variable (``0.W.ms``), as PuzzleLib's
    optimizers hold it with ``useGlobalState=False``. With ``useGlobalState=True`` PuzzleLib writes one
    flat buffer per dtype instead, ``/.states/<class 'numpy.float32'>.ms``: the variables sorted by
    name, concatenated. Files written here hold both forms, so they load in PuzzleLib either way;
    files read here may hold either.

Signs: PuzzleLib's optimizers keep ``-dL/dw`` in their buffers, so the momentum (``mom``, and ``delta``
of ``RMSPropGraves``) and the mean gradient (``mg``) are stored negated relative to puzzle_rms's
buffers; ``ms`` is the same. A centered RMSProp (``mg`` buffer) writes its momentum as ``delta`` and
its hyperparameters as ``RMSPropGraves``'s (``alpha`` = factor, ``momRate`` = momentum). A learning
rate that is a schedule is written as its value for the next step.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any

import numpy as np

from puzzle_rms.checkpoint import (CheckpointError, CheckpointMismatchError, _atomic_write, _check_path,
                                   _distributed_write, _host, _is_hdf5_file, _module_arrays, _optimizer_arrays,
                                   _stage_module)

__all__ = ["HDF_SUFFIXES", "isHdfPath", "saveModule", "loadModule", "saveOptimizer", "loadOptimizer"]

HDF_SUFFIXES = (".hdf", ".h5", ".hdf5")

# puzzle_rms buffer -> (PuzzleLib's name, sign); a centered optimizer's "mom" is RMSPropGraves's "delta".
_BUFFERS = {"ms": ("ms", 1.0), "mg": ("mg", -1.0), "mom": ("mom", -1.0)}


def isHdfPath(path: Any) -> bool:
    """True when ``path`` (str or os.PathLike) ends in .hdf, .h5 or .hdf5 (any case)."""
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(HDF_SUFFIXES)


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as error:
        raise ImportError("PuzzleLib's HDF5 format (a path ending in .hdf, .h5 or .hdf5) needs h5py, which is not "
                          "installed: pip install \"puzzle_rms[hdf5]\" (or pip install h5py); "
                          "or save to a path ending in .npz") from error
    return h5py


# --- models -------------------------------------------------------------------------------------
def saveModule(path: Any, module: Any) -> None:
    """Write the parameters of ``module`` (a Module or a dict name -> Variable) in PuzzleLib's layout, atomically."""
    path = _check_path("saveModule", path)
    h5py = _h5py()
    arrays = _module_arrays("saveModule", module)
    root = getattr(module, "name", None) or ""

    def fill(hdf: Any) -> None:
        params, links = hdf.create_group("params"), hdf.create_group("links")
        index: dict[int, int] = {}
        for (_, name, _), data in arrays.items():
            if id(data) not in index:
                index[id(data)] = len(index)
                params.create_dataset(str(index[id(data)]), data=_host(data), compression="gzip")
            links.create_dataset(f"{root}.{name}", data=np.int64(index[id(data)]))
        if getattr(module, "modules", None):
            hdf.create_group(f"attrs.{root}")

    _atomic_hdf(h5py, path, fill)


def loadModule(path: Any, module: Any) -> None:
    """Load a PuzzleLib model file into ``module`` in place; all names, shapes and dtypes are checked first.

    The root name in the file's links is the module's ``name`` (empty when None); when that does not
    fit and every link in the file starts with the same root name, that one is used.

    Raises
    ------
    CheckpointMismatchError
        A parameter is missing, or its shape differs, or its dtype does not cast safely; nothing was modified.
    CheckpointError
        The file is not a PuzzleLib model file (not HDF5, no ``params``/``links``, non-numeric data).
    """
    path = _check_path("loadModule", path)
    h5py = _h5py()
    expected = _module_arrays("loadModule", module)
    with _open(h5py, path) as hdf:
        params, links = hdf.get("params"), hdf.get("links")
        if not isinstance(params, h5py.Group) or not isinstance(links, h5py.Group):
            raise CheckpointError(f"{path!r} is an HDF5 file without the groups 'params' and 'links': "
                                  "not a PuzzleLib model file")
        root = _root(links, [key[1] for key in expected], getattr(module, "name", None) or "")
        values, mismatches = {}, []
        for key, target in expected.items():
            link = f"{root}.{key[1]}"
            if link not in links:
                mismatches.append(f"parameter {key[1]!r}: no link {link!r} in the file")
                continue
            index = _numeric(h5py, path, links[link], f"links/{link}", kinds="iu")
            if index.shape != ():
                raise CheckpointError(f"{path!r}: links/{link} holds shape {index.shape}, expected a scalar index")
            if str(int(index)) not in params:
                raise CheckpointError(f"{path!r}: links/{link} points to params/{int(index)}, which does not exist")
            array = _numeric(h5py, path, params[str(int(index))], f"params/{int(index)}", kinds="fiu")
            mismatches += _fit(f"parameter {key[1]!r}", array, target)
            values[key] = array.astype(target.dtype)
        if mismatches:
            raise CheckpointMismatchError(path, mismatches)
    for target, value in _stage_module("loadModule", values, expected):
        target[...] = value


# --- optimizers ---------------------------------------------------------------------------------
def saveOptimizer(path: Any, optimizer: Any) -> None:
    """Write ``t``, the hyperparameters and the state buffers of a set-up optimizer in PuzzleLib's layout.

    With ``optimizer.nodeinfo`` set, only rank 0 writes; every rank learns whether it worked.
    """
    path = _check_path("saveOptimizer", path)
    h5py = _h5py()
    arrays = _optimizer_arrays("saveOptimizer", optimizer)
    attrs = _attrs(optimizer)
    centered = any(key[2] == "mg" for key in arrays)
    for key in arrays:
        if key[2] is not None and key[2] not in _BUFFERS:
            raise ValueError(f"saveOptimizer: {type(optimizer).__name__} keeps a {key[2]!r} buffer, which PuzzleLib's "
                             f"format has no place for; save to a path ending in .npz instead")
        if key[2] is not None and np.dtype(arrays[key].dtype).kind != "f":
            raise ValueError(f"saveOptimizer: state {key[2]!r} of {key[1]!r} is stored as {np.dtype(arrays[key].dtype)} "
                             f"(compressed state, stateDtype={getattr(optimizer, 'stateDtype', None)!r}); PuzzleLib's "
                             f"format holds floating-point state only; save to a path ending in .npz instead")

    def fill(hdf: Any) -> None:
        group = hdf.create_group(".attrs")
        for name, value in attrs.items():
            group.create_dataset(name, data=value)
        states = hdf.create_group(".states")
        flat: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
        for (_, name, buffer), view in arrays.items():
            if buffer is None:
                continue
            stored, sign = _stored_name(buffer, centered)
            host = _host(view) * np.asarray(sign, dtype=view.dtype)
            states.create_dataset(f"{name}.{stored}", data=host)
            flat.setdefault((str(host.dtype.type), stored), []).append((name, host))
        for (dtype, stored), parts in flat.items():
            states.create_dataset(f"{dtype}.{stored}", data=np.concatenate([a.ravel() for _, a in sorted(parts, key=lambda p: p[0])]))

    _distributed_write(optimizer, lambda: _atomic_hdf(h5py, path, fill))


def loadOptimizer(path: Any, optimizer: Any, hyperparameters: str = "check") -> None:
    """Restore ``t`` and the state buffers of a PuzzleLib optimizer file into a set-up optimizer.

    Parameters
    ----------
    hyperparameters : {"check", "keep"}
        "check": the file's hyperparameters (learnRate, factor or alpha, epsilon, momRate) must equal
        this optimizer's; "keep": they are ignored.

    Raises
    ------
    CheckpointMismatchError
        A buffer is missing or of another size, or (with "check") a hyperparameter differs; nothing was modified.
    """
    path = _check_path("loadOptimizer", path)
    if hyperparameters not in ("check", "keep"):
        raise ValueError(f"loadOptimizer: hyperparameters must be 'check' or 'keep', got {hyperparameters!r}")
    h5py = _h5py()
    expected = {key: view for key, view in _optimizer_arrays("loadOptimizer", optimizer).items() if key[2] is not None}
    centered = any(key[2] == "mg" for key in expected)
    ours = _attrs(optimizer)
    with _open(h5py, path) as hdf:
        attrs, states = hdf.get(".attrs"), hdf.get(".states")
        if not isinstance(attrs, h5py.Group):
            raise CheckpointError(f"{path!r} is an HDF5 file without the group '.attrs': not a PuzzleLib optimizer file")
        saved = {name: _numeric(h5py, path, attrs[name], f".attrs/{name}", kinds="fiub") for name in attrs}
        mismatches = []
        if "t" not in saved or saved["t"].shape != ():
            mismatches.append("the file has no scalar step counter '.attrs/t'")
        if hyperparameters == "check":
            for name in sorted(set(ours) - {"t"}):
                old = float(saved[name]) if name in saved else "<absent>"
                if old != ours[name]:
                    mismatches.append(f"hyperparameter {name}: {old} in the file, {ours[name]} in the optimizer")
        values = {}
        if expected and not isinstance(states, h5py.Group):
            mismatches.append("the file has no group '.states'")
        elif expected:
            flat = _split_flat(h5py, path, states, expected, centered)
            for key, view in expected.items():
                stored, sign = _stored_name(key[2], centered)
                entry = f"{key[1]}.{stored}"
                if entry in states:
                    array = _numeric(h5py, path, states[entry], f".states/{entry}", kinds="f")
                elif key in flat:
                    array = flat[key]
                else:
                    mismatches.append(f"state {key[1]!r} {key[2]}: no dataset {entry!r} in the file")
                    continue
                found = _fit(f"state {key[1]!r} {key[2]}", array, view)
                mismatches += found
                if not found:
                    values[key] = array.astype(view.dtype) * np.asarray(sign, dtype=view.dtype)
        if mismatches:
            raise CheckpointMismatchError(path, mismatches)
    arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in optimizer.stateArrays()}
    for (_, name, buffer), value in values.items():
        arrays[name][buffer] = value
    try:
        optimizer.loadState(arrays, int(saved["t"]), optimizer.skippedSteps, optimizer.lossScaleState())
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path!r}: the optimizer state in the file does not load: {error}") from error


# --- helpers ------------------------------------------------------------------------------------
def _stored_name(buffer: str, centered: bool) -> tuple[str, float]:
    name, sign = _BUFFERS[buffer]
    return ("delta" if centered and buffer == "mom" else name), sign


def _attrs(optimizer: Any) -> dict[str, Any]:
    """t and the hyperparameters under the names of PuzzleLib's counterpart (RMSProp, RMSPropGraves, SGD...)."""
    learnRate = optimizer.learnRate
    if not isinstance(learnRate, (int, float)):
        learnRate = optimizer.currentLearnRates()[0]
    attrs: dict[str, Any] = {"t": np.int64(optimizer.t), "learnRate": float(learnRate)}
    centered = bool(getattr(optimizer, "centered", False))
    if hasattr(optimizer, "factor"):
        attrs["alpha" if centered else "factor"] = float(optimizer.factor)
    if hasattr(optimizer, "epsilon"):
        attrs["epsilon"] = float(optimizer.epsilon)
    momRate = getattr(optimizer, "momRate", getattr(optimizer, "momentum", 0.0) if centered else None)
    if momRate is not None:
        attrs["momRate"] = float(momRate)
    return attrs


def _split_flat(h5py: Any, path: str, states: Any, expected: dict, centered: bool) -> dict:
    """Per-variable pieces of PuzzleLib's global-state buffers (variables sorted by name, concatenated)."""
    pieces = {}
    byBuffer: dict[tuple[str, str], list] = {}
    for key, view in expected.items():
        stored, _ = _stored_name(key[2], centered)
        byBuffer.setdefault((str(np.dtype(view.dtype).type), stored), []).append((key, view))
    for (dtype, stored), entries in byBuffer.items():
        entry = f"{dtype}.{stored}"
        if entry not in states:
            continue
        flat = _numeric(h5py, path, states[entry], f".states/{entry}", kinds="f").ravel()
        sizes = [int(np.prod(view.shape)) for _, view in entries]
        if flat.size != sum(sizes):
            raise CheckpointMismatchError(path, [f"state {entry!r} holds {flat.size} values, the optimizer's "
                                                 f"variables of that dtype {sum(sizes)}"])
        offset = 0
        for (key, view), size in sorted(zip(entries, sizes), key=lambda item: item[0][0][1]):
            pieces[key] = flat[offset:offset + size].reshape(view.shape)
            offset += size
    return pieces


def _root(links: Any, names: list[str], own: str) -> str:
    if all(f"{own}.{name}" in links for name in names):
        return own
    roots = {link.split(".", 1)[0] for link in links}
    return roots.pop() if len(roots) == 1 else own


def _numeric(h5py: Any, path: str, node: Any, where: str, kinds: str) -> np.ndarray:
    """The data of a numeric dataset; anything else (a group, strings, objects) is refused unread."""
    if not isinstance(node, h5py.Dataset):
        raise CheckpointError(f"{path!r}: {where} is not a dataset")
    if node.dtype.kind not in kinds:
        raise CheckpointError(f"{path!r}: {where} holds dtype {node.dtype}, expected a numeric dataset "
                              f"(kinds {kinds!r}); the file is not a PuzzleLib file or is damaged")
    return np.asarray(node[()])


def _fit(label: str, array: np.ndarray, target: Any) -> list[str]:
    if tuple(array.shape) != tuple(target.shape):
        return [f"{label}: shape {tuple(array.shape)} in the file, {tuple(target.shape)} here"]
    if not np.can_cast(array.dtype, target.dtype, "safe"):
        return [f"{label}: dtype {array.dtype} in the file does not cast safely to {target.dtype}"]
    return []


@contextlib.contextmanager
def _open(h5py: Any, path: str) -> Any:
    if not os.path.exists(path):
        raise FileNotFoundError(f"PuzzleLib file {path!r} does not exist")
    if not _is_hdf5_file(path):
        raise CheckpointError(f"{path!r} is not an HDF5 file (a path ending in .hdf/.h5/.hdf5 is read as "
                              f"PuzzleLib's HDF5 format; puzzle_rms's own checkpoints end in .npz)")
    with h5py.File(path, "r") as hdf:
        yield hdf


def _atomic_hdf(h5py: Any, path: str, fill: Any) -> None:
    """Build the file in memory with ``fill(hdf)``, then write it to ``path`` atomically (as checkpoints are)."""
    with h5py.File(f"{secrets.token_hex(8)}.hdf", "w", driver="core", backing_store=False, libver="earliest") as hdf:
        fill(hdf)
        hdf.flush()
        image = hdf.id.get_file_image()
    _atomic_write(path, lambda stream: stream.write(image))
