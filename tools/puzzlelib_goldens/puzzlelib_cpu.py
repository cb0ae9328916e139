"""Import real PuzzleLib on its CPU backend, with two gaps filled in memory.

Used by ``generate.py`` (run with the PuzzleLib virtual environment, never by the tests).

PuzzleLib's CPU ``Blas.mulMatrixOnMatrix`` asserts ``alpha == 1 and beta == 0``, while its CUDA
path computes ``out = alpha * op(A) @ op(B) + beta * out``. Containers call
``Linear.backward(..., momentum=1.0)`` so that parameter gradients accumulate, which trips the
assertion on the CPU backend. :func:`load` replaces the function, in the imported modules only,
by one that honours ``alpha`` and ``beta`` as the CUDA path does.

The CPU backend also leaves every cost kernel (cross entropy, BCE, SmoothL1, accuracy) and the
softmax unset. PuzzleLib's Intel backend has the cost kernels as C code compiled with gcc, but its
module imports oneDNN's softmax; :func:`load` puts a NumPy softmax in place of that import and wires
the kernels into the CPU backend as PuzzleLib's ``initIntel`` does. Nothing on disk is changed.

``PUZZLELIB_ROOT`` (default ``/work/ext``) is the folder that holds the ``PuzzleLib`` package and
the file ``PuzzleLib.commit`` (the commit it was exported from).
"""
import importlib
import os
import re
import sys
from types import ModuleType, SimpleNamespace

import numpy as np

CLASSES = [
    "PuzzleLib.Variable.Variable",
    *(f"PuzzleLib.Containers.{name}.{name}" for name in ("Sequential", "Graph", "Parallel")),
    *(f"PuzzleLib.Modules.{name}.{name}" for name in (
        "Linear", "Activation", "SoftMax", "Replicate", "Split", "Concat", "Reshape", "Flatten", "Identity",
        "Dropout", "Cast", "Add", "Sum")),
    *(f"PuzzleLib.Cost.{name}.{name}" for name in ("MSE", "CrossEntropy", "Abs", "BCE", "SmoothL1")),
    *(f"PuzzleLib.Optimizers.{name}.{name}" for name in (
        "SGD", "MomentumSGD", "NesterovSGD", "RMSProp", "RMSPropGraves")),
    "PuzzleLib.Optimizers.Hooks.WeightDecay",
]

SOFTMAX_NOTE = ("PuzzleLib's CPU backend has no cost kernels and no softmax: its own cost kernels from "
                "PuzzleLib.Intel.Kernels.Costs (C, compiled with gcc) were wired in, with a NumPy softmax over "
                "axis 1 standing in for oneDNN's softmaxNd/softmaxNdBackward (also used by the SoftMax module)")
BLAS_FIX = ("CPU Blas.mulMatrixOnMatrix replaced in memory by out = alpha*op(A)@op(B) + beta*out "
            "(PuzzleLib's CPU version asserts alpha == 1 and beta == 0; its CUDA path honours both)")


def root() -> str:
    """The folder that holds the ``PuzzleLib`` package."""
    return os.environ.get("PUZZLELIB_ROOT", "/work/ext")


def provenance() -> dict:
    """PuzzleLib's version (from its setup.py), commit, backend and the in-memory fix."""
    base = root()
    with open(os.path.join(base, "PuzzleLib", "setup.py"), encoding="utf-8") as stream:
        version = re.search(r'^version = "([^"]+)"', stream.read(), re.M).group(1)
    with open(os.path.join(base, "PuzzleLib.commit"), encoding="utf-8") as stream:
        commit = stream.read().strip()
    return {"repository": "https://github.com/puzzlelib/PuzzleLib", "version": version, "commit": commit,
            "backend": "cpu (numpy)", "numpy": np.__version__, "fixes": [BLAS_FIX, SOFTMAX_NOTE]}


def _gemm(A, B, out=None, transpA=False, transpB=False, alpha=1.0, beta=0.0):
    from PuzzleLib.CPU.CPUArray import CPUArray

    if transpA and transpB:
        raise ValueError("transpA and transpB together are not supported (as in PuzzleLib)")
    a = A.data.T if transpA else A.data
    b = B.data.T if transpB else B.data
    product = np.dot(a, b)
    if out is None:
        out = CPUArray.empty(product.shape, dtype=np.float32)
    if beta == 0.0:
        np.multiply(product, np.float32(alpha), out=out.data)
    else:
        out.data[...] = np.float32(alpha) * product + np.float32(beta) * out.data
    return out


def _softmax(data):
    """Softmax over axis 1 (DNNL's softmaxNd on a 4-D tensor), in NumPy."""
    from PuzzleLib.CPU.CPUArray import CPUArray

    x = data.get()
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return CPUArray.toDevice((e / e.sum(axis=1, keepdims=True)).astype(np.float32))


def _softmax_backward(outdata, grad):
    """dL/dx = y * (g - sum_c(g * y)) over axis 1, in NumPy (DNNL's softmaxNdBackward(outdata, grad))."""
    from PuzzleLib.CPU.CPUArray import CPUArray

    y, g = outdata.get(), grad.get()
    return CPUArray.toDevice((y * (g - (g * y).sum(axis=1, keepdims=True))).astype(np.float32))


def _wire_cost_kernels() -> None:
    """Give the CPU backend PuzzleLib's own cost kernels and a NumPy softmax (it ships neither).

    The kernels live in PuzzleLib.Intel.Kernels.Costs (C code PuzzleLib compiles with gcc); that module
    imports softmaxNd from the oneDNN wrapper, which is replaced by a NumPy stand-in module first.
    """
    stub = ModuleType("PuzzleLib.Intel.Wrappers.DNNL")
    stub.softmaxNd, stub.softmaxNdBackward = _softmax, _softmax_backward
    sys.modules[stub.__name__] = stub
    intel = importlib.import_module("PuzzleLib.Intel.Kernels.Costs")
    costs = importlib.import_module("PuzzleLib.Backend.Kernels.Costs")
    for name in ("bceKer", "hingeKer", "smoothL1Ker", "l1HingeKer", "getAccuracyKernel"):
        setattr(costs, name, getattr(intel, name))
    costs.crossEntropyKernel, costs.svmKernel = intel.crossEntropy, intel.svm
    dnn = importlib.import_module("PuzzleLib.Backend.Dnn")
    dnn.softmaxNd, dnn.softmaxNdBackward = _softmax, _softmax_backward


def load() -> SimpleNamespace:
    """Select PuzzleLib's CPU backend, apply the Blas fix, and return PuzzleLib's modules by name."""
    if root() not in sys.path:
        sys.path.insert(0, root())
    from PuzzleLib import Config

    Config.backend = Config.Backend.cpu
    Config.showWarnings = False
    from PuzzleLib.CPU.Wrappers import NumpyBlas

    NumpyBlas.mulMatrixOnMatrix = _gemm
    from PuzzleLib.Backend import Blas, gpuarray

    Blas.mulMatrixOnMatrix = _gemm
    _wire_cost_kernels()

    names = {}
    for path in CLASSES:
        package, _, name = path.rpartition(".")
        names[name] = getattr(importlib.import_module(package), name)
    return SimpleNamespace(Config=Config, gpuarray=gpuarray, activation=importlib.import_module(
        "PuzzleLib.Modules.Activation"), **names)
