"""Every backend's fused kernels against the library's reference statement (puzzle_rms.backends.reference).

Each test feeds a backend and :mod:`puzzle_rms.backends.reference` the same inputs: flat buffers, a layout
(several segments, one larger than every backend's block, small ones that share parameters; or lazy rows
pointing at a compact gradient), a per-segment table and the ``hyper`` vector that ``RMSProp.hyper`` builds
for the variant. Three steps with changing gradients and learning rates; before each step both sides start
from the same state (the reference's), so each comparison measures one step's rounding. Each variant also
changes the reference's numbers beyond the tolerance (tests/kernel_check.py) against a neighbouring variant,
so the comparison can tell them apart.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from backend_switch import using
from kernel_check import DTYPES, assert_step_close, backend_step, excess, reference_step

from puzzle_rms import backends
from puzzle_rms.backends import reference
from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.optimizers import RMSProp

LEARN_RATES = [0.05, 0.02, 0.08]
# dense segments: one spans several blocks of every backend (NumPy's 65536 included); 1 and 2 share
# their parameters (NumPy gathers such short runs into one piece); an empty one
SIZES = [3, 7, 7, 1, 0, 2000, 70000]
# lazy rows: (wOffset, row indices, row size) of two row-sparse parameters in one flat buffer of WEIGHTS elements
ROWS = [(0, [3, 17, 4, 40], 30), (1500, [1, 8], 2000)]
WEIGHTS = 1500 + 10 * 2000

# variant: (RMSProp options, the variant it must be told apart from)
VARIANTS = {
    "plain": (dict(epsilon=0.05), "epsInSqrt"),
    "epsInSqrt": (dict(epsilon=0.05, epsInSqrt=True), "plain"),
    "centered": (dict(epsilon=0.05, centered=True), "plain"),
    "momentum-lrInMomentum": (dict(epsilon=0.05, momentum=0.9), "momentum-lrOutside"),
    "momentum-lrOutside": (dict(epsilon=0.05, momentum=0.9, lrInMomentum=False), "momentum-lrInMomentum"),
    "nesterov-lrInMomentum": (dict(epsilon=0.05, momentum=0.9, nesterov=True), "momentum-lrInMomentum"),
    "nesterov-lrOutside": (dict(epsilon=0.05, momentum=0.9, nesterov=True, lrInMomentum=False),
                           "nesterov-lrInMomentum"),
    "weightDecay-before-clip": (dict(epsilon=0.05, weightDecay=0.5, clipValue=0.1), "weightDecay-after-clip"),
    "weightDecay-after-clip": (dict(epsilon=0.05, weightDecay=0.5, clipValue=0.1, wdBeforeClip=False),
                               "clipValue"),
    "decoupledWeightDecay": (dict(epsilon=0.05, decoupledWeightDecay=2.0), "plain"),
    "clipValue": (dict(epsilon=0.05, clipValue=0.1), "plain"),
    "clipWeights": (dict(epsilon=0.05, clipWeights=0.8), "plain"),
    "maximize": (dict(epsilon=0.05, maximize=True), "plain"),
    "biasCorrection": (dict(epsilon=0.05, biasCorrection=True), "plain"),
    "everything": (dict(epsilon=0.05, epsInSqrt=True, centered=True, momentum=0.5, nesterov=True,
                        biasCorrection=True, weightDecay=0.3, decoupledWeightDecay=0.5, clipValue=1.0,
                        clipWeights=1.5, maximize=True), "plain"),
}
@pytest.fixture(params=["numpy", "numba", pytest.param("cupy", marks=pytest.mark.gpu)])
def kernel_backend(request: pytest.FixtureRequest) -> Any:
    """Each backend in turn, the GPU one only where CuPy has a device."""
    with using(request.param):
        yield backends.current()


def make_layout(backend: Any, kind: str) -> Any:
    if kind == "dense":
        return backend.make_layout(SIZES)
    wOffsets = np.concatenate([offset + np.asarray(rows) * size for offset, rows, size in ROWS])
    sizes = np.concatenate([np.full(len(rows), size) for _, rows, size in ROWS])
    return backend.make_layout(sizes, wOffsets, np.cumsum(sizes) - sizes)


def seg_table(layout: Any, lr: float, options: dict) -> np.ndarray:
    """``[lr, wd, wScale, segGradScale]`` per segment: learning-rate multipliers and norm-clip factors differ
    between segments, except that segments 1 and 2 share theirs."""
    index = np.arange(layout.numSegments)
    mult, clip = 0.5 + index % 3, 1.0 - 0.1 * (index % 4)
    mult[index == 2], clip[index == 2] = mult[1], clip[1]
    segLr = lr * mult
    wd = np.full(layout.numSegments, options.get("weightDecay", 0.0))
    return np.stack([segLr, wd, 1.0 - segLr * options.get("decoupledWeightDecay", 0.0), clip], axis=1)


def initial_arrays(gen: np.random.Generator, size: int, dtypes: tuple, options: dict) -> dict:
    wDtype, gDtype, sDtype = dtypes
    mg = 0.3 * gen.standard_normal(size)
    arrays = {"w": gen.standard_normal(size).astype(wDtype),
              "ms": (mg * mg + gen.uniform(0.2, 2.0, size)).astype(sDtype)}
    if options.get("centered"):
        arrays["mg"] = mg.astype(sDtype)
    if options.get("momentum"):
        arrays["mom"] = (0.1 * gen.standard_normal(size)).astype(sDtype)
    return arrays


@pytest.mark.parametrize("kind", ["dense", "lazy"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rmsprop_kernel_matches_reference(kernel_backend, variant, dtype, kind):
    options, contrast = VARIANTS[variant]
    contrastOptions = VARIANTS[contrast][0]
    gen = np.random.default_rng(7)
    layout = make_layout(kernel_backend, kind)
    size = layout.size if kind == "dense" else WEIGHTS
    arrays = initial_arrays(gen, size, DTYPES[dtype], options)
    optimizer, other = RMSProp(**options), RMSProp(**contrastOptions)
    listed = np.zeros(size, bool)
    for start, stop in layout.hostBlocks[:, :2]:
        listed[start:stop] = True
    assert listed.sum() == layout.size and (kind == "dense") == listed.all()
    for t, lr in enumerate(LEARN_RATES, start=1):
        g = (gen.standard_normal(layout.size) * 10.0 ** gen.uniform(-1, 0.5)).astype(DTYPES[dtype][1])
        table, hyper = seg_table(layout, lr, options), optimizer.hyper(0.5, t)
        want = reference_step(arrays, g, layout, table, hyper)
        got = backend_step(kernel_backend, arrays, g, layout, table, hyper)
        assert_step_close(got, want, f"{variant}, {dtype}, {kind}, step {t}")
        for name, before in arrays.items():  # elements outside the layout (rows not listed) are not touched
            np.testing.assert_array_equal(got[name][~listed], before[~listed], err_msg=name)
        # the contrast variant on the same inputs (its own state buffers: zeros where this one has none)
        buffers = initial_arrays(np.random.default_rng(0), size, DTYPES[dtype], contrastOptions)
        contrastArrays = {name: arrays[name] if name in arrays else np.zeros_like(buffer)
                          for name, buffer in buffers.items()}
        contrastWant = reference_step(contrastArrays, g, layout, seg_table(layout, lr, contrastOptions),
                                      other.hyper(0.5, t))
        assert (excess(contrastWant["w"], want["w"]) > 0).any(), f"{variant} should differ from {contrast}"
        arrays = want


SGD_MOMENTUM = {"plain": None, "momentum": (0.9, 0.0), "nesterov": (0.9, 1.0)}  # (mu, nesterov)


@pytest.mark.parametrize("momentum", list(SGD_MOMENTUM))
@pytest.mark.parametrize("kind", ["dense", "lazy"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sgd_kernel_matches_reference(kernel_backend, dtype, kind, momentum):
    gen = np.random.default_rng(8)
    layout = make_layout(kernel_backend, kind)
    size = layout.size if kind == "dense" else WEIGHTS
    stateDtype = np.float32 if dtype == np.float16 else dtype
    w = gen.standard_normal(size).astype(dtype)
    mom = None if SGD_MOMENTUM[momentum] is None else gen.standard_normal(size).astype(stateDtype)
    mu, nesterov = SGD_MOMENTUM[momentum] or (0.0, 0.0)
    hyper = hyper_vector(gradScale=0.25, mu=mu, nesterov=nesterov)
    for lr in LEARN_RATES:
        g = gen.standard_normal(layout.size).astype(dtype)
        table = seg_table(layout, lr, {"decoupledWeightDecay": 0.5})
        want, wantMom = w.copy(), None if mom is None else mom.copy()
        reference.sgd_update(want, g, wantMom, layout, table, hyper)
        dev, devMom = kernel_backend.to_device(w.copy()), None if mom is None else kernel_backend.to_device(mom.copy())
        segParams = kernel_backend.seg_params(table, stateDtype)
        kernel_backend.sgd_update(dev, kernel_backend.to_device(g), devMom, layout, segParams, hyper)
        got, expected = {"w": kernel_backend.to_host(dev)}, {"w": want}
        if mom is not None:
            got["mom"], expected["mom"] = kernel_backend.to_host(devMom), wantMom
        assert_step_close(got, expected, f"sgd {momentum} {np.dtype(dtype)} {kind}")
        w, mom = want, wantMom


@pytest.mark.parametrize("kind", ["dense", "lazy"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_segment_sumsq_matches_reference(kernel_backend, dtype, kind):
    layout = make_layout(kernel_backend, kind)
    g = np.random.default_rng(9).standard_normal(layout.size).astype(dtype)
    got = kernel_backend.segment_sumsq(kernel_backend.to_device(g), layout)
    np.testing.assert_allclose(got, reference.segment_sumsq(g, layout), rtol=1e-12, atol=0)
