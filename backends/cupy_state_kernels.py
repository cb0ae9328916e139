"""CUDA source and launch of the RMSProp step on compressed state (codes: :mod:`puzzle_rms.backends.reference`).

One CUDA block of 256 threads walks one layout block; each pass of its loop covers one quantization
block (256 elements, one per thread), so the 8-bit code's new scale is a block-wide maximum in
shared memory (a NaN found by ``__syncthreads_or``) and every thread then encodes its own element.
The module compiles with ``--fmad=false`` (and NVRTC's default exact division and square root), so
every float32 operation rounds once, in the order the NumPy and Numba kernels use: the codes come
out bit for bit as theirs on the same inputs.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .backend import HYPER_FIELDS, Layout
from .compressed_state import QUANT_BLOCK

OPTIONS = ("--std=c++14", "--fmad=false")
_CTYPES = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float"}

SOURCE = r"""
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float load(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ void store(unsigned short* p, float x) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x)); *p = h;
}
#else
// host execution of this source (tests/cuda_host.py): the same conversions, by the C++ compiler
__device__ __forceinline__ float load(unsigned short h) { _Float16 x; __builtin_memcpy(&x, &h, 2); return (float)x; }
__device__ __forceinline__ void store(unsigned short* p, float x) {
    const _Float16 y = (_Float16)x; __builtin_memcpy(p, &y, 2);
}
#endif
__device__ __forceinline__ float load(float x) { return x; }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ float clip(float x, float bound) { return x < -bound ? -bound : (x > bound ? bound : x); }

#define R255 0.0039215688593685627f  // float32(1/255): 255 * R255 == 1 exactly
__device__ __forceinline__ unsigned int mix32(unsigned int x) {
    x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16; return x;
}
__device__ __forceinline__ float bf16_decode(unsigned short u) { return __uint_as_float((unsigned int)u << 16); }
__device__ __forceinline__ unsigned short bf16_encode(float x, unsigned int bits) {
    const unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40u);
    return (unsigned short)((b + (bits >> 16)) >> 16);
}
__device__ __forceinline__ float q8_decode(unsigned char q, float scale) {
    const float lo = (float)q * R255;
    return scale * (lo * lo);
}
__device__ __forceinline__ unsigned char q8_code(float y, unsigned int bits) {
    y = y < 0.0f ? 0.0f : y;
    int q0 = (int)(sqrtf(y) * 255.0f);
    q0 = q0 < 254 ? q0 : 254;
    const float lo = (float)q0 * R255, hi = (float)(q0 + 1) * R255, a = lo * lo;
    const float u = (float)(bits >> 8) * 5.9604644775390625e-08f;  // 2**-24
    return (unsigned char)(u * (hi * hi - a) < y - a ? q0 + 1 : q0);
}

extern "C" __global__ void rmsprop_compressed(
    T* __restrict__ w, const G* __restrict__ g, M* __restrict__ ms, float* __restrict__ scales,
    unsigned short* __restrict__ mg, unsigned short* __restrict__ mom, const long long* __restrict__ blocks,
    const float* __restrict__ seg, const long long* __restrict__ scaleStarts,
    float gradScale, float cv, float wdPreH, float wdPostH, float rho, float omr, float epsIn, float epsOut,
    float mu, float /* lrInMomentum: in c1..c3 */, float nesterov, float cw, float bcMs, float bcMg,
    float c1Lr, float c1Fixed, float c2Lr, float c2Fixed, float c3Lr,
    unsigned int kMs, unsigned int kMg, unsigned int kMom, int centered, int momentum)
{
#if EIGHT
    __shared__ float top[256];
#endif
    const long long b = blockIdx.x;
    const long long w0 = blocks[4 * b], n = blocks[4 * b + 1] - w0, s = blocks[4 * b + 2], g0 = blocks[4 * b + 3];
    const float lr = seg[4 * s], wd = seg[4 * s + 1], wScale = seg[4 * s + 2], gs = gradScale * seg[4 * s + 3];
    const float wdPre = wd * wdPreH, wdPost = wd * wdPostH;
    const float c1 = c1Lr * lr + c1Fixed, c2 = c2Lr * lr + c2Fixed, c3 = c3Lr * lr;
    for (long long base = 0; base < n; base += 256) {   // one quantization block per pass (blockDim.x == 256)
        const long long i = base + threadIdx.x;
        const bool valid = i < n;
        const long long k = w0 + i;
        const unsigned int index = (unsigned int)k;
        float m = 0.0f;
        if (valid) {
            float wi = load(w[k]) * wScale;
            const float gi = clip(load(g[g0 + i]) * gs + wdPre * wi, cv) + wdPost * wi;
#if EIGHT
            m = rho * q8_decode(ms[k], scales[scaleStarts[b] + base / 256]) + omr * gi * gi;
#else
            m = rho * bf16_decode(ms[k]) + omr * gi * gi;
            ms[k] = bf16_encode(m, mix32(index ^ kMs));
#endif
            float v;
            if (centered) {
                const float a = rho * bf16_decode(mg[k]) + omr * gi;
                mg[k] = bf16_encode(a, mix32(index ^ kMg));
                v = bcMs * m - (bcMg * a) * (bcMg * a);
                v = v < 0.0f ? 0.0f : v;  // clamp at 0; a NaN stays NaN (a max() would turn it into 0)
            } else {
                v = bcMs * m;
            }
            const float u = gi / (sqrtf(v + epsIn) + epsOut);
            if (momentum) {
                const float mv = mu * bf16_decode(mom[k]) + c1 * u;
                mom[k] = bf16_encode(mv, mix32(index ^ kMom));
                wi = wi - c2 * mv;
                if (nesterov != 0.0f) wi = wi - c3 * u;
            } else {
                wi = wi - lr * u;
            }
            store(&w[k], clip(wi, cw));
        }
#if EIGHT
        // the new scale: the largest new mean square of this quantization block; NaN if one is NaN
        const int nan = __syncthreads_or(valid && m != m);
        top[threadIdx.x] = (valid && m == m) ? m : 0.0f;
        __syncthreads();
        for (int stride = 128; stride > 0; stride >>= 1) {
            if (threadIdx.x < stride) top[threadIdx.x] = fmaxf(top[threadIdx.x], top[threadIdx.x + stride]);
            __syncthreads();
        }
        const float scale = nan ? __int_as_float(0x7fc00000) : top[0];
        __syncthreads();   // every thread has read top[0] before the next pass writes it
        if (valid) {
            unsigned char q;
            if (!isfinite(scale)) q = 255;
            else if (scale == 0.0f) q = 0;
            else {
                const float inv = 1.0f / scale;  // a subnormal scale's reciprocal overflows: divide instead
                q = q8_code(isinf(inv) ? m / scale : m * inv, mix32(index ^ kMs));
            }
            ms[k] = q;
        }
        if (threadIdx.x == 0) scales[scaleStarts[b] + base / 256] = scale;
#endif
    }
}
"""


def defines(w: Any, g: Any, ms: Any) -> str:
    """The typedefs and the EIGHT switch that specialise :data:`SOURCE` for these arrays' dtypes."""
    eight = np.dtype(ms.dtype) == np.uint8
    return (f"typedef {_CTYPES[np.dtype(w.dtype)]} T;\ntypedef {_CTYPES[np.dtype(g.dtype)]} G;\n"
            f"typedef {'unsigned char' if eight else 'unsigned short'} M;\n#define EIGHT {int(eight)}\n")


def launch(cupy: Any, functions: dict, w: Any, g: Any, ms: Any, msScale: Optional[Any], mg: Optional[Any],
           mom: Optional[Any], layout: Layout, segParams: Any, hyper: np.ndarray, scaleStarts: Optional[Any],
           keys: np.ndarray) -> None:
    """Compile (once per dtypes, cached in ``functions``) and launch the kernel over ``layout``."""
    nblocks = layout.hostBlocks.shape[0]
    if nblocks == 0:
        return
    table = layout.blocks.table  # the block rows on the device (DeviceBlocks)
    code = defines(w, g, ms)
    if code not in functions:
        functions[code] = cupy.RawModule(code=code + SOURCE, options=OPTIONS).get_function("rmsprop_compressed")
    none16 = cupy.zeros(1, np.uint16)
    scalars = tuple(np.float32(x) for x in hyper[:len(HYPER_FIELDS)])
    functions[code]((nblocks,), (QUANT_BLOCK,), (
        w, g, ms, cupy.zeros(1, np.float32) if msScale is None else msScale, none16 if mg is None else mg,
        none16 if mom is None else mom, table, segParams, table if scaleStarts is None else scaleStarts) + scalars
        + tuple(np.uint32(k) for k in keys) + (np.int32(mg is not None), np.int32(mom is not None)))
