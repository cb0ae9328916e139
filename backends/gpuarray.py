"""PuzzleLib-style ``gpuarray`` facade over the current backend.

PuzzleLib code that does ``from PuzzleLib.Backend import gpuarray`` ports by
importing ``from puzzle_rms.backends import gpuarray`` instead: ``to_gpu`` puts a host
array on the current backend, ``get`` brings it back, ``zeros``/``empty``
allocate there. On the CPU backends "the GPU" is host memory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import Backend, current

__all__ = ["GPUArray", "HostArray", "dtypesSupported", "empty", "full", "get", "to_gpu", "zeros"]


class HostArray(np.ndarray):
    """A host array with PuzzleLib's ``.get()``, so ``ary.get()`` works on the CPU backends as on CuPy."""

    def get(self) -> np.ndarray:
        """A plain NumPy copy (what ``cupy.ndarray.get`` returns for a device array)."""
        return np.array(self)


def _backend() -> Backend:
    return current()


def _with_get(array: Any) -> Any:
    return array.view(HostArray) if type(array) is np.ndarray else array


def to_gpu(array: Any, dtype: Any = None) -> Any:
    """Copy ``array`` (host or another backend's) into the current backend's memory."""
    return _with_get(_backend().to_device(np.array(array, copy=True) if isinstance(array, np.ndarray) else array,
                                          dtype=dtype))


def get(array: Any) -> np.ndarray:
    """Return ``array`` as a host NumPy array (PuzzleLib's ``ary.get()``)."""
    return _backend().to_host(array)


def zeros(shape: Any, dtype: Any = np.float32) -> Any:
    return _with_get(_backend().zeros(shape, dtype))


def empty(shape: Any, dtype: Any = np.float32) -> Any:
    return _with_get(_backend().empty(shape, dtype))


def full(shape: Any, value: float, dtype: Any = np.float32) -> Any:
    return _with_get(_backend().full(shape, value, dtype))


def dtypesSupported() -> tuple[np.dtype, ...]:
    """Parameter dtypes the current backend's kernels accept."""
    return _backend().dtypesSupported


def GPUArray(shape: Any, dtype: Any = np.float32) -> Any:
    """An uninitialised array on the current backend (PuzzleLib's ``GPUArray(shape, dtype)``)."""
    return empty(shape, dtype)
