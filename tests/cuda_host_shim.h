// CUDA built-ins for executing a CUDA C++ kernel source on the CPU (tests/cuda_host.py).
//
// A launch runs the CUDA blocks one after another. Kernels without __syncthreads run their threads one
// after another as plain calls; kernels with it run each thread as a fiber (ucontext) that yields at
// __syncthreads, and the block's fibers are resumed round by round until all have finished. Any order of
// threads between two barriers is a legal CUDA schedule, so a race-free kernel gives its GPU result up to
// floating-point contraction (none here) and flush-to-zero of float32 subnormals (CuPy's -ftz=true).
// __shared__ variables are function statics: one copy, reused by the blocks in turn, as on the GPU.
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
using std::sqrt;

struct HostDim3 { unsigned int x, y, z; };
static HostDim3 threadIdx, blockIdx, blockDim, gridDim;

namespace host_cuda {
const std::size_t STACK = 1 << 16;
static ucontext_t scheduler;
static std::vector<ucontext_t> fibers;
static std::vector<char> stacks;
static std::vector<int> status;  // per thread: 0 runnable, 1 waiting at __syncthreads, 2 finished
static unsigned current;
static bool useFibers;
static bool badBarrier;  // a thread reached __syncthreads outside a fiber, or only part of a block did
static std::function<void()> body;

static void entry() {
    body();
    status[current] = 2;  // returning switches to uc_link, the scheduler
}

// Run `kernel` over a grid of `grid` blocks of `block` threads; 0 on success, 1 on a barrier error.
static int run(unsigned grid, unsigned block, bool withFibers, std::function<void()> kernel) {
    body = std::move(kernel);
    useFibers = withFibers;
    badBarrier = false;
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    if (withFibers) {
        fibers.resize(block);
        stacks.resize(block * STACK);
        status.assign(block, 0);
    }
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        if (!withFibers) {
            for (unsigned t = 0; t < block; ++t) {
                threadIdx = {t, 0, 0};
                body();
                if (badBarrier) return 1;
            }
            continue;
        }
        for (unsigned t = 0; t < block; ++t) {
            getcontext(&fibers[t]);
            fibers[t].uc_stack.ss_sp = &stacks[t * STACK];
            fibers[t].uc_stack.ss_size = STACK;
            fibers[t].uc_link = &scheduler;
            makecontext(&fibers[t], entry, 0);
            status[t] = 0;
        }
        for (;;) {
            unsigned finished = 0;
            for (unsigned t = 0; t < block; ++t) {
                if (status[t] == 2) { ++finished; continue; }
                status[t] = 0;
                current = t;
                threadIdx = {t, 0, 0};
                swapcontext(&scheduler, &fibers[t]);
                finished += status[t] == 2;
            }
            if (finished == block) break;
            if (finished) return 1;  // some threads left the kernel while others wait at a barrier
        }
    }
    return 0;
}

template <typename... A, std::size_t... I>
static void invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_cv<A>::type*>(args[I])...);
}

// The kernel's parameter types, one code each: 'p' pointer, 'f' floating point, 'i' integer, then the size.
template <typename... A>
static int signature(void (*)(A...), char* kinds, int* sizes) {
    const char k[] = {(std::is_pointer<A>::value ? 'p' : std::is_floating_point<A>::value ? 'f' : 'i')..., 0};
    const int n[] = {(int)sizeof(A)..., 0};
    for (std::size_t i = 0; i < sizeof...(A); ++i) { kinds[i] = k[i]; sizes[i] = n[i]; }
    return (int)sizeof...(A);
}

// The kernel called with the arguments that args[i] point to (cuLaunchKernel's convention).
template <typename... A>
static std::function<void()> bind(void (*kernel)(A...), void** args) {
    return [=] { invoke(kernel, args, std::index_sequence_for<A...>{}); };
}
}  // namespace host_cuda

inline void __syncthreads() {
    if (!host_cuda::useFibers) {
        host_cuda::badBarrier = true;
        return;
    }
    host_cuda::status[host_cuda::current] = 1;
    swapcontext(&host_cuda::fibers[host_cuda::current], &host_cuda::scheduler);
}

// Block-wide OR of a predicate (three barriers: everyone has added, everyone has read, the sum is reset).
inline int __syncthreads_or(int predicate) {
    static int any;
    if (predicate) any = 1;
    __syncthreads();
    const int result = any;
    __syncthreads();
    if (threadIdx.x == 0) any = 0;
    __syncthreads();
    return result;
}

inline float __uint_as_float(unsigned int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned int __float_as_uint(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
using std::isfinite;
using std::isinf;
