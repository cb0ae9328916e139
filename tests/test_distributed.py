"""Data-parallel training on 2 MPI ranks, started with ``mpiexec -n 2`` in a subprocess (tests/mpi_worker.py).

The ranks train a small MLP with RMSProp (momentum, an exponential-decay schedule), each on half of every batch.
Here the results are checked against each other (bitwise equal parameters on both ranks after every step), against
a float64 NumPy reference of the same training on the whole batches written below, and against one process
running the library on the whole batches.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from puzzle_rms import backends
from mpi_worker import BAD_STEP, train
from puzzle_rms.data import shardBatch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
STEPS, ROWS, CLIP = 5, 8, 0.05
NAMES = ("0.W", "0.b", "2.W", "2.b")
SHAPES = {"0.W": (4, 3), "0.b": (3,), "2.W": (3, 2), "2.b": (2,)}


def _mpiexec() -> str | None:
    """The mpiexec installed next to this Python (the mpich wheel puts it there), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


def _skip_reason() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec found next to the Python executable or on PATH (pip install -e '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


# --- the NumPy reference -----------------------------------------------------------------------------
def _grads(p: dict, x: np.ndarray, t: np.ndarray) -> dict:
    """Backprop of E = sum((p - t)**2) / (2 * t.size) through Linear -> tanh -> Linear."""
    a = np.tanh(x @ p["0.W"] + p["0.b"])
    dy = (a @ p["2.W"] + p["2.b"] - t) / t.size
    dh = (dy @ p["2.W"].T) * (1 - a * a)
    return {"0.W": x.T @ dh, "0.b": dh.sum(0), "2.W": a.T @ dy, "2.b": dy.sum(0)}


def reference(inputs: dict, steps: list[int], clipNorm: float | None = None) -> tuple[np.ndarray, list[float]]:
    """Parameter history of RMSProp(lr = 0.01 * 0.5**(t/4), rho 0.9, eps 1e-5 outside the root, momentum 0.5 with
    lr inside) on the whole batches ``steps`` (a skipped step repeats the previous parameters), float64.

    Returns the history and the global gradient norm of each applied step.
    """
    p = {n: inputs[f"init0/{n}"].astype(np.float64) for n in NAMES}
    ms = {n: np.zeros_like(v) for n, v in p.items()}
    mom = {n: np.zeros_like(v) for n, v in p.items()}
    history, norms, t = [np.concatenate([p[n].ravel() for n in NAMES])], [], 0
    for step in range(STEPS):
        if step in steps:
            g = _grads(p, inputs["x"][step].astype(np.float64), inputs["t"][step].astype(np.float64))
            norm = np.sqrt(sum(float((v * v).sum()) for v in g.values()))
            norms.append(norm)
            factor = 1.0 if clipNorm is None else min(1.0, clipNorm / norm)
            lr = 0.01 * 0.5 ** (t / 4)
            for n in NAMES:
                gn = g[n] * factor
                ms[n] = 0.9 * ms[n] + 0.1 * gn * gn
                mom[n] = 0.5 * mom[n] + lr * gn / (np.sqrt(ms[n]) + 1e-5)
                p[n] = p[n] - mom[n]
            t += 1
        history.append(np.concatenate([p[n].ravel() for n in NAMES]))
    return np.array(history), norms


def make_inputs() -> dict:
    rng = np.random.default_rng(5)
    inputs = {"x": rng.normal(size=(STEPS, ROWS, 4)).astype(np.float32),
              "t": rng.normal(size=(STEPS, ROWS, 2)).astype(np.float32), "clipNorm": np.array(CLIP)}
    for rank in (0, 1):
        for name in NAMES:
            inputs[f"init{rank}/{name}"] = rng.uniform(-0.8, 0.8, size=SHAPES[name]).astype(np.float32)
    return inputs


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    """float32 tolerance for a few steps of float32 training against float64 or float32 results."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6)


# --- running the ranks -----------------------------------------------------------------------------
def mpi_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # 2 ranks share the cores: one thread each. Open MPI (if that is the mpiexec found) refuses root and
    # more ranks than cores without these; MPICH ignores them.
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def communicate(command: list[str], env: dict) -> str:
    """Run ``command`` in its own session; fail with its output when it times out or exits non-zero."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in 120 s; output:\n{output}")
    assert process.returncode == 0, f"{' '.join(command)} exited with {process.returncode}; output:\n{output}"
    return output


def run_ranks(backend: str, transport: str, inputs: dict, tmp: Path) -> list[dict]:
    np.savez(tmp / "inputs.npz", **inputs)
    command = [_mpiexec(), "-n", "2", sys.executable, str(TESTS / "mpi_worker.py"), backend,
               transport, str(tmp / "inputs.npz"), str(tmp)]
    output = communicate(command, mpi_env())
    ranks = [dict(np.load(tmp / f"rank{r}.npz")) for r in (0, 1)]
    sizes = [int(r["size"]) for r in ranks]
    assert sizes == [2, 2], (f"each rank saw an MPI world of {sizes}: the mpiexec {_mpiexec()} does not match the "
                             f"MPI library mpi4py uses; output:\n{output}")
    return ranks


@pytest.fixture(scope="module")
def inputs() -> dict:
    return make_inputs()


@pytest.fixture(scope="module")
def launches() -> dict:
    """One mpiexec launch per backend and transport, shared by the tests of this module."""
    return {}


def _gpu(transport: str) -> pytest.param:
    return pytest.param(("cupy", transport), marks=pytest.mark.gpu, id=f"cupy-{transport}")


@pytest.fixture(params=[pytest.param(("numpy", "auto"), id="numpy"), pytest.param(("numba", "auto"), id="numba"),
                        _gpu("host"), _gpu("nccl")])
def ranks(request: pytest.FixtureRequest, inputs: dict, launches: dict,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    """The two ranks' results for one backend and transport; that backend is current in this process too."""
    backend, transport = request.param
    reason = backends.unavailable_reason(backend) or (transport == "nccl" and _nccl_skip_reason())
    if reason:
        pytest.skip(f"{backend}/{transport}: {reason}")
    previous = backends.current().name
    backends.use(backend)
    if request.param not in launches:
        launches[request.param] = run_ranks(backend, transport, inputs, tmp_path_factory.mktemp(f"mpi-{backend}"))
    yield launches[request.param]
    backends.use(previous)


def _nccl_skip_reason() -> str | None:
    """NCCL needs a GPU per rank: two ranks on one device are refused."""
    from cupy.cuda import nccl, runtime

    if not getattr(nccl, "available", False):
        return "this CuPy has no NCCL"
    return None if runtime.getDeviceCount() >= 2 else "NCCL needs 2 GPUs for 2 ranks"


# --- tests ----------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_on_half_batches_match_one_process_on_whole_batches(ranks: list[dict], inputs: dict) -> None:
    r0, r1 = ranks
    assert not np.array_equal(r0["initial"], r1["initial"])  # the ranks built different weights ...
    expected, _ = reference(inputs, list(range(STEPS)))
    single = train(inputs, None)["history"]
    for scenario in ("plain", "skip", "dynamic", "clip"):
        np.testing.assert_array_equal(r0[f"{scenario}/history"], r1[f"{scenario}/history"])  # ... equal at every step
    np.testing.assert_array_equal(r0["plain/history"][0], r0["initial"])  # rank 0's, broadcast by setupOn
    close(r0["plain/history"], expected)
    close(r0["plain/history"], single)
    assert np.abs(expected[-1] - expected[0]).min() > 1e-4  # every parameter moved


@needs_mpi
def test_a_checkpoint_written_by_rank_0_resumes_every_rank_exactly(ranks: list[dict]) -> None:
    for rank in ranks:
        np.testing.assert_array_equal(rank["resume/history"], ranks[0]["plain/history"])


@needs_mpi
def test_compressed_state_is_the_same_on_every_rank_and_resumes_exactly(ranks: list[dict], inputs: dict) -> None:
    """The stochastic rounding hashes (seed, step, index): no rank draws different bits. Against one process on
    the whole batches: a rounding decision may flip where the averaged gradient differs in its last bit, one
    code step of one state element, a bfloat16 step (2**-8 relatively) of one update of size ~lr."""
    r0, r1 = ranks
    for stateDtype in ("bfloat16", "int8"):
        np.testing.assert_array_equal(r0[f"{stateDtype}/history"], r1[f"{stateDtype}/history"])
        single = train(inputs, None, stateDtype=stateDtype)["history"]
        np.testing.assert_allclose(r0[f"{stateDtype}/history"], single, rtol=1e-4, atol=1e-4)
        assert np.abs(r0[f"{stateDtype}/history"] - r0["plain/history"]).max() < 1e-2  # and near float32 state
    for rank in ranks:
        np.testing.assert_array_equal(rank["int8-resume/history"], r0["int8/history"])


@needs_mpi
def test_global_norm_clipping_uses_the_norm_of_the_averaged_gradient(ranks: list[dict], inputs: dict) -> None:
    expected, norms = reference(inputs, list(range(STEPS)), clipNorm=CLIP)
    assert min(norms) > 2 * CLIP  # clipping is active at every step
    unclipped, _ = reference(inputs, list(range(STEPS)))
    assert np.abs(expected[-1] - unclipped[-1]).max() > 1e-3
    close(ranks[0]["clip/history"], expected)
    close(ranks[0]["clip/history"], train(inputs, None, globalClipNorm=CLIP)["history"])


@needs_mpi
@pytest.mark.parametrize("scenario", ["skip", "dynamic"])
def test_a_non_finite_gradient_on_one_rank_skips_the_step_on_all(ranks: list[dict], inputs: dict,
                                                                  scenario: str) -> None:
    applied = [step != BAD_STEP for step in range(STEPS)]
    expected, _ = reference(inputs, [step for step in range(STEPS) if step != BAD_STEP])
    for rank in ranks:
        assert rank[f"{scenario}/results"].tolist() == applied
        history = rank[f"{scenario}/history"]
        np.testing.assert_array_equal(history[BAD_STEP + 1], history[BAD_STEP])
        close(history, expected)
    if scenario == "skip":
        assert [int(rank["skip/skipped"]) for rank in ranks] == [1, 1]
    else:  # the loss scale halves on both ranks after the overflow
        for rank in ranks:
            assert rank["dynamic/scales"].tolist() == [1024.0] * (BAD_STEP + 1) + [512.0] * (STEPS - BAD_STEP - 1)


@needs_mpi
def test_a_nan_on_one_rank_raises_on_all_and_changes_nothing(ranks: list[dict]) -> None:
    for rank in ranks:
        assert bool(rank["raise/raised"]) and bool(rank["raise/unchanged"])


@needs_mpi
def test_collectives_on_raw_buffers(ranks: list[dict]) -> None:
    for rank in ranks:
        # 60000 + 60000 overflows float16 (max 65504); the mean is taken in float32
        np.testing.assert_array_equal(rank["collectives/half"], np.array([60000, 1.5, -3.75], np.float16))
        np.testing.assert_allclose(rank["collectives/double"], [0.15, -1.5, 7.0], rtol=1e-15)
        np.testing.assert_array_equal(rank["collectives/halfBcast"], np.array([1.5, 0.0], np.float16))
        np.testing.assert_array_equal(rank["collectives/intBcast"], np.arange(5))
        assert float(rank["collectives/meanValue"]) == 0.75
        errors = rank["collectives/errors"].tolist()
        assert len(errors) == 3
        assert "int64" in errors[0] and "not C-contiguous" in errors[1] and "list" in errors[2]
        assert "useGlobalState=True" in str(rank["collectives/localState"])


@needs_mpi
def test_ranks_on_different_backends_raise_on_every_rank(ranks: list[dict]) -> None:
    """No silent fallback: a rank whose backend differs from rank 0's makes every rank raise, naming both."""
    messages = [str(rank["mismatch/message"]) for rank in ranks]
    assert messages[0] == messages[1]
    first = backends.current().name
    other = "numpy" if first != "numpy" else "numba"
    assert messages[0].startswith(f"NodeInfo: the ranks use different array backends (rank 0: {first}, rank 1: "
                                  f"{other}); every rank must use rank 0's '{first}'")


@needs_mpi
def test_the_example_prints_the_same_losses_on_2_ranks_as_on_1() -> None:
    script = str(ROOT / "examples" / "regression.py")
    options = ["--backend", "numpy", "--epochs", "2", "--no-plot"]
    single = communicate([sys.executable, script, *options], mpi_env())
    double = communicate([_mpiexec(), "-n", "2", sys.executable, script, "--distributed", *options], mpi_env())
    assert "2 ranks, 32 rows of every minibatch of 64 each" in double
    finals = [re.findall(r"^final: train loss ([0-9.]+), test loss ([0-9.]+), test R\^2 ([0-9.]+)", out, re.M)
              for out in (single, double)]
    assert len(finals[0]) == 1 and len(finals[1]) == 1, (single, double)  # only rank 0 prints
    (single, double) = (np.array(final[0], float) for final in finals)
    np.testing.assert_allclose(double[:2], single[:2], atol=2e-5)  # losses printed to 5 decimals
    np.testing.assert_allclose(double[2], single[2], atol=2e-4)  # R^2 printed to 4 decimals


# --- the sharding helper (no MPI needed) ------------------------------------------------------------
class _Node:
    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size


def test_shard_batch_gives_each_rank_its_equal_slice() -> None:
    batch = np.arange(12).reshape(6, 2)
    shards = [shardBatch(batch, _Node(rank, 3)) for rank in range(3)]
    np.testing.assert_array_equal(np.concatenate(shards), batch)
    np.testing.assert_array_equal(shards[1], [[4, 5], [6, 7]])
    assert shardBatch(batch, None) is batch


def test_shard_batch_rejects_unequal_shards_and_bad_ranks() -> None:
    with pytest.raises(ValueError, match="7 rows does not split into 2 equal shards"):
        shardBatch(np.zeros((7, 3)), _Node(0, 2))
    with pytest.raises(ValueError, match="rank 2 and size 2"):
        shardBatch(np.zeros((4, 3)), _Node(2, 2))
    with pytest.raises(TypeError, match="batch axis"):
        shardBatch(np.float32(1.0), _Node(0, 2))
