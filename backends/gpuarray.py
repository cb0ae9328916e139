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

__all__ = ["GPUArray", "HostArray", "dtypesSupported", "empty", "full", "get", "to_gpu", "withGet", "zeros"]

ATOL = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-8}


class HostArray(np.ndarray):
    """A host array with PuzzleLib's ``.get()`` and ``.set(host)``, so they work on the CPU backends as on CuPy."""

    def get(self) -> np.ndarray:
        """A plain NumPy copy (what ``cupy.ndarray.get`` returns for a device array)."""
        return np.array(self)

    def set(self, host: Any) -> None:
        """Copy ``host`` (an array of this shape) into this array in place."""
        host = np.asarray(host)
        if host.shape != self.shape:
            raise ValueError(f"set: array of shape {host.shape} into an array of shape {self.shape}; "
                             "expected the same shape")
        np.copyto(self, host, casting="same_kind")


class _GPUArrayType(type):
    """``isinstance(x, GPUArray)`` asks the current backend; ``GPUArray(shape, dtype)`` allocates there."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return current().owns(obj)

    def __call__(cls, shape: Any, dtype: Any = np.float32) -> Any:
        return empty(shape, dtype)


class GPUArray(metaclass=_GPUArrayType):
    """PuzzleLib's array class: the current backend's array type (with ``get``/``set``); calling it,
    ``GPUArray(shape, dtype)``, returns an uninitialised array there."""


def _backend() -> Backend:
    return current()


def withGet(array: Any) -> Any:
    """``array`` as a :class:`HostArray` view when it is a plain NumPy array (CuPy arrays already have get/set)."""
    return array.view(HostArray) if type(array) is np.ndarray else array


def to_gpu(array: Any, dtype: Any = None) -> Any:
    """Copy ``array`` (host or another backend's) into the current backend's memory."""
    return withGet(_backend().to_device(np.array(array, copy=True) if isinstance(array, np.ndarray) else array,
                                        dtype=dtype))


def get(array: Any) -> np.ndarray:
    """Return ``array`` as a host NumPy array (PuzzleLib's ``ary.get()``)."""
    return _backend().to_host(array)


def zeros(shape: Any, dtype: Any = np.float32) -> Any:
    return withGet(_backend().zeros(shape, dtype))


def empty(shape: Any, dtype: Any = np.float32) -> Any:
    return withGet(_backend().empty(shape, dtype))


def full(shape: Any, value: float, dtype: Any = np.float32) -> Any:
    return withGet(_backend().full(shape, value, dtype))


def dtypesSupported() -> list[tuple[np.dtype, float]]:
    """PuzzleLib's list of ``(dtype, atol)`` pairs: each parameter dtype the current backend's kernels accept,
    with the absolute tolerance a test of that dtype uses (float16 1e-2, float32 1e-5, float64 1e-8)."""
    return [(dtype, ATOL[dtype]) for dtype in _backend().dtypesSupported]
