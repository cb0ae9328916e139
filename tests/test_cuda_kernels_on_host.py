"""The CuPy backend's CUDA kernels, checked without a GPU (tests/cuda_host.py).

1. The exact source :func:`kernel_source` gives for every dtype combination compiles with NVRTC (the pip
   wheel of the ``cuda-compile-test`` extra) for sm_80, sm_90 and sm_100 without a single warning, and the
   RMSProp kernel's PTX has no float max/min instruction (those drop NaN).
2. The same source, built for the CPU by the system C++ compiler with a shim of the CUDA built-ins, runs
   under the real ``CupyBackend`` Python code and gives the NumPy backend's numbers for every kernel
   variant and dtype combination, on odd lengths, many small segments, unaligned and padded offsets, short
   rows packed several to a CUDA block, several blocks per segment, and NaN/inf gradients.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from cuda_host import HostRawModule, host_compiler, host_cupy, nvrtc_compile, nvrtc_path
from puzzle_rms.backends import cupy_backend
from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.backends.cupy_backend import CupyBackend, kernel_source
from puzzle_rms.backends.numpy_backend import NumpyBackend

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
# (weights, gradients, state): float16 parameters, float32 master weights of float16 ones, float32, float64
COMBOS = [(F16, F16, F32), (F32, F16, F32), (F32, F32, F32), (F64, F64, F64)]
COMBO_IDS = ["f16", "f32-master", "f32", "f64"]
ARCHES = ("sm_80", "sm_90", "sm_100")
STEPS = 3

needs_nvrtc = pytest.mark.skipif(nvrtc_path()[0] is None, reason=f"no NVRTC: {nvrtc_path()[1]}")
needs_cxx = pytest.mark.skipif(host_compiler() is None, reason="no C++ compiler (g++ or c++) to build the kernels "
                                                               "for the CPU")

# name -> (hyper_vector fields, centered, momentum, per-segment columns varied, initial mean square)
VARIANTS = {
    "plain": ({}, False, False, False, 0.0),
    "eps-inside": ({"epsIn": 1e-3, "epsOut": 0.0}, False, False, False, 0.0),
    "centered": ({}, True, False, False, 0.0),
    "centered-eps-inside": ({"epsIn": 1e-4, "epsOut": 0.0}, True, False, False, 0.0),
    "momentum-lr-inside": ({"mu": 0.9}, False, True, False, 0.0),
    "momentum-lr-outside": ({"mu": 0.9, "lrInMomentum": 0.0}, False, True, False, 0.0),
    "nesterov": ({"mu": 0.8, "nesterov": 1.0}, False, True, False, 0.0),
    "centered-nesterov": ({"mu": 0.7, "nesterov": 1.0, "lrInMomentum": 0.0}, True, True, False, 0.0),
    "clip-value": ({"clipValue": 0.5}, False, False, False, 0.0),
    "clip-weights": ({"clipWeights": 0.3}, False, True, False, 0.0),
    "wd-before-clip": ({"clipValue": 0.7, "wdPre": 1.0, "wdPost": 0.0}, False, False, True, 0.0),
    "wd-after-clip": ({"clipValue": 0.7}, True, False, True, 0.0),
    "decoupled-decay": ({}, False, True, True, 0.0),
    "bias-correction": ({"bcMs": 1.9, "bcMg": 1.9}, True, True, False, 0.0),
    "loss-scale-clip-factors": ({"gradScale": 1.0 / 1024}, False, False, True, 0.0),
    "maximize": ({"gradScale": -1.0, "mu": 0.5}, True, True, True, 0.0),
    "initial-mean-square": ({"rho": 0.5, "oneMinusRho": 0.5}, True, True, False, 1.0),
}


def _layouts(rng: np.random.Generator) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """name -> (sizes, wOffsets, gOffsets) of the segments a kernel call walks."""
    def packed(sizes, gap=lambda: 0, align=1):
        offsets, at = [], 0
        for size in sizes:
            at += gap()
            at = -(-at // align) * align
            offsets.append(at)
            at += size
        return sizes, offsets, offsets

    many = rng.integers(1, 10, 300).tolist()
    rows = rng.choice(200, 60, replace=False)
    rowSizes = [8] * 40 + [3] * 20
    rowW = [int(r) * 8 for r in rows[:40]] + [2000 + int(r) * 3 for r in rows[40:]]
    return {
        "odd-lengths": packed([1, 7, 1023, 3001, 2, 0, 5]),
        "many-small": packed(many),
        "unaligned-gaps": packed([33, 1, 517, 64, 9], gap=lambda: int(rng.integers(1, 4))),
        "even-starts": packed([33, 1, 517, 64, 9], align=2),
        "rows": (rowSizes, rowW, list(np.cumsum(rowSizes) - rowSizes)),
    }


def _problem(rng, layout, dtypes, variant, special):
    """Random weights, gradients (with NaN/inf when ``special``), state and a segment table for one layout."""
    sizes, wOffsets, gOffsets = layout
    (wdt, gdt, sdt), (fields, centered, momentum, perSegment, ms0) = dtypes, VARIANTS[variant]
    nw = max(o + s for o, s in zip(wOffsets, sizes)) + 3
    ng = max(o + s for o, s in zip(gOffsets, sizes)) + 3
    w = rng.standard_normal(nw).astype(wdt)
    grads = [(rng.standard_normal(ng) * 2).astype(gdt) for _ in range(STEPS)]
    if special:
        for step, g in enumerate(grads):
            picks = rng.choice(ng, 6, replace=False)
            g[picks[:2]], g[picks[2:4]], g[picks[4]], g[picks[5]] = np.nan, np.inf, -np.inf, 0
    state = {"ms": (ms0 + rng.random(nw)).astype(sdt)}
    if centered:
        state["mg"] = (0.1 * rng.standard_normal(nw)).astype(sdt)
    if momentum:
        state["mom"] = (0.1 * rng.standard_normal(nw)).astype(sdt)
    table = np.tile([[0.01, 0.0, 1.0, 1.0]], (len(sizes), 1))
    if perSegment:
        table[:, 0] = rng.choice([0.0, 0.003, 0.01, 0.05], len(sizes))
        table[:, 1] = rng.choice([0.0, 0.01, 0.1], len(sizes))
        table[:, 2] = 1.0 - rng.choice([0.0, 1e-3, 1e-2], len(sizes))
        table[:, 3] = rng.choice([1.0, 0.5, 0.25], len(sizes))
    return w, grads, state, table, hyper_vector(**fields)


def _run(backend, layout, w, grads, state, table, hyper):
    """STEPS RMSProp steps on copies of the inputs; returns the weights and the state."""
    w = w.copy()
    state = {name: buf.copy() for name, buf in state.items()}
    lay = backend.make_layout(*layout)
    segParams = backend.seg_params(table, state["ms"].dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf gradients are part of the test
        for g in grads:
            backend.rmsprop_update(w, g, state["ms"], state.get("mg"), state.get("mom"), lay, segParams, hyper)
    return w, state


def _tolerance(dtype):
    return {F16: dict(rtol=2e-3, atol=2e-3), F32: dict(rtol=2e-6, atol=1e-6), F64: dict(rtol=1e-13, atol=1e-14)}[
        np.dtype(dtype)]


def _compare(got, want, what):
    w, state = got
    np.testing.assert_allclose(w, want[0], **_tolerance(w.dtype), err_msg=f"{what}: weights")
    for name in want[1]:
        np.testing.assert_allclose(state[name], want[1][name], **_tolerance(state[name].dtype),
                                   err_msg=f"{what}: {name}")


@pytest.fixture(scope="module")
def host() -> CupyBackend:
    """The CuPy backend over the host stand-in: 2 multiprocessors, so a few thousand elements fill a wave."""
    if host_compiler() is None:
        pytest.skip("no C++ compiler (g++ or c++) to build the kernels for the CPU")
    return CupyBackend(cupy=host_cupy(multiprocessors=2))


# --- NVRTC --------------------------------------------------------------------------------------
@needs_nvrtc
@pytest.mark.parametrize("dtypes", COMBOS, ids=COMBO_IDS)
def test_every_kernel_source_compiles_with_nvrtc_without_warnings(dtypes):
    source = kernel_source(*dtypes)
    for arch in ARCHES:
        result, log, ptx = nvrtc_compile(source, cupy_backend.COMPILE_OPTIONS + ("-ftz=true", f"-arch={arch}"))
        assert result == 0 and log.strip() == "", f"NVRTC for {arch}, dtypes {dtypes}: result {result}\n{log}"
        for kernel in cupy_backend.KERNELS:
            assert f".entry {kernel}(".encode() in ptx, f"{kernel} missing from the {arch} PTX"
        rmsprop = ptx.split(b".entry rmsprop(")[1].split(b".entry ")[0]
        assert not re.findall(rb"\b(?:max|min)\.(?:ftz\.)?f(?:32|64)\b", rmsprop), \
            f"the RMSProp kernel for {arch} uses a float max/min, which turns NaN into a number"


@needs_nvrtc
def test_nvrtc_check_sees_the_nan_eating_clamp():
    """The PTX check above is not vacuous: the old clamp `v > 0 ? v : 0` compiles to max.ftz.f32."""
    source = kernel_source(F32, F32, F32).replace("v = v < zero ? zero : v;", "v = v > zero ? v : zero;")
    result, log, ptx = nvrtc_compile(source, cupy_backend.COMPILE_OPTIONS + ("-ftz=true", "-arch=sm_90"))
    assert result == 0
    assert b"max.ftz.f32" in ptx.split(b".entry rmsprop(")[1].split(b".entry ")[0]


# --- execution on the CPU ---------------------------------------------------------------------------
@needs_cxx
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtypes", COMBOS, ids=COMBO_IDS)
def test_kernels_on_the_host_match_the_numpy_backend(host, dtypes, variant):
    rng = np.random.default_rng(list(VARIANTS).index(variant) * 10 + COMBOS.index(dtypes))
    numpy = NumpyBackend()
    for name, layout in _layouts(rng).items():
        for special in (False, True):
            w, grads, state, table, hyper = _problem(rng, layout, dtypes, variant, special)
            want = _run(numpy, layout, w, grads, state, table, hyper)
            got = _run(host, layout, w, grads, state, table, hyper)
            _compare(got, want, f"{variant}, {name}{', NaN/inf gradients' if special else ''}")


@needs_cxx
@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_sums_of_squares_on_the_host_match_the_numpy_backend(host, dtype):
    rng = np.random.default_rng(4)
    numpy = NumpyBackend()
    for name, layout in _layouts(rng).items():
        for special in (False, True):
            _, grads, *_ = _problem(rng, layout, (dtype, dtype, dtype), "plain", special)
            got = host.segment_sumsq(grads[0], host.make_layout(*layout))
            want = numpy.segment_sumsq(grads[0], numpy.make_layout(*layout))
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{name}{', NaN/inf' if special else ''}")


@needs_cxx
@pytest.mark.parametrize("momentum", [None, 0.0, 1.0], ids=["plain", "momentum", "nesterov"])
@pytest.mark.parametrize("dtypes", [(F16, F16, F32), (F32, F32, F32), (F64, F64, F64)], ids=["f16", "f32", "f64"])
def test_sgd_kernel_on_the_host_matches_the_numpy_backend(host, dtypes, momentum):
    rng = np.random.default_rng(5)
    numpy = NumpyBackend()
    hyper = hyper_vector(gradScale=0.5, mu=0.0 if momentum is None else 0.9, nesterov=momentum or 0.0)
    for name, layout in _layouts(rng).items():
        w, grads, _, table, _ = _problem(rng, layout, dtypes, "decoupled-decay", False)
        results = []
        for backend in (numpy, host):
            ww = w.copy()
            mom = None if momentum is None else np.zeros(w.shape, dtypes[2])
            lay, seg = backend.make_layout(*layout), backend.seg_params(table, dtypes[2])
            for g in grads:
                backend.sgd_update(ww, g, mom, lay, seg, hyper)
            results.append((ww, mom))
        np.testing.assert_allclose(results[1][0], results[0][0], **_tolerance(dtypes[0]), err_msg=name)
        if momentum is not None:
            np.testing.assert_allclose(results[1][1], results[0][1], **_tolerance(dtypes[2]), err_msg=name)


@needs_cxx
def test_short_blocks_are_packed_and_dense_blocks_fill_a_wave(host):
    rows = host.make_layout([8] * 100, np.arange(100) * 8, np.arange(100) * 8)
    assert rows.blocks.lanes == 8 and host._grid(100, rows.blocks.lanes) == (4,)  # 32 rows per CUDA block
    # 2 multiprocessors x 2048 / 256 = 16 CUDA blocks per wave: 100,000 elements -> blocks of 6,656 capped at 4,096;
    # 10,000 -> 1,024 (10 blocks); 100 -> one block of MIN_BLOCK
    assert host.block_elems(100_000) == 4096 and host.block_elems(10_000) == 1024 and host.block_elems(100) == 512
    assert host.make_layout([10_000]).blocks.nblocks == 10


@needs_cxx
def test_sums_of_squares_come_back_in_one_copy_and_do_not_depend_on_the_run(host, monkeypatch):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(n).astype(np.float32) for n in (5000, 37, 0)]
    layouts = [host.make_layout([n // 3, n - n // 3]) for n in (5000, 37, 0)]
    copies = []
    real = host.xp.asnumpy
    monkeypatch.setattr(host.xp, "asnumpy", lambda a: copies.append(a.size) or real(a))
    first = host.segment_sumsq_many(list(zip(grads, layouts)))
    again = host.segment_sumsq_many(list(zip(grads, layouts)))
    assert copies == [6, 6]
    for g, lay, a, b in zip(grads, layouts, first, again):
        assert a.tobytes() == b.tobytes()
        n = g.size // 3
        np.testing.assert_allclose(a, [np.sum(g[:n].astype(np.float64) ** 2), np.sum(g[n:].astype(np.float64) ** 2)],
                                   rtol=1e-12)


@needs_cxx
def test_the_host_run_catches_a_nan_eating_clamp(monkeypatch):
    """Bug 1 of issue 15: with the old clamp an inf gradient gave -inf weights where NumPy gives NaN."""
    old = cupy_backend._SOURCE.replace("v = v < zero ? zero : v;", "v = v > zero ? v : zero;")
    assert old != cupy_backend._SOURCE
    monkeypatch.setattr(cupy_backend, "_SOURCE", old)
    backend = CupyBackend(cupy=host_cupy())
    w = np.ones(4, np.float32)
    g = np.array([1.0, np.inf, 1.0, 1.0], np.float32)
    state = {"ms": np.zeros(4, np.float32), "mg": np.zeros(4, np.float32)}
    table = np.array([[0.01, 0.0, 1.0, 1.0]])
    got = _run(backend, ([4], [0], [0]), w, [g], state, table, hyper_vector())
    want = _run(NumpyBackend(), ([4], [0], [0]), w, [g], state, table, hyper_vector())
    assert np.isnan(want[0][1]) and got[0][1] == -np.inf
    with pytest.raises(AssertionError):
        _compare(got, want, "old clamp")


@needs_cxx
def test_the_backend_hands_cupy_the_exact_source_it_builds(host):
    HostRawModule.sources.clear()
    backend = CupyBackend(cupy=host_cupy())
    backend._function("rmsprop", F16, F16, F32)
    assert HostRawModule.sources == [kernel_source(F16, F16, F32)]
    assert "__shared__ double partial[THREADS]" in HostRawModule.sources[0]
    assert f"#define THREADS {cupy_backend.THREADS}" in HostRawModule.sources[0]


@needs_cxx
def test_a_launch_must_pass_each_argument_as_its_parameters_type(host):
    """CuPy packs arguments by their own types, so an int64 for an int parameter would shift the rest on the GPU."""
    kernel = host._function("sgd", F32, F32, F32)
    w, g, seg = np.zeros(4, np.float32), np.ones(4, np.float32), np.array([[0.1, 0, 1, 1]], np.float32)
    lay = host.make_layout([4])
    good = (w, g, seg, lay.blocks.table, np.int64(1), np.int32(lay.blocks.lanes), seg, np.float32(1), np.float32(0),
            np.float32(0), np.int32(0))
    kernel((1,), (cupy_backend.THREADS,), good)
    np.testing.assert_allclose(w, -0.1)
    for i, bad in [(4, np.int32(1)), (5, np.int64(4)), (7, np.float64(1)), (7, 1.0), (10, np.int64(0))]:
        with pytest.raises(TypeError, match=f"sgd: argument {i} is"):
            kernel((1,), (cupy_backend.THREADS,), good[:i] + (bad,) + good[i + 1:])
