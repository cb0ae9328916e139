"""The CuPy backend's CUDA kernels without a GPU: compile them with NVRTC, execute them on the CPU.

* :func:`nvrtc_compile` compiles a source with NVRTC from its pip wheel (``nvidia-cuda-nvrtc-cu12``, the
  ``cuda-compile-test`` extra) through ctypes, with the options CuPy uses.
* :func:`host_cupy` is a stand-in for the ``cupy`` module: NumPy arrays, and a ``RawModule`` that compiles the
  same source with the system C++ compiler after ``cuda_host_shim.h`` (the CUDA built-ins) and launches its
  kernels on the CPU through ctypes. ``CupyBackend(cupy=host_cupy())`` is then the real CuPy backend, Python
  and kernels, running on the host.
"""
from __future__ import annotations

import atexit
import ctypes
import hashlib
import importlib.util
import re
import shutil
import subprocess
import tempfile
import types
from pathlib import Path
from typing import Optional

import numpy as np

from puzzle_rms.backends import cupy_backend

SHIM = Path(__file__).with_name("cuda_host_shim.h")
SYNCING = {"block_sumsq", "segment_sums", "rmsprop_compressed"}  # kernels that call __syncthreads: run as fibers
_SCALARS = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
            np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
            np.dtype(np.uint32): ctypes.c_uint32}
_BUILD = Path(tempfile.mkdtemp(prefix="puzzle_rms_cuda_host_"))
atexit.register(shutil.rmtree, _BUILD, True)
_LIBRARIES: dict[str, ctypes.CDLL] = {}


# --- NVRTC ----------------------------------------------------------------------------------------
def nvrtc_path() -> tuple[Optional[Path], str]:
    """The NVRTC library of the ``nvidia-cuda-nvrtc-cu12`` wheel, or None and why not."""
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.cuda_nvrtc") is None:
        return None, "the NVRTC wheel is not installed (pip install -e '.[cuda-compile-test]')"
    for folder in importlib.util.find_spec("nvidia.cuda_nvrtc").submodule_search_locations:
        path = Path(folder) / "lib" / "libnvrtc.so.12"
        if path.exists():
            return path, ""
    return None, "the nvidia-cuda-nvrtc-cu12 wheel has no lib/libnvrtc.so.12"


def nvrtc_compile(source: str, options: tuple[str, ...]) -> tuple[int, str, bytes]:
    """Compile ``source`` with NVRTC; returns (NVRTC result code, the compile log, PTX or b"" on failure)."""
    path, reason = nvrtc_path()
    if path is None:
        raise RuntimeError(reason)
    lib = ctypes.CDLL(str(path))
    program = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernels.cu", 0, None, None)
    if status:
        raise RuntimeError(f"nvrtcCreateProgram returned {status}")
    try:
        encoded = [option.encode() for option in options]
        result = lib.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        ptx = b""
        if result == 0:
            lib.nvrtcGetPTXSize(program, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(program, buffer)
            ptx = buffer.value
        return result, log.value.decode(errors="replace"), ptx
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


# --- host execution -------------------------------------------------------------------------------
def host_compiler() -> Optional[str]:
    """The C++ compiler that builds the host kernels, or None."""
    return shutil.which("g++") or shutil.which("c++")


def _library(source: str) -> ctypes.CDLL:
    """``source`` after the shim, built into a shared library with a ``launch`` entry (cached per source)."""
    kernels = re.findall(r'extern "C" __global__ void (\w+)\(', source)  # the backend's KERNELS, or others
    table = "\n".join(f'    if (!std::strcmp(name, "{k}")) return host_cuda::run(grid, block, fibers, '
                      f'host_cuda::bind({k}, args));' for k in kernels)
    signatures = "\n".join(f'    if (!std::strcmp(name, "{k}")) return host_cuda::signature({k}, kinds, sizes);'
                           for k in kernels)
    code = (f'#include "{SHIM}"\n{source}\n'
            'extern "C" int launch(const char* name, unsigned grid, unsigned block, int fibers, void** args) {\n'
            f'{table}\n    return -1;\n}}\n'
            'extern "C" int signature(const char* name, char* kinds, int* sizes) {\n'
            f'{signatures}\n    return -1;\n}}\n')
    key = hashlib.sha256((code + SHIM.read_text()).encode()).hexdigest()[:16]
    if key not in _LIBRARIES:
        src, lib = _BUILD / f"{key}.cpp", _BUILD / f"{key}.so"
        src.write_text(code)
        subprocess.run([host_compiler(), "-std=c++17", "-O1", "-ffp-contract=off", "-fPIC", "-shared",
                        str(src), "-o", str(lib)], check=True, capture_output=True, text=True)
        _LIBRARIES[key] = ctypes.CDLL(str(lib))
    return _LIBRARIES[key]


class HostFunction:
    """One kernel of a host-built module, called as CuPy calls a RawKernel: ``f(grid, block, args)``."""

    def __init__(self, library: ctypes.CDLL, name: str) -> None:
        self.library, self.name = library, name
        kinds, sizes = ctypes.create_string_buffer(64), (ctypes.c_int * 64)()
        count = library.signature(name.encode(), kinds, sizes)
        if count < 0:
            raise ValueError(f"no kernel named {name!r}")
        self.parameters = [(kinds.raw[i:i + 1].decode(), sizes[i]) for i in range(count)]

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        if len(grid) != 1 or len(block) != 1 or block[0] != cupy_backend.THREADS:
            raise ValueError(f"{self.name}: expected a 1-D grid of THREADS-thread blocks, got {grid}, {block}")
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name}: {len(args)} arguments for {len(self.parameters)} parameters")
        values = []
        for i, (arg, (kind, size)) in enumerate(zip(args, self.parameters)):
            # CuPy packs each argument by its own type: it must be the parameter's kind and size exactly
            if isinstance(arg, np.ndarray) and kind == "p":
                if not arg.flags.c_contiguous:
                    raise ValueError(f"{self.name}: argument {i} is not C-contiguous")
                values.append(ctypes.c_void_p(arg.ctypes.data))
            elif (isinstance(arg, np.generic) and arg.dtype in _SCALARS and arg.dtype.itemsize == size
                  and {"u": "i"}.get(arg.dtype.kind, arg.dtype.kind) == kind):
                values.append(_SCALARS[arg.dtype](arg.item()))
            else:
                raise TypeError(f"{self.name}: argument {i} is {type(arg).__name__} "
                                f"{getattr(arg, 'dtype', '')}, the parameter is {kind}{size} (p pointer, "
                                f"f floating point, i integer; bytes)")
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        status = self.library.launch(self.name.encode(), int(grid[0]), int(block[0]), int(self.name in SYNCING),
                                     pointers)
        if status:
            raise RuntimeError(f"{self.name}: host launch failed ({'unknown kernel' if status < 0 else 'barrier'})")


class HostRawModule:
    """``cupy.RawModule(code=..., options=...)`` built for the CPU; records the sources it was given."""

    sources: list[str] = []

    def __init__(self, code: str, options: tuple = ()) -> None:
        HostRawModule.sources.append(code)
        self.library = _library(code)

    def get_function(self, name: str) -> HostFunction:
        return HostFunction(self.library, name)


def host_cupy(multiprocessors: int = 2, threadsPerMultiprocessor: int = 2048) -> types.ModuleType:
    """A stand-in for the ``cupy`` module: NumPy arrays on the host, kernels built by :class:`HostRawModule`."""
    module = types.ModuleType("host_cupy")
    module.__dict__.update({name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
    module.asnumpy = lambda array: np.array(array, copy=True)
    module.RawModule = HostRawModule
    attributes = {"MultiProcessorCount": multiprocessors, "MaxThreadsPerMultiProcessor": threadsPerMultiprocessor}
    device = types.SimpleNamespace(attributes=attributes, use=lambda: None)
    module.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: 0, getDeviceCount=lambda: 1),
        Device=lambda index=0: device,
        get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))
    return module


# --- the stand-in as the registry's "cupy" backend (PUZZLE_RMS_TEST_CUPY_ON_HOST=1, tests/conftest.py) -------
def probe() -> Optional[str]:
    """The registry's probe for the stand-in: usable wherever a C++ compiler is."""
    return None if host_compiler() is not None else "no C++ compiler (g++ or c++) to build the kernels for the CPU"


def create() -> cupy_backend.CupyBackend:
    return cupy_backend.CupyBackend(cupy=host_cupy())


def install_host_cupy() -> None:
    """Make the registry's "cupy" backend the CuPy backend over :func:`host_cupy` in this process (tests only)."""
    from puzzle_rms import backends

    backends._MODULES["cupy"] = __name__
