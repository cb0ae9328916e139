"""Compressed optimizer state (RMSProp's stateDtype): the codes bit for bit, every backend against the
reference, trajectories against float32 state, checkpoints.

Expected values of the codes are worked out by hand from their definitions (the docstring of
puzzle_rms.backends.reference): bfloat16 is the top half of a float32's bits; the 8-bit code of
``y = x / scale`` lies between the code points ``(q0/255)**2`` and ``((q0+1)/255)**2``.

Stated tolerances: one step of a backend against the float64 reference: weights within 2e-6 relatively
(float32 arithmetic), state within one code step (a stochastic-rounding decision may flip where the
float32 and float64 values straddle it). NumPy and Numba compute in float32 in the same order without
fast-math and agree bit for bit. Training a small MLP for 2,000 steps: the final loss within 3% of
float32 state's at factors 0.9, 0.99 and 0.999.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms.backends import reference as R
from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.backends.compressed_state import mix32, scale_offsets, scale_starts, state_keys
from puzzle_rms.checkpoint import CheckpointMismatchError, loadOptimizer, saveOptimizer
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE
from puzzle_rms.modules import Activation, Linear, tanh
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.variable import Variable
from backend_switch import using
from cuda_host import nvrtc_path

needs_nvrtc_or_skip = pytest.mark.skipif(nvrtc_path()[0] is None, reason=f"no NVRTC: {nvrtc_path()[1]}")

F = np.float32


def f32(bits: int) -> np.float32:
    return np.array([bits], np.uint32).view(np.float32)[0]


def bits_of(x: Any) -> int:
    return int(np.array([x], np.float32).view(np.uint32)[0])


def bf16(x: Any, r16: int) -> int:
    """bf16_encode of one value with the 16 random bits ``r16`` (the top half of the 32 bits)."""
    return int(R.bf16_encode(np.array([x], np.float32), np.array([r16 << 16], np.uint32))[0])


# --- the hash ----------------------------------------------------------------------------------------------------
def test_mix32_is_the_stated_bijection():
    assert mix32(0) == 0
    # by hand: x = 1 -> 1 ^ 0 = 1 -> 0x7feb352d -> ^ (>> 15) = 0x7feb352d ^ 0xffd6 = 0x7febcafb -> ...
    x = 0x7FEB352D ^ (0x7FEB352D >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    assert mix32(1) == x ^ (x >> 16)
    values = np.arange(1 << 16, dtype=np.uint32) * np.uint32(65537)
    mixed = R.mix32_array(values)
    assert np.array_equal(mixed, [mix32(int(v)) for v in values])
    assert np.unique(mixed).size == values.size  # no collisions


def test_state_keys_depend_on_seed_step_and_buffer():
    keys = [tuple(state_keys(seed, step)) for seed in (0, 1) for step in (1, 2)]
    assert len(set(keys)) == 4 and all(len(set(k)) == 3 for k in keys)
    base = mix32(mix32(7) ^ 5)
    assert list(state_keys(7, 5)) == [mix32(base ^ 1), mix32(base ^ 2), mix32(base ^ 3)]


# --- bfloat16 ----------------------------------------------------------------------------------------------------
def test_bf16_decode_hand_values():
    u = np.array([0x3F80, 0xC020, 0x7F80, 0xFF80, 0x0001, 0x7F7F, 0x8000, 0x0000], np.uint16)
    got = R.bf16_decode(u)
    assert got[0] == 1.0 and got[1] == -2.5 and got[2] == np.inf and got[3] == -np.inf
    assert got[4] == F(2.0 ** -133)  # the smallest subnormal bfloat16
    assert got[5] == F((2 - 2 ** -7) * 2.0 ** 127)  # the largest finite bfloat16
    assert got[6] == 0 and np.signbit(got[6]) and got[7] == 0 and not np.signbit(got[7])
    assert np.isnan(R.bf16_decode(np.array([0x7FC0], np.uint16))[0])


def test_bf16_encode_hand_values():
    assert all(bf16(1.0, r) == 0x3F80 for r in (0, 0x7FFF, 0xFFFF))  # exact values stay
    half = f32(0x3F808000)  # 1 + 2**-8: half way between 1 and the next bfloat16
    assert bf16(half, 0x7FFF) == 0x3F80 and bf16(half, 0x8000) == 0x3F81
    assert bf16(-half, 0x7FFF) == 0xBF80 and bf16(-half, 0x8000) == 0xBF81  # the magnitude rounds, either sign
    assert bf16(np.inf, 0xFFFF) == 0x7F80 and bf16(-np.inf, 0xFFFF) == 0xFF80
    assert bf16(0.0, 0xFFFF) == 0 and bf16(-0.0, 0xFFFF) == 0x8000
    assert bf16(f32(0x7F7FFFFF), 0) == 0x7F7F and bf16(f32(0x7F7FFFFF), 1) == 0x7F80  # may round up to inf
    assert bf16(f32(0x00008000), 0x8000) == 0x0001 and bf16(f32(0x00008000), 0x7FFF) == 0  # subnormals
    assert bf16(f32(0x7FC00001), 0xFFFF) == 0x7FC0  # NaN stays NaN, quiet, never carries into the sign
    assert bf16(f32(0x7F800001), 0xFFFF) == 0x7FC0 and bf16(f32(0xFF800001), 0) == 0xFFC0


def test_bf16_stochastic_rounding_is_unbiased():
    x = f32(0x3F804000)  # 1 + 2**-9: a quarter of the way from 1 to 1 + 2**-7
    n = 1 << 16
    codes = R.bf16_encode(np.full(n, x, np.float32), R.random_bits(np.arange(n), state_keys(0, 1)[0]))
    assert set(np.unique(codes).tolist()) == {0x3F80, 0x3F81}
    assert abs(np.mean(codes == 0x3F81) - 0.25) < 0.01
    assert abs(R.bf16_decode(codes).astype(np.float64).mean() / float(x) - 1) < 1e-5


# --- the 8-bit code ----------------------------------------------------------------------------------------------
def test_q8_hand_values():
    scale = F(2.0)
    x = np.array([0.0, 0.5, 2.0], np.float32)  # y = 0, 0.25, 1
    q, s = R.q8_encode(x, np.zeros(3, np.uint32))  # u = 0: every inexact value rounds up
    # y = 0.5 * (1/2) = 0.25: sqrt = 0.5, 0.5 * 255 = 127.5 -> q0 = 127; (127/255)**2 < 0.25 < (128/255)**2
    assert s == scale and q.tolist() == [0, 128, 255]
    q, _ = R.q8_encode(x, np.full(3, 0xFFFFFFFF, np.uint32))  # u just below 1: rounds down
    assert q.tolist() == [0, 127, 255]
    lo = F(127) * F(1 / 255)
    assert R.q8_decode(np.array([127], np.uint8), scale)[0] == scale * (lo * lo)
    assert F(255) * F(1 / 255) == 1  # so code 255 decodes to the scale itself
    assert R.q8_decode(np.array([0, 255], np.uint8), scale).tolist() == [0.0, 2.0]


def test_q8_edge_blocks():
    q, s = R.q8_encode(np.zeros(5, np.float32), np.zeros(5, np.uint32))
    assert s == 0 and not q.any()
    q, s = R.q8_encode(np.array([1.0, np.nan, 0.0], np.float32), np.zeros(3, np.uint32))
    assert np.isnan(s) and (q == 255).all() and np.isnan(R.q8_decode(q, s)).all()
    q, s = R.q8_encode(np.array([1.0, np.inf], np.float32), np.zeros(2, np.uint32))
    assert s == np.inf and (q == 255).all()
    tiny = f32(1)  # the smallest subnormal float32 is a scale like any other
    q, s = R.q8_encode(np.array([tiny, 0.0], np.float32), np.zeros(2, np.uint32))
    assert s == tiny and q.tolist() == [255, 0] and R.q8_decode(q, s).tolist() == [tiny, 0.0]
    # 1 / scale overflows for a subnormal scale: y = x / scale = 0.25 instead, coded as above
    q, s = R.q8_encode(np.array([f32(4), f32(1)], np.float32), np.zeros(2, np.uint32))
    assert s == f32(4) and q.tolist() == [255, 128]


def test_q8_stochastic_rounding_is_unbiased():
    x = np.full(256, 0.3, np.float32)
    x[0] = 1.0
    totals = np.zeros(256)
    for step in range(1, 201):
        q, s = R.q8_encode(x, R.random_bits(np.arange(256), state_keys(0, step)[0]))
        totals += R.q8_decode(q, s)
    assert abs(totals[1:].mean() / 200 / 0.3 - 1) < 2e-3
    assert (totals[0] / 200) == 1.0


# --- every backend's codec against the reference, bit for bit ----------------------------------------------------
def _codec_inputs() -> np.ndarray:
    rng = np.random.default_rng(3)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, f32(1), f32(0x00008000), f32(0x7F7FFFFF), 1.0, -2.5],
                    np.float32)
    subnormal = rng.integers(0, 1 << 23, 256).astype(np.uint32).view(np.float32)
    return np.concatenate([edge, rng.standard_normal(5000).astype(np.float32) * np.float32(10) ** rng.integers(
        -30, 30, 5000).astype(np.float32), np.zeros(6, np.float32), subnormal])


def test_numba_codes_match_the_reference_bit_for_bit():
    pytest.importorskip("numba")
    from puzzle_rms.backends import numba_state_kernels as K

    x = _codec_inputs()
    key = int(state_keys(4, 9)[0])
    got = np.empty(x.size, np.uint16)
    K.bf16_encode_array(x, 100, key, got)
    assert np.array_equal(got, R.bf16_encode(x, R.random_bits(np.arange(100, 100 + x.size), key)))
    for ms in (np.abs(x[10:]), np.abs(x)):  # finite blocks; blocks with inf and NaN
        codes, scales = np.empty(ms.size, np.uint8), np.empty(-(-ms.size // 256), np.float32)
        K.q8_encode_array(ms, 7, key, codes, scales)
        for k in range(scales.size):
            part = slice(256 * k, 256 * k + 256)
            want, scale = R.q8_encode(ms[part], R.random_bits(np.arange(7 + 256 * k, 7 + 256 * k + 256)[
                :ms[part].size], key))
            assert np.array_equal(codes[part], want) and np.array_equal(scales[k], scale, equal_nan=True), k


def test_numpy_backend_codes_match_the_reference_bit_for_bit():
    from puzzle_rms.backends.numpy_state_kernels import q8_decode_rows, q8_encode_rows

    ms = np.abs(_codec_inputs())
    bits = R.random_bits(np.arange(ms.size), 12345)
    codes, scales = q8_encode_rows(ms, bits)
    for k in range(scales.size):
        part = slice(256 * k, 256 * k + 256)
        want, scale = R.q8_encode(ms[part], bits[part])
        assert np.array_equal(codes[part], want) and np.array_equal(scales[k], scale, equal_nan=True), k
        assert np.array_equal(q8_decode_rows(codes, scales)[part], R.q8_decode(want, scale), equal_nan=True)


# --- one step, every backend against the reference ---------------------------------------------------------------
VARIANTS = {
    "plain": dict(epsOut=1e-3),
    "centered": dict(centered=True, epsOut=1e-3),
    "momentum": dict(mu=0.9, lrInMomentum=1.0, epsOut=1e-3),
    "torch-momentum-centered": dict(mu=0.9, lrInMomentum=0.0, centered=True, epsOut=1e-3),
    "nesterov-clip-decay": dict(mu=0.5, nesterov=1.0, clipValue=0.5, clipWeights=1.5, wdPre=1.0, epsIn=1e-6,
                                epsOut=0.0, bcMs=1.5, bcMg=1.5),
}
SIZES = [1000, 70_000, 5, 256]


def _step_inputs(stateDtype: str, variant: str, dtype: Any, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = sum(SIZES)
    options = dict(VARIANTS[variant])
    centered = options.pop("centered", False)
    mu = options.get("mu", 0.0)
    arrays = {"w": rng.standard_normal(n).astype(dtype), "g": rng.standard_normal(n).astype(dtype)}
    msF = (rng.random(n) * 0.5).astype(np.float32)
    msF[1000:1256] = 0  # a block that starts at 0
    if stateDtype == "int8":
        offsets, scaleOffs = np.cumsum(SIZES) - SIZES, scale_offsets(SIZES)
        arrays["ms"], arrays["msScale"] = np.empty(n, np.uint8), np.empty(scaleOffs[-1], np.float32)
        for s, (offset, size) in enumerate(zip(offsets, SIZES)):
            for k in range(-(-size // 256)):
                part = slice(offset + 256 * k, offset + min(256 * (k + 1), size))
                arrays["ms"][part], arrays["msScale"][scaleOffs[s] + k] = R.q8_encode(
                    msF[part], R.random_bits(np.arange(part.start, part.stop), 99))
    else:
        arrays["ms"], arrays["msScale"] = R.bf16_encode(msF, R.random_bits(np.arange(n), 99)), None
    for name, on in (("mg", centered), ("mom", mu > 0)):
        arrays[name] = R.bf16_encode(rng.standard_normal(n).astype(np.float32) * F(0.01),
                                     R.random_bits(np.arange(n), 98)) if on else None
    table = np.array([[1e-2, 0.01, 0.999, 1.0], [3e-3, 0.0, 1.0, 0.5], [1e-2, 0.0, 1.0, 1.0], [5e-3, 0.1, 1.0, 2.0]])
    return {"arrays": arrays, "table": table, "hyper": hyper_vector(rho=0.99, oneMinusRho=0.01, **options),
            "keys": state_keys(5, 17)}


def _run(backend: Any, inputs: dict[str, Any], kernel: Any = None) -> dict[str, Any]:
    """One step of ``backend`` (or of ``kernel``, the reference, on ``backend``'s layout, on the host) on copies
    of the inputs; the results on the host."""
    move = (lambda v: v.copy()) if kernel is not None else (lambda v: backend.to_device(v.copy()))  # fresh copies
    a = {k: None if v is None else move(v) for k, v in inputs["arrays"].items()}
    layout = backend.make_layout(SIZES)
    starts = scale_starts(layout.hostBlocks, np.cumsum(SIZES) - SIZES, scale_offsets(SIZES))
    args = (a["w"], a["g"], a["ms"], a["msScale"], a["mg"], a["mom"], layout)
    if kernel is None:
        backend.rmsprop_update_compressed(*args, backend.seg_params(inputs["table"], np.float32), inputs["hyper"],
                                          backend.to_device(starts), inputs["keys"])
        return {k: None if v is None else np.array(backend.to_host(v)) for k, v in a.items()}
    kernel(*args, inputs["table"], inputs["hyper"], starts, inputs["keys"])
    return a


def _decoded(a: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    if a["ms"].dtype == np.uint8:
        out["ms"] = np.concatenate([R.q8_decode(a["ms"][o:o + s], np.repeat(a["msScale"][c:], 256)[:s])
                                    for o, s, c in zip(np.cumsum(SIZES) - SIZES, SIZES, scale_offsets(SIZES))])
    else:
        out["ms"] = R.bf16_decode(a["ms"])
    for name in ("mg", "mom"):
        if a[name] is not None:
            out[name] = R.bf16_decode(a[name])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("stateDtype", ["bfloat16", "int8"])
def test_step_matches_the_reference(backend_name, stateDtype, variant, dtype):
    inputs = _step_inputs(stateDtype, variant, dtype)
    want = _run(backends.current(), inputs, R.rmsprop_update_compressed)
    got = _run(backends.current(), inputs)
    wTol = 2e-6 if dtype == np.float32 else 1e-3
    np.testing.assert_allclose(got["w"].astype(np.float64), want["w"].astype(np.float64), rtol=wTol, atol=wTol)
    assert not np.array_equal(want["w"], inputs["arrays"]["w"])  # the step moved the weights
    gotState, wantState = _decoded(got), _decoded(want)
    for name, value in wantState.items():
        # one code step: a bfloat16 ulp (2**-7 relatively), or an 8-bit step (< 2/255 of the block's scale)
        if name == "ms" and stateDtype == "int8":
            bound = 2.0 / 255 * np.repeat(np.maximum(want["msScale"], got["msScale"]), 256)[:value.size].max()
        else:
            # plus float32 rounding of the largest terms where they cancel (mom = mu * mom + c1 * u)
            bound = np.abs(value.astype(np.float64)) * 2.0 ** -7 + 1e-6 * np.abs(value).max()
        assert np.all(np.abs(gotState[name].astype(np.float64) - value) <= bound), name
        exact = np.mean(got[name] == want[name])  # the codes themselves
        assert exact > 0.97, (name, exact)
    if stateDtype == "int8":  # a scale is a new mean square: float32 against float64 arithmetic, rounded once
        np.testing.assert_allclose(got["msScale"], want["msScale"], rtol=2e-6)


def _run_on(name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """One step on backend ``name``: the inputs moved to it, the results back on the host."""
    with using(name):
        return _run(backends.current(), inputs)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("stateDtype", ["bfloat16", "int8"])
def test_backends_agree_with_numpy_bit_for_bit(backend_name, stateDtype, variant, dtype):
    """Every float32 operation rounds once, in one order, on every backend (CUDA: --fmad=false; the inputs have
    no subnormals, which the GPU flushes)."""
    if backend_name == "numpy":
        pytest.skip("numpy is the baseline of this comparison")
    inputs = _step_inputs(stateDtype, variant, dtype, seed=1)
    a, b = _run_on("numpy", inputs), _run_on(backend_name, inputs)
    for name in a:
        if a[name] is not None:
            assert np.array_equal(a[name], b[name], equal_nan=True), name


@pytest.mark.parametrize("stateDtype", ["bfloat16", "int8"])
def test_a_nan_gradient_poisons_its_element_and_8_bit_block(backend_name, stateDtype):
    """nonFinite="ignore" lets a NaN through: its weight and state become NaN (the centered variance is not
    clamped to 0), in the 8-bit code its whole quantization block; every other element steps as without it."""
    inputs = _step_inputs(stateDtype, "torch-momentum-centered", np.float32, seed=2)
    clean = _run(backends.current(), inputs)
    inputs["arrays"]["g"][1300] = np.nan  # segment 1, element 300: quantization block 1 of that segment
    got = _run(backends.current(), inputs)
    state = _decoded(got)
    assert np.isnan(got["w"][1300]) and all(np.isnan(state[name][1300]) for name in ("ms", "mg", "mom"))
    others = np.ones(got["w"].size, bool)
    others[1300] = False
    if stateDtype == "int8":
        others[1256:1512] = False
    for name in ("w", "mg", "mom") + (("ms",) if stateDtype == "bfloat16" else ()):
        assert np.array_equal(got[name][others], clean[name][others]), name
    if stateDtype == "int8":
        assert np.isnan(state["ms"][1256:1512]).all() and np.isnan(got["msScale"][scale_offsets(SIZES)[1] + 1])


@needs_nvrtc_or_skip
def test_the_cuda_source_compiles_with_nvrtc_without_warnings():
    from cuda_host import nvrtc_compile
    from puzzle_rms.backends import cupy_state_kernels as K

    for w, g, ms in ((np.float32, np.float32, np.uint8), (np.float16, np.float16, np.uint16)):
        source = K.defines(np.zeros(0, w), np.zeros(0, g), np.zeros(0, ms)) + K.SOURCE
        for arch in ("sm_80", "sm_90"):
            result, log, ptx = nvrtc_compile(source, K.OPTIONS + ("-ftz=true", f"-arch={arch}"))
            assert result == 0 and log.strip() == "", log
            assert b".entry rmsprop_compressed(" in ptx and b"fma.rn.f32" not in ptx  # --fmad=false holds


# --- the optimizer -----------------------------------------------------------------------------------------------
_data = np.random.default_rng(0)
X = _data.standard_normal((64, 4)).astype(np.float32)
Y = (np.sin(X.sum(axis=1, keepdims=True)) + 0.3 * _data.standard_normal((64, 1))).astype(np.float32)


def _train(stateDtype: str, factor: float, steps: int, useGlobalState: bool = True) -> float:
    rng = np.random.default_rng(5)
    model = Sequential()
    model.extend([Linear(4, 16, rng=rng), Activation(tanh), Linear(16, 1, rng=rng)])
    optimizer = RMSProp(1e-3, factor=factor, epsilon=1e-5, stateDtype=stateDtype)
    optimizer.setupOn(model, useGlobalState=useGlobalState)
    cost = MSE()
    for t in range(steps):
        rows = slice(8 * (t % 8), 8 * (t % 8 + 1))
        optimizer.zeroGradParams()
        _, grad = cost(model(X[rows]), Y[rows])
        model.backward(grad)
        optimizer.update()
    error, _ = cost(model(X), Y)
    return float(error)


@pytest.mark.parametrize("factor", [0.9, 0.99, 0.999])
def test_training_tracks_float32_state(factor):
    with using("numpy"):
        start = _train("float32", factor, 0)
        base = _train("float32", factor, 2000)
        assert base < 0.5 * start
        for stateDtype in ("bfloat16", "int8"):
            loss = _train(stateDtype, factor, 2000)
            assert abs(loss / base - 1) < 0.03, (stateDtype, loss, base)


@pytest.mark.parametrize("stateDtype", ["bfloat16", "int8"])
def test_mean_square_keeps_decaying_at_factor_0999(backend_name, stateDtype):
    """With zero gradients ms decays as 0.999**t; round-to-nearest would stick (0.999 rounds back to 1 in
    bfloat16); stochastic rounding follows the decay on average."""
    n = 4096
    var = Variable(np.zeros(n, np.float32), name="w")
    optimizer = RMSProp(1e-3, factor=0.999, initialMeanSquare=1.0, stateDtype=stateDtype)
    optimizer.setupOn([var])
    for _ in range(1000):
        optimizer.zeroGradParams()
        optimizer.update()
    state = {k: backends.current().to_host(v) for k, v in optimizer.stateOf("w").items()}
    decoded = (R.bf16_decode(state["ms"]) if stateDtype == "bfloat16"
               else R.q8_decode(state["ms"], np.repeat(state["msScale"], 256)))
    assert abs(decoded.astype(np.float64).mean() / 0.999 ** 1000 - 1) < 0.02


def _variables(seed: int) -> dict[str, Variable]:
    gen = np.random.default_rng(seed)
    return {"w": Variable(gen.standard_normal((30, 20)).astype(np.float32), name="w"),
            "b": Variable(gen.standard_normal(300).astype(np.float32), name="b")}


def _steps(optimizer: RMSProp, variables: dict[str, Variable], seed: int, count: int) -> None:
    gen = np.random.default_rng(seed)
    for _ in range(count):
        for var in variables.values():
            var.grad[...] = backends.current().to_device(gen.standard_normal(var.shape).astype(np.float32))
        optimizer.update()


@pytest.mark.parametrize("stateDtype", ["bfloat16", "int8"])
def test_checkpoint_round_trips_compressed_state(backend_name, tmp_path, stateDtype):
    options = dict(learnRate=0.01, centered=True, momentum=0.5, stateDtype=stateDtype, stateSeed=3)
    source, sourceVars = RMSProp(**options), _variables(0)
    source.setupOn(sourceVars, useGlobalState=True)
    _steps(source, sourceVars, 1, 3)
    path = str(tmp_path / "opt.npz")
    saveOptimizer(path, source)
    saved = {n: {b: np.array(backends.current().to_host(v)) for b, v in views.items()}
             for n, views in source.stateArrays().items()}
    assert ("msScale" in saved["w"]) == (stateDtype == "int8") and saved["w"]["msScale" if stateDtype == "int8"
                                                                             else "ms"].size
    target, targetVars = RMSProp(**options), _variables(0)
    target.setupOn(targetVars, useGlobalState=False)  # the per-variable state is the same in either mode
    loadOptimizer(path, target)
    for name, views in target.stateArrays().items():
        for buffer, view in views.items():
            assert np.array_equal(backends.current().to_host(view), saved[name][buffer]), (name, buffer)
    assert target.t == 3


def test_loading_another_state_dtype_is_refused(tmp_path):
    source, variables = RMSProp(0.01, stateDtype="int8"), _variables(0)
    source.setupOn(variables, useGlobalState=True)
    _steps(source, variables, 1, 1)
    path = str(tmp_path / "opt.npz")
    saveOptimizer(path, source)
    plain = RMSProp(0.01)
    plain.setupOn(_variables(0), useGlobalState=True)
    with pytest.raises(CheckpointMismatchError, match=r"stateDtype: \"int8\" in the checkpoint, \"float32\""):
        loadOptimizer(path, plain)
    arrays = {n: {b: np.array(v) for b, v in views.items()} for n, views in source.stateArrays().items()}
    before = plain.stateOf("w")["ms"].copy()
    with pytest.raises(ValueError, match=r"stateDtype='int8' \(ms is uint8\), this optimizer keeps "
                                         r"stateDtype='float32'; state is not converted"):
        plain.loadState(arrays, 1, 0)
    assert np.array_equal(plain.stateOf("w")["ms"], before)


def test_options_are_validated():
    with pytest.raises(ValueError, match=r"RMSProp: stateDtype must be one of 'float32', 'bfloat16', 'int8', "
                                         r"got 'fp8'"):
        RMSProp(stateDtype="fp8")
    with pytest.raises(ValueError, match=r"stateSeed must be an integer >= 0, got -1"):
        RMSProp(stateSeed=-1)
    assert RMSProp(stateDtype="8bit").stateDtype == "int8"
    assert RMSProp.like("torch", lr=0.01, stateDtype="bfloat16").stateDtype == "bfloat16"
    with pytest.raises(TypeError, match=r"variable 'x' is float64; compressed state needs float16 or float32"):
        RMSProp(stateDtype="bfloat16").setupOn({"x": Variable(np.zeros(3), name="x")})


def test_same_seed_same_state_different_seed_different_state():
    def state(seed: int) -> np.ndarray:
        optimizer, variables = RMSProp(0.01, stateDtype="bfloat16", stateSeed=seed), _variables(0)
        optimizer.setupOn(variables, useGlobalState=True)
        _steps(optimizer, variables, 1, 2)
        return np.array(optimizer.stateOf("b")["ms"])

    with using("numpy"):
        assert np.array_equal(state(1), state(1)) and not np.array_equal(state(1), state(2))
