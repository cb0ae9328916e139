"""CuPy backend: device arrays and one RawKernel launch per step.

Each CUDA block walks one layout block (``blockElems`` elements of one
segment) with a block-stride loop, so neighbouring threads touch neighbouring
elements (coalesced). Hyperparameters travel as kernel arguments, not as a
device array, so a step needs no host-to-device copy unless the per-segment
table changed. float16 parameters are converted with the PTX ``cvt``
instructions and computed in float32.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

import numpy as np

from backends.backend import HYPER_FIELDS, Backend, Layout

THREADS = 256

_INSTALL_HINT = ("pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13); from a puzzle_rms clone: "
                 "pip install -e '.[cuda12]' or '.[cuda13]'")

_CTYPES = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_SOURCE = r"""
__device__ __forceinline__ float load(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ double load(double x) { return x; }
__device__ __forceinline__ void store(unsigned short* p, float x) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); *p = h; }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(double* p, double x) { *p = x; }
template <typename X> __device__ __forceinline__ X clip(X x, X bound) { return x < -bound ? -bound : (x > bound ? bound : x); }

extern "C" __global__ void rmsprop(
    T* __restrict__ w, const G* __restrict__ g, S* __restrict__ ms, S* __restrict__ mg, S* __restrict__ mom,
    const long long* __restrict__ blocks, const S* __restrict__ seg,
    S gradScale, S clipValue, S wdPre, S wdPost, S rho, S omr, S epsIn, S epsOut,
    S mu, S lrIn, S nesterov, S clipWeights, S bcMs, S bcMg, int centered, int momentum)
{
    const long long* blk = blocks + 4 * (long long)blockIdx.x;
    const long long w0 = blk[0], n = blk[1] - blk[0], s = blk[2], g0 = blk[3];
    const S lr = seg[4 * s], wd = seg[4 * s + 1], wScale = seg[4 * s + 2], gs = gradScale * seg[4 * s + 3];
    const S one = 1, zero = 0;
    const S c1 = lrIn * lr + (one - lrIn);
    const S c2 = (nesterov * mu + (one - nesterov)) * (lrIn + (one - lrIn) * lr);
    const S c3 = nesterov * lr;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long k = w0 + i;
        S wi = (S)load(w[k]) * wScale;
        S gi = clip((S)load(g[g0 + i]) * gs + wd * wdPre * wi, clipValue) + wd * wdPost * wi;
        const S m = rho * ms[k] + omr * gi * gi;
        ms[k] = m;
        S v = bcMs * m;
        if (centered) {
            const S a = rho * mg[k] + omr * gi;
            mg[k] = a;
            v = v - (bcMg * a) * (bcMg * a);
            v = v > zero ? v : zero;
        }
        const S u = gi / (sqrt(v + epsIn) + epsOut);
        if (momentum) {
            const S mv = mu * mom[k] + c1 * u;
            mom[k] = mv;
            wi = wi - c2 * mv - c3 * u;
        } else {
            wi = wi - lr * u;
        }
        store(&w[k], clip(wi, clipWeights));
    }
}

extern "C" __global__ void sgd(T* __restrict__ w, const G* __restrict__ g, const long long* __restrict__ blocks,
                               const S* __restrict__ seg, S gradScale)
{
    const long long* blk = blocks + 4 * (long long)blockIdx.x;
    const long long w0 = blk[0], n = blk[1] - blk[0], s = blk[2], g0 = blk[3];
    const S step = seg[4 * s] * seg[4 * s + 3] * gradScale, wScale = seg[4 * s + 2];
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
        store(&w[w0 + i], (S)load(w[w0 + i]) * wScale - step * (S)load(g[g0 + i]));
}

extern "C" __global__ void block_sumsq(const G* __restrict__ g, const long long* __restrict__ blocks, double* out)
{
    __shared__ double partial[256];
    const long long* blk = blocks + 4 * (long long)blockIdx.x;
    const long long n = blk[1] - blk[0], g0 = blk[3];
    double acc = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) { const double x = (double)load(g[g0 + i]); acc += x * x; }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}
"""


def probe() -> Optional[str]:
    if importlib.util.find_spec("cupy") is None:
        return f"the package 'cupy' is not installed ({_INSTALL_HINT})"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
        cupy.zeros(1).sum().item()
    except Exception as error:  # any CUDA driver/runtime failure means the device is not usable
        return f"no usable CUDA device ({type(error).__name__}: {error})"
    return None


def create() -> "CupyBackend":
    return CupyBackend()


class CupyBackend(Backend):
    """CuPy device arrays, CUDA kernels compiled by NVRTC on first use (CuPy caches them on disk)."""

    name = "cupy"
    blockElems = 1 << 12

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        self._modules: dict[tuple[str, str, str], Any] = {}

    def _module(self, w: Any, g: Any, state: Any) -> Any:
        key = (_CTYPES[np.dtype(w.dtype)], _CTYPES[np.dtype(g.dtype)], _CTYPES[np.dtype(state)])
        if key not in self._modules:
            defines = f"typedef {key[0]} T;\ntypedef {key[1]} G;\ntypedef {key[2]} S;\n"
            self._modules[key] = self.xp.RawModule(code=defines + _SOURCE, options=("--std=c++14",))
        return self._modules[key]

    def to_host(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array) if isinstance(array, self.xp.ndarray) else np.asarray(array)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def layout_blocks(self, hostBlocks: np.ndarray) -> Any:
        return self.xp.asarray(np.ascontiguousarray(hostBlocks, dtype=np.int64))

    def seg_params(self, table: np.ndarray, dtype: Any) -> Any:
        state = np.float32 if np.dtype(dtype) == np.float16 else dtype
        return self.xp.asarray(np.ascontiguousarray(table, dtype=state))

    def rmsprop_update(self, w: Any, g: Any, ms: Any, mg: Optional[Any], mom: Optional[Any],
                       layout: Layout, segParams: Any, hyper: np.ndarray) -> None:
        nblocks = layout.hostBlocks.shape[0]
        if nblocks == 0:
            return
        state = np.dtype(ms.dtype).type
        kernel = self._module(w, g, ms.dtype).get_function("rmsprop")
        scalars = tuple(state(x) for x in hyper[:len(HYPER_FIELDS)])
        kernel((nblocks,), (THREADS,), (w, g, ms, ms if mg is None else mg, ms if mom is None else mom,
                                        layout.blocks, segParams) + scalars
               + (np.int32(mg is not None), np.int32(mom is not None)))

    def sgd_update(self, w: Any, g: Any, layout: Layout, segParams: Any, hyper: np.ndarray) -> None:
        nblocks = layout.hostBlocks.shape[0]
        if nblocks == 0:
            return
        state = segParams.dtype.type
        kernel = self._module(w, g, segParams.dtype).get_function("sgd")
        kernel((nblocks,), (THREADS,), (w, g, layout.blocks, segParams, state(hyper[0])))

    def segment_sumsq(self, g: Any, layout: Layout) -> np.ndarray:
        nblocks = layout.hostBlocks.shape[0]
        if nblocks == 0:
            return np.zeros(layout.numSegments)
        partial = self.xp.empty(nblocks, dtype=np.float64)
        state = np.float64 if g.dtype == np.float64 else np.float32
        self._module(g, g, state).get_function("block_sumsq")((nblocks,), (THREADS,), (g, layout.blocks, partial))
        sums = self.xp.bincount(layout.blocks[:, 2], weights=partial, minlength=layout.numSegments)
        return self.xp.asnumpy(sums)
