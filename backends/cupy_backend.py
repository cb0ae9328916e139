"""CuPy backend: device arrays and one RawKernel launch per step.

Each layout block (at most ``blockElems`` elements of one segment) is walked by
a group of ``lanes`` threads with a stride loop, so neighbouring threads touch
neighbouring elements (coalesced). ``lanes`` is ``THREADS`` for dense layouts
and the smallest power of two covering the longest block otherwise, so one
CUDA block packs several short blocks (the rows of a lazy update). Dense
layouts get blocks small enough that a buffer fills at least one wave of the
device's multiprocessors (:meth:`CupyBackend.block_elems`).

Hyperparameters travel as kernel arguments, not as a device array, so a step
needs no host-to-device copy unless the per-segment table changed. float16
parameters are converted with the PTX ``cvt`` instructions and computed in
float32; where a block's float16 weights and gradients are 4-byte aligned (the
buckets start float16 segments at even offsets), each thread loads and stores
neighbouring pairs as one 32-bit word (half2).

Sums of squares (the non-finite check and norm clipping) are reduced on the
device in a fixed order with no atomics: one partial per layout block, then
one tree per segment over its blocks' partials. The same layout on the same
kind of GPU gives the same bits in every run and on every rank; all the
buckets' sums of one step come to the host in one copy
(:meth:`CupyBackend.segment_sumsq_many`); the buffer of block partials is the calling
thread's own (optimizers may step concurrently from several threads).

CuPy compiles every kernel with ``-ftz=true`` (appended after the caller's
options), so float32 arithmetic on the GPU flushes subnormal values (below
1.2e-38 in magnitude) to zero; the CPU backends and float64 keep them. The
difference only shows for gradients or mean squares below that range.

:func:`kernel_source` returns the exact CUDA source of one dtype combination
without importing CuPy; ``tests/test_cuda_kernels_on_host.py`` compiles it with
NVRTC and executes it on the CPU.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .backend import HYPER_FIELDS, HYPER_INDEX, Backend, Layout

THREADS = 256  # threads per CUDA block; the source's shared arrays are sized from it
MIN_BLOCK = 2 * THREADS  # smallest dense layout block: two elements (one half2 pair) per thread
KERNELS = ("rmsprop", "sgd", "block_sumsq", "segment_sums")
COMPILE_OPTIONS = ("--std=c++14",)  # CuPy adds the architecture and -ftz=true

_CUPY_HINT = ("pip install 'cupy-cuda12x[ctk]' (CUDA 12) or 'cupy-cuda13x[ctk]' (CUDA 13); from a puzzle_rms clone: "
              "pip install -e '.[cuda12]' or '.[cuda13]'")
_NVRTC_HINT = ("CuPy 14 ships NVRTC only with its [ctk] extra: pip install 'cupy-cuda12x[ctk]' (or the wheel "
               "nvidia-cuda-nvrtc-cu12; for CUDA 13 'cupy-cuda13x[ctk]' or nvidia-cuda-nvrtc), or install the "
               "CUDA toolkit")

_CTYPES = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

_SOURCE = r"""
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float load(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short half_bits(float x) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); return h;
}
#else
// host execution of this source (tests/test_cuda_kernels_on_host.py): the same conversions, by the C++ compiler
__device__ __forceinline__ float load(unsigned short h) { _Float16 x; __builtin_memcpy(&x, &h, 2); return (float)x; }
__device__ __forceinline__ unsigned short half_bits(float x) {
    const _Float16 y = (_Float16)x; unsigned short h; __builtin_memcpy(&h, &y, 2); return h;
}
#endif
__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ double load(double x) { return x; }
__device__ __forceinline__ void store(unsigned short* p, float x) { *p = half_bits(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(double* p, double x) { *p = x; }
template <typename X> __device__ __forceinline__ X clip(X x, X bound) { return x < -bound ? -bound : (x > bound ? bound : x); }

// The layout block this thread works on: blockDim.x / lanes of them per CUDA block, each walked by `lanes`
// threads (a power of two); returns its index (nblocks for the spare groups of the last CUDA block).
__device__ __forceinline__ long long block_of(long long nblocks, int lanes) {
    const long long b = (long long)blockIdx.x * (blockDim.x / lanes) + threadIdx.x / lanes;
    return b < nblocks ? b : nblocks;
}

// Sum of partial[t] over the `lanes` threads of this thread's group, in a fixed order; all threads must call it.
__device__ __forceinline__ double group_sum(double* partial, double value, int lanes) {
    const int lane = threadIdx.x % lanes;
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = lanes / 2; stride > 0; stride >>= 1) {
        if (lane < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    return partial[threadIdx.x - lane];
}

// The step of one element k (formula: backends/reference.py); reads and writes its state, returns the new weight.
struct Step {
    S* ms; S* mg; S* mom;
    S lr, wdPre, wdPost, wScale, gs, clipValue, rho, omr, epsIn, epsOut, mu, nesterov, c1, c2, c3, clipWeights;
    S bcMs, bcMg;
    int centered, momentum;

    __device__ __forceinline__ S operator()(S wi, S gi, long long k) const {
        const S zero = 0;
        wi = wi * wScale;
        if (wdPre != zero || wdPost != zero)  // without decay a NaN/inf weight must not reach the gradient
            gi = clip(gi * gs + wdPre * wi, clipValue) + wdPost * wi;
        else
            gi = clip(gi * gs, clipValue);
        const S m = rho * ms[k] + omr * gi * gi;
        ms[k] = m;
        S v = bcMs * m;
        if (centered) {
            const S a = rho * mg[k] + omr * gi;
            mg[k] = a;
            v = v - (bcMg * a) * (bcMg * a);
            v = v < zero ? zero : v;  // clamp at 0; a NaN stays NaN (a max() would turn it into 0)
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
    const long long* __restrict__ blocks, long long nblocks, int lanes, const S* __restrict__ seg,
    S gradScale, S clipValue, S wdPre, S wdPost, S rho, S omr, S epsIn, S epsOut,
    S mu, S /* lrInMomentum: in c1..c3 */, S nesterov, S clipWeights, S bcMs, S bcMg,
    S c1Lr, S c1Fixed, S c2Lr, S c2Fixed, S c3Lr, int centered, int momentum)
{
    const long long b = block_of(nblocks, lanes);
    if (b == nblocks) return;
    const int lane = threadIdx.x % lanes;
    const long long* blk = blocks + 4 * b;
    const long long w0 = blk[0], n = blk[1] - blk[0], s = blk[2], g0 = blk[3];
    const S lr = seg[4 * s], wd = seg[4 * s + 1];
    Step step;
    step.ms = ms; step.mg = mg; step.mom = mom;
    step.lr = lr; step.wdPre = wd * wdPre; step.wdPost = wd * wdPost; step.wScale = seg[4 * s + 2];
    step.gs = gradScale * seg[4 * s + 3]; step.clipValue = clipValue; step.rho = rho; step.omr = omr;
    step.epsIn = epsIn; step.epsOut = epsOut; step.mu = mu; step.nesterov = nesterov;
    step.c1 = c1Lr * lr + c1Fixed; step.c2 = c2Lr * lr + c2Fixed; step.c3 = c3Lr * lr;
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
        for (long long j = lane; j < pairs; j += lanes) {
            const unsigned int wp = w2[j], gp = g2[j];
            const long long k = w0 + 2 * j;
            const S lo = step((S)load((unsigned short)(wp & 0xffffu)), (S)load((unsigned short)(gp & 0xffffu)), k);
            const S hi = step((S)load((unsigned short)(wp >> 16)), (S)load((unsigned short)(gp >> 16)), k + 1);
            w2[j] = (unsigned int)half_bits((float)lo) | ((unsigned int)half_bits((float)hi) << 16);
        }
        first = pairs << 1;
    }
    for (long long i = first + lane; i < n; i += lanes)
        store(&wb[i], step((S)load(wb[i]), (S)load(gb[i]), w0 + i));
}

extern "C" __global__ void sgd(T* __restrict__ w, const G* __restrict__ g, S* __restrict__ mom,
                               const long long* __restrict__ blocks, long long nblocks, int lanes,
                               const S* __restrict__ seg, S gradScale, S mu, S nesterov, int momentum)
{
    const long long b = block_of(nblocks, lanes);
    if (b == nblocks) return;
    const long long* blk = blocks + 4 * b;
    const long long w0 = blk[0], n = blk[1] - blk[0], s = blk[2], g0 = blk[3];
    const S step = seg[4 * s] * seg[4 * s + 3] * gradScale, wScale = seg[4 * s + 2];
    const long long lane = threadIdx.x % lanes;
    if (momentum) {  // mom = mu * mom + u; w -= mom, or w -= mu * mom + u (nesterov)
        const S c = nesterov * mu + ((S)1 - nesterov);
        for (long long i = lane; i < n; i += lanes) {
            const S u = step * (S)load(g[g0 + i]);
            const S v = mu * mom[w0 + i] + u;
            mom[w0 + i] = v;
            store(&w[w0 + i], (S)load(w[w0 + i]) * wScale - (c * v + nesterov * u));
        }
    } else {
        for (long long i = lane; i < n; i += lanes)
            store(&w[w0 + i], (S)load(w[w0 + i]) * wScale - step * (S)load(g[g0 + i]));
    }
}

// out[b] = sum of squares of layout block b, in float64.
extern "C" __global__ void block_sumsq(const G* __restrict__ g, const long long* __restrict__ blocks,
                                       long long nblocks, int lanes, double* __restrict__ out)
{
    __shared__ double partial[THREADS];
    const long long b = block_of(nblocks, lanes);
    double acc = 0;
    if (b < nblocks) {
        const long long n = blocks[4 * b + 1] - blocks[4 * b], g0 = blocks[4 * b + 3];
        for (long long i = threadIdx.x % lanes; i < n; i += lanes) { const double x = (double)load(g[g0 + i]); acc += x * x; }
    }
    acc = group_sum(partial, acc, lanes);
    if (b < nblocks && threadIdx.x % lanes == 0) out[b] = acc;
}

// out[s] = sum of blockSums[first[s] .. first[s + 1] - 1], the partials of segment s's blocks (0 when it has none).
extern "C" __global__ void segment_sums(const double* __restrict__ blockSums, const long long* __restrict__ first,
                                        long long nsegments, int lanes, double* __restrict__ out)
{
    __shared__ double partial[THREADS];
    const long long s = block_of(nsegments, lanes);
    double acc = 0;
    if (s < nsegments)
        for (long long i = first[s] + threadIdx.x % lanes; i < first[s + 1]; i += lanes) acc += blockSums[i];
    acc = group_sum(partial, acc, lanes);
    if (s < nsegments && threadIdx.x % lanes == 0) out[s] = acc;
}
"""


def kernel_source(w: Any, g: Any, state: Any) -> str:
    """The CUDA source compiled for weight dtype ``w``, gradient dtype ``g`` and state dtype ``state``.

    A pure function (no CuPy needed): ``T``, ``G`` and ``S`` are typedefs of the three dtypes, ``THREADS`` the
    block size every launch uses. The kernels are named in :data:`KERNELS`.
    """
    types = [_CTYPES[np.dtype(t)] for t in (w, g, state)]
    return (f"#define THREADS {THREADS}\ntypedef {types[0]} T;\ntypedef {types[1]} G;\ntypedef {types[2]} S;\n"
            + _SOURCE)


def lanes_for(longest: int) -> int:
    """Threads per layout block: the smallest power of two >= ``longest``, at most THREADS (at least 1)."""
    return min(THREADS, 1 << max(0, int(longest) - 1).bit_length())


def probe() -> Optional[str]:
    """Why the CuPy backend cannot run here, or None; creates no CUDA context.

    The device count comes from ``cudaGetDeviceCount``, which initialises the driver but creates no context
    (so no memory on GPU 0 and no conflict with exclusive-process mode before ``useLocalDevice`` picks a
    device), and NVRTC is loaded to ask its version, since every kernel here is compiled at run time.
    """
    if importlib.util.find_spec("cupy") is None:
        return f"the package 'cupy' is not installed ({_CUPY_HINT})"
    try:
        import cupy
    except Exception as error:  # a broken install: missing CUDA libraries, wrong wheel for the CUDA major
        return f"CuPy is installed but does not import ({type(error).__name__}: {error}; {_CUPY_HINT})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver, or a driver older than CuPy's CUDA
        return f"CuPy found no usable CUDA driver ({type(error).__name__}: {error})"
    if count < 1:
        return "CuPy found no CUDA device"
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as error:  # libnvrtc not found: the CuPy wheel without its [ctk] extra
        return f"CuPy cannot load NVRTC, which compiles this backend's kernels ({type(error).__name__}: {error}); " \
               f"{_NVRTC_HINT}"
    return None


def create() -> "CupyBackend":
    return CupyBackend()


@dataclass(frozen=True)
class DeviceBlocks:
    """A layout's block table on the device, with what the launches over it need.

    ``table`` holds the rows ``(wStart, wStop, segment, gStart)``; the blocks of segment ``s`` are rows
    ``segFirst[s] .. segFirst[s + 1] - 1``. ``lanes`` threads walk each block, ``segLanes`` threads reduce
    each segment's block partials.
    """

    table: Any
    segFirst: Any
    nblocks: int
    numSegments: int
    lanes: int
    segLanes: int


class CupyBackend(Backend):
    """CuPy device arrays, CUDA kernels compiled by NVRTC on first use on each device (CuPy caches them on disk).

    Parameters
    ----------
    cupy : module, optional
        The CuPy module (imported when None); the host tests pass a stand-in that runs the kernels on the CPU.
    """

    name = "cupy"
    blockElems = 1 << 12  # the largest dense layout block
    nonFiniteChunk = 1 << 26  # the default finiteness check's windows: few launches, device temporaries are cheap

    def __init__(self, cupy: Any = None) -> None:
        if cupy is None:
            import cupy
        self.xp = cupy
        self._functions: dict[tuple, Any] = {}
        self._local = threading.local()  # the calling thread's buffers of per-block partial sums, per device
        self._waves: dict[int, int] = {}
        self._stateFunctions: dict[str, Any] = {}  # compressed-state kernels by their defines

    # --- the device -----------------------------------------------------------------------------
    def current_device(self) -> int:
        return int(self.xp.cuda.runtime.getDevice())

    def _wave(self) -> int:
        """CUDA blocks of THREADS threads resident at once on the current device (a full wave)."""
        device = self.current_device()
        if device not in self._waves:
            attributes = self.xp.cuda.Device(device).attributes
            self._waves[device] = (int(attributes["MultiProcessorCount"])
                                   * max(1, int(attributes["MaxThreadsPerMultiProcessor"]) // THREADS))
        return self._waves[device]

    def _function(self, name: str, w: Any, g: Any, state: Any) -> Any:
        """Kernel ``name`` compiled for these weight, gradient and state dtypes on the current device."""
        key = (self.current_device(), name, np.dtype(w), np.dtype(g), np.dtype(state))
        if key not in self._functions:
            module = self.xp.RawModule(code=kernel_source(*key[2:]), options=COMPILE_OPTIONS)
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

    # --- layouts --------------------------------------------------------------------------------
    def block_elems(self, total: int) -> int:
        """Elements per dense layout block: as many as give a buffer of ``total`` elements one full wave of
        the current device, rounded up to a multiple of MIN_BLOCK, within [MIN_BLOCK, blockElems]."""
        perBlock = -(-int(total) // self._wave())
        return int(min(self.blockElems, max(MIN_BLOCK, -(-perBlock // MIN_BLOCK) * MIN_BLOCK)))

    def layout_blocks(self, hostBlocks: np.ndarray, numSegments: int) -> DeviceBlocks:
        nblocks = int(hostBlocks.shape[0])
        segFirst = np.searchsorted(hostBlocks[:, 2], np.arange(numSegments + 1, dtype=np.int64))
        longest = int((hostBlocks[:, 1] - hostBlocks[:, 0]).max()) if nblocks else 1
        mostBlocks = int(np.diff(segFirst).max()) if numSegments else 1
        return DeviceBlocks(self.xp.asarray(np.ascontiguousarray(hostBlocks, dtype=np.int64)),
                            self.xp.asarray(segFirst.astype(np.int64)), nblocks, int(numSegments),
                            lanes_for(longest), lanes_for(mostBlocks))

    def seg_params(self, table: np.ndarray, dtype: Any) -> Any:
        state = np.float32 if np.dtype(dtype) == np.float16 else dtype
        return self.xp.asarray(np.ascontiguousarray(table, dtype=state))

    @staticmethod
    def _grid(count: int, lanes: int) -> tuple[int]:
        """CUDA blocks for ``count`` groups of ``lanes`` threads, THREADS // lanes groups per CUDA block."""
        return (-(-count // (THREADS // lanes)),)

    # --- kernels --------------------------------------------------------------------------------
    def rmsprop_update(self, w: Any, g: Any, ms: Any, mg: Optional[Any], mom: Optional[Any],
                       layout: Layout, segParams: Any, hyper: np.ndarray) -> None:
        blocks = layout.blocks
        if blocks.nblocks == 0:
            return
        state = np.dtype(ms.dtype).type
        kernel = self._function("rmsprop", w.dtype, g.dtype, ms.dtype)
        scalars = tuple(state(x) for x in hyper[:len(HYPER_FIELDS)])
        kernel(self._grid(blocks.nblocks, blocks.lanes), (THREADS,),
               (w, g, ms, ms if mg is None else mg, ms if mom is None else mom, blocks.table,
                np.int64(blocks.nblocks), np.int32(blocks.lanes), segParams) + scalars
               + (np.int32(mg is not None), np.int32(mom is not None)))

    def rmsprop_update_compressed(self, w: Any, g: Any, ms: Any, msScale: Optional[Any], mg: Optional[Any],
                                  mom: Optional[Any], layout: Layout, segParams: Any, hyper: np.ndarray,
                                  scaleStarts: Optional[Any], keys: np.ndarray) -> None:
        from . import cupy_state_kernels

        cupy_state_kernels.launch(self.xp, self._stateFunctions, w, g, ms, msScale, mg, mom, layout, segParams,
                                  hyper, scaleStarts, keys)

    def sgd_update(self, w: Any, g: Any, mom: Optional[Any], layout: Layout, segParams: Any,
                   hyper: np.ndarray) -> None:
        blocks = layout.blocks
        if blocks.nblocks == 0:
            return
        state = segParams.dtype.type
        kernel = self._function("sgd", w.dtype, g.dtype, segParams.dtype)
        kernel(self._grid(blocks.nblocks, blocks.lanes), (THREADS,),
               (w, g, segParams if mom is None else mom, blocks.table, np.int64(blocks.nblocks),
                np.int32(blocks.lanes), segParams, state(hyper[HYPER_INDEX["gradScale"]]),
                state(hyper[HYPER_INDEX["mu"]]), state(hyper[HYPER_INDEX["nesterov"]]), np.int32(mom is not None)))

    def segment_sumsq(self, g: Any, layout: Layout) -> np.ndarray:
        return self.segment_sumsq_many([(g, layout)])[0]

    def segment_sumsq_many(self, pairs: Sequence[tuple[Any, Layout]]) -> list[np.ndarray]:
        """Per pair, the block partials then the segment sums on the device, all in one device buffer that
        comes to the host in one copy (the step's only wait for the device)."""
        counts = [layout.numSegments for _, layout in pairs]
        total = int(sum(counts))
        if total == 0:
            return [np.zeros(0) for _ in pairs]
        out = self.xp.zeros(total, np.float64)
        start = 0
        for (g, layout), count in zip(pairs, counts):
            blocks = layout.blocks
            if blocks.nblocks:
                partial = self._partials(blocks.nblocks)
                state = np.float64 if g.dtype == np.float64 else np.float32
                self._function("block_sumsq", g.dtype, g.dtype, state)(
                    self._grid(blocks.nblocks, blocks.lanes), (THREADS,),
                    (g, blocks.table, np.int64(blocks.nblocks), np.int32(blocks.lanes), partial))
                self._function("segment_sums", g.dtype, g.dtype, state)(
                    self._grid(count, blocks.segLanes), (THREADS,),
                    (partial, blocks.segFirst, np.int64(count), np.int32(blocks.segLanes), out[start:start + count]))
            start += count
        host = self.xp.asnumpy(out)
        return np.split(host, np.cumsum(counts)[:-1])

    def _partials(self, nblocks: int) -> Any:
        """This thread's reused float64 buffer of at least ``nblocks`` elements on the current device
        (stream-ordered reuse)."""
        device = self.current_device()
        buffers = self._local.__dict__.setdefault("blockSums", {})
        buffer = buffers.get(device)
        if buffer is None or buffer.size < nblocks:
            buffer = buffers[device] = self.xp.empty(max(nblocks, 1024), np.float64)
        return buffer[:nblocks]
