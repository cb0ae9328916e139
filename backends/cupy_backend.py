"""CuPy backend: device arrays and one RawKernel launch per step.

Each CUDA block walks one layout block (``blockElems`` elements of one
segment) with a block-stride loop, so neighbouring threads touch neighbouring
elements (coalesced). Hyperparameters travel as kernel arguments, not as a
device array, so a step needs no host-to-device copy unless the per-segment
table changed. float16 parameters are converted with the PTX ``cvt``
instructions and computed in float32; where a block's float16 weights and
gradients are 4-byte aligned, each thread loads and stores neighbouring pairs
as one 32-bit word (half2). Each (kernel, dtypes) pair is compiled once per
process; the per-block partial sums of the norm pass reuse one buffer.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

import numpy as np

from .backend import HYPER_FIELDS, Backend, Layout

THREADS = 256

_INSTALL_HINT = ("pip install cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13); from a puzzle_rms clone: "
                 "pip install -e '.[cuda12]' or '.[cuda13]'")

_CTYPES = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_SOURCE = r"""
__device__ __forceinline__ float load(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ double load(double x) { return x; }
__device__ __forceinline__ unsigned short half_bits(float x) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); return h;
}
__device__ __forceinline__ void store(unsigned short* p, float x) { *p = half_bits(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(double* p, double x) { *p = x; }
template <typename X> __device__ __forceinline__ X clip(X x, X bound) { return x < -bound ? -bound : (x > bound ? bound : x); }

// The step of one element k (formula: backends/backend.py); reads and writes its state, returns the new weight.
struct Step {
    S* ms; S* mg; S* mom;
    S lr, wdPre, wdPost, wScale, gs, clipValue, rho, omr, epsIn, epsOut, mu, nesterov, c1, c2, c3, clipWeights;
    S bcMs, bcMg;
    int centered, momentum;

    __device__ __forceinline__ S operator()(S wi, S gi, long long k) const {
        const S zero = 0;
        wi = wi * wScale;
        gi = clip(gi * gs + wdPre * wi, clipValue) + wdPost * wi;
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
            wi = wi - c2 * mv;
            if (nesterov != zero) wi = wi - c3 * u;
        } else {
            wi = wi - lr * u;
        }
        return clip(wi, clipWeights);
    }
};

extern "C" __global__ void rmsprop(
    T* __restrict__ w, const G* __restrict__ g, S* __restrict__ ms, S* __restrict__ mg, S* __restrict__ mom,
    const long long* __restrict__ blocks, const S* __restrict__ seg,
    S gradScale, S clipValue, S wdPre, S wdPost, S rho, S omr, S epsIn, S epsOut,
    S mu, S lrIn, S nesterov, S clipWeights, S bcMs, S bcMg, int centered, int momentum)
{
    const long long* blk = blocks + 4 * (long long)blockIdx.x;
    const long long w0 = blk[0], n = blk[1] - blk[0], s = blk[2], g0 = blk[3];
    const S lr = seg[4 * s], wd = seg[4 * s + 1], one = 1;
    Step step;
    step.ms = ms; step.mg = mg; step.mom = mom;
    step.lr = lr; step.wdPre = wd * wdPre; step.wdPost = wd * wdPost; step.wScale = seg[4 * s + 2];
    step.gs = gradScale * seg[4 * s + 3]; step.clipValue = clipValue; step.rho = rho; step.omr = omr;
    step.epsIn = epsIn; step.epsOut = epsOut; step.mu = mu; step.nesterov = nesterov;
    step.c1 = lrIn * lr + (one - lrIn);
    step.c2 = (nesterov * mu + (one - nesterov)) * (lrIn + (one - lrIn) * lr);
    step.c3 = nesterov * lr;
    step.clipWeights = clipWeights; step.bcMs = bcMs; step.bcMg = bcMg;
    step.centered = centered; step.momentum = momentum;
    T* wb = w + w0;
    const G* gb = g + g0;
    long long first = 0;  // first element left to the one-by-one loop
    if (sizeof(T) == 2 && sizeof(G) == 2 && ((reinterpret_cast<size_t>(wb) | reinterpret_cast<size_t>(gb)) & 3) == 0) {
        // float16 weights and gradients, both 4-byte aligned in this block: a pair of neighbours per 32-bit
        // load and store (half2); the odd last element, if any, goes to the loop below
        unsigned int* w2 = reinterpret_cast<unsigned int*>(wb);
        const unsigned int* g2 = reinterpret_cast<const unsigned int*>(gb);
        const long long pairs = n >> 1;
        for (long long j = threadIdx.x; j < pairs; j += blockDim.x) {
            const unsigned int wp = w2[j], gp = g2[j];
            const long long k = w0 + 2 * j;
            const S lo = step((S)load((unsigned short)(wp & 0xffffu)), (S)load((unsigned short)(gp & 0xffffu)), k);
            const S hi = step((S)load((unsigned short)(wp >> 16)), (S)load((unsigned short)(gp >> 16)), k + 1);
            w2[j] = (unsigned int)half_bits((float)lo) | ((unsigned int)half_bits((float)hi) << 16);
        }
        first = pairs << 1;
    }
    for (long long i = first + threadIdx.x; i < n; i += blockDim.x)
        store(&wb[i], step((S)load(wb[i]), (S)load(gb[i]), w0 + i));
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
    nonFiniteChunk = 1 << 26  # the default finiteness check's windows: few launches, device temporaries are cheap

    def __init__(self) -> None:
        import cupy

        self.xp = cupy
        self._functions: dict[tuple[str, Any, Any, Any], Any] = {}
        self._blockSums = cupy.empty(0, np.float64)

    def _function(self, name: str, w: Any, g: Any, state: Any) -> Any:
        """Kernel ``name`` compiled for these weight, gradient and state dtypes (once per process)."""
        key = (name, w.dtype, g.dtype, np.dtype(state))
        if key not in self._functions:
            types = [_CTYPES[np.dtype(t)] for t in key[1:]]
            defines = f"typedef {types[0]} T;\ntypedef {types[1]} G;\ntypedef {types[2]} S;\n"
            module = self.xp.RawModule(code=defines + _SOURCE, options=("--std=c++14",))
            self._functions[key] = module.get_function(name)
        return self._functions[key]

    def to_host(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array) if isinstance(array, self.xp.ndarray) else np.asarray(array)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def use_local_device(self, localRank: int) -> Optional[int]:
        device = localRank % self.xp.cuda.runtime.getDeviceCount()
        self.xp.cuda.Device(device).use()
        return device

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
        kernel = self._function("rmsprop", w, g, ms.dtype)
        scalars = tuple(state(x) for x in hyper[:len(HYPER_FIELDS)])
        kernel((nblocks,), (THREADS,), (w, g, ms, ms if mg is None else mg, ms if mom is None else mom,
                                        layout.blocks, segParams) + scalars
               + (np.int32(mg is not None), np.int32(mom is not None)))

    def sgd_update(self, w: Any, g: Any, layout: Layout, segParams: Any, hyper: np.ndarray) -> None:
        nblocks = layout.hostBlocks.shape[0]
        if nblocks == 0:
            return
        state = segParams.dtype.type
        kernel = self._function("sgd", w, g, segParams.dtype)
        kernel((nblocks,), (THREADS,), (w, g, layout.blocks, segParams, state(hyper[0])))

    def segment_sumsq(self, g: Any, layout: Layout) -> np.ndarray:
        nblocks = layout.hostBlocks.shape[0]
        if nblocks == 0:
            return np.zeros(layout.numSegments)
        if self._blockSums.size < nblocks:
            self._blockSums = self.xp.empty(nblocks, np.float64)
        partial = self._blockSums[:nblocks]
        state = np.float64 if g.dtype == np.float64 else np.float32
        self._function("block_sumsq", g, g, state)((nblocks,), (THREADS,), (g, layout.blocks, partial))
        sums = self.xp.bincount(layout.blocks[:, 2], weights=partial, minlength=layout.numSegments)
        return self.xp.asnumpy(sums)
