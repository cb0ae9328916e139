"""``python -m puzzle_rms.bench`` at tiny sizes: what it reports, and that the steps it times compute RMSProp.

No timing is asserted: only the structure of the report and the numbers the timed steps produce.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from rmsprop_reference import rmsprop_reference

from puzzle_rms import backends
from puzzle_rms.bench import cases, cli, goals, runner, startup

CPU_BACKENDS = [name for name in ("numpy", "numba") if backends.unavailable_reason(name) is None]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def centered_momentum_reference(weights: list[np.ndarray], grads: list[np.ndarray], steps: int,
                                lr: float, rho: float, eps: float, mu: float) -> list[np.ndarray]:
    """PyTorch's centered RMSprop with momentum (lr outside the buffer, eps outside the root), float64."""
    out = []
    for w, g in zip(weights, grads):
        w, g = w.astype(np.float64), g.astype(np.float64)
        ms, mg, mom = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
        for _ in range(steps):
            ms = rho * ms + (1 - rho) * g * g
            mg = rho * mg + (1 - rho) * g
            mom = mu * mom + g / (np.sqrt(ms - mg * mg) + eps)
            w = w - lr * mom
        out.append(w)
    return out


def expected_weights(arrays: list[tuple[np.ndarray, np.ndarray]], steps: int, variant: str) -> np.ndarray:
    weights, grads = [w for w, _ in arrays], [g for _, g in arrays]
    if variant == "plain":
        want, _ = rmsprop_reference(weights, [grads] * steps, [1e-3] * steps, 0.9, 1e-5, False)
    else:
        want = centered_momentum_reference(weights, grads, steps, 1e-3, 0.9, 1e-5, 0.9)
    return np.concatenate([w.reshape(-1) for w in want])


def test_the_benchmarked_step_is_torch_rmsprop():
    """The hyperparameters every row uses are the ones the references below assume."""
    assert (cases.LEARN_RATE, cases.FACTOR, cases.EPSILON, cases.MOMENTUM) == (1e-3, 0.9, 1e-5, 0.9)
    assert cases.rmsprop_options("centered-momentum") == {"learnRate": 1e-3, "factor": 0.9, "epsilon": 1e-5,
                                                          "centered": True, "momentum": 0.9, "lrInMomentum": False}


@pytest.mark.parametrize("variant", cases.VARIANTS)
def test_timed_steps_match_a_numpy_reference(variant):
    """After timing, every optimizer the benchmark stepped (raw kernel, global, local and flat state, each backend)
    and its naive NumPy step hold the weights of as many reference RMSProp steps."""
    case = cases.Case("5x37", variant, 5, 37)
    result = runner.run_case(case, CPU_BACKENDS, None, repeat=2, warmup=1, minTime=0.0, naive=True, seed=4,
                            progress=lambda text: None)
    subjects = {id(row.subject): row.subject for row in result.rows if row.subject is not None}
    assert len(subjects) == 3 * len(CPU_BACKENDS) + 1  # global, local and flat state per backend; naive NumPy
    arrays = cases.case_arrays(case, seed=4)
    for subject in subjects.values():
        assert subject.steps >= 4  # warm-up, calibration and two rounds
        got = np.concatenate(subject.weights())
        np.testing.assert_allclose(got, expected_weights(arrays, subject.steps, variant), rtol=1e-5, atol=1e-6)


def test_case_sizes_and_bytes():
    plain = cases.Case("16M", "plain", 1, 16 << 20)
    centered = cases.Case("2000x100", "centered-momentum", 2000, 100)
    half = cases.Case("fp16-16M", "plain", 1, 16 << 20, dtype="float16")
    assert (plain.params, plain.bytesPerParam) == (16 << 20, 20)  # w read+write, g read, ms read+write, 4 B each
    assert (centered.params, centered.bytesPerParam) == (200_000, 36)  # and mg, mom read+write
    assert half.bytesPerParam == 2 + 2 + 2 + 4 + 4  # float16 w and g, float32 ms
    assert [cli.parse_size(text) for text in ("4K", "16M", "1000")] == [4096, 16 << 20, 1000]
    assert cli.parse_shape("2000x100") == (2000, 100)


@pytest.mark.parametrize("argv", [["--sizes", "0"], ["--tensors", "2000"], ["--backends", "fortran"],
                                  ["--variants", "nesterov"], ["--repeat", "0"]])
def test_bad_options_are_rejected_naming_the_value(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse_args(argv)
    assert stop.value.code == 2
    assert argv[1] in capsys.readouterr().err


def test_main_writes_every_case_to_json(tmp_path):
    path = tmp_path / "bench.json"
    status = cli.main(["--tiny", "--no-torch", "--no-startup", "--quiet", "--repeat", "2",
                         "--backends", ",".join(CPU_BACKENDS), "--json", str(path)])
    assert status == 0
    report = json.loads(path.read_text())
    assert {"date", "cpu", "nproc", "numpy"} <= set(report["machine"])
    names = [(case["name"], case["variant"]) for case in report["cases"]]
    plain, centered = cases.VARIANTS
    assert names == [("4K", plain), ("4K", centered), ("8x64", plain), ("32x16", plain), ("8x64", centered),
                     ("32x16", centered), ("fp16-4K", plain), ("fp16-4K", centered), ("embedding", plain),
                     ("embedding", centered), ("mlp16-b8", plain)]
    for case in report["cases"]:
        if case["family"] == "train":
            assert [(r["backend"], r["kind"], r["state"]) for r in case["rows"]] == [
                (name, "train", "global") for name in CPU_BACKENDS]
            assert case["params"] == 256 * 16 + 16 + 16 * 16 + 16 + 16 + 1 and case["speedups"] == []
            for row in case["rows"]:
                assert set(row["phasesMs"]) == {"forward", "backward", "update"}
                assert 0 < sum(row["phasesMs"].values()) <= row["maxMs"] * 1.5  # the phases are parts of the step
            continue
        if case["family"] == "fp16":
            assert case["rows"] == []
            assert case["notes"][0].startswith("skipped: float16 parameters are timed on the GPU")
            continue
        kinds = {(row["backend"], row["kind"], row["state"], row["nonFinite"]) for row in case["rows"]}
        for name in CPU_BACKENDS:
            assert (name, "update", "global", "ignore") in kinds
            if case["family"] != "sparse":
                assert {(name, "kernel", "global", "-"), (name, "update", "global", "raise")} <= kinds
        if case["family"] == "multi":
            assert all((name, "update", state, policy) in kinds for name in CPU_BACKENDS for state in ("local", "flat")
                       for policy in ("ignore", "raise"))
        for row in case["rows"]:
            assert 0 < row["minMs"] <= row["medianMs"] <= row["maxMs"]
            assert row["gbps"] > 0 and row["callsPerRound"] >= 1
            if "numba" in CPU_BACKENDS and case["family"] != "sparse" and row["kind"] != "probe":
                assert row["ofProbe"] == pytest.approx(_probe(case)["medianMs"] / row["medianMs"])
        assert any(s["baseline"].startswith("naive numpy") for s in case["speedups"])
        for s in case["speedups"]:
            base = next(r for r in case["rows"]
                        if r["label"] == s["baseline"] and r["backend"] == s["baselineBackend"])
            row = next(r for r in case["rows"] if r["label"] == s["row"] and r["backend"] == s["backend"])
            assert s["ratio"] == pytest.approx(base["medianMs"] / row["medianMs"])


def test_state_case_times_every_state_dtype_and_runs_the_quality_check(tmp_path):
    path = tmp_path / "bench.json"
    status = cli.main(["--tiny", "--cases", "state", "--no-torch", "--quiet", "--repeat", "2",
                       "--backends", ",".join(CPU_BACKENDS), "--json", str(path)])
    assert status == 0
    report = json.loads(path.read_text())
    assert report["cases"] == []
    timing, quality = report["state"]["timing"], report["state"]["quality"]
    assert [(r["backend"], r["stateDtype"]) for r in timing] == [(b, d) for b in CPU_BACKENDS
                                                                 for d in ("float32", "bfloat16", "int8")]
    for r in timing:
        base = next(x for x in timing if x["backend"] == r["backend"] and x["stateDtype"] == "float32")
        assert r["speedup"] == pytest.approx(base["medianMs"] / r["medianMs"]) and r["size"] == 4096
    assert [q["stateDtype"] for q in quality] == ["float32", "bfloat16", "int8"]
    assert all(q["loss"] > 0 and abs(q["relative"]) < 0.05 for q in quality)


def _probe(case: dict) -> dict:
    return next(row for row in case["rows"] if row["kind"] == "probe")


def test_command_line_prints_a_table_per_case_and_progress():
    """The module runs as its own process (torch, when installed, is imported before numba there)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "puzzle_rms.bench", "--tiny", "--cases", "single", "--variants",
                           "plain", "--no-startup", "--repeat", "2"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== 4K: plain, 4,096 float32 parameters in 1 tensor, 20 B/param ==" in out
    for label in ("RMSProp.update, global state, nonFinite=raise", "RMSProp.update, global state, nonFinite=ignore",
                  "raw kernel (Backend.rmsprop_update)", "naive numpy (textbook, temporaries)"):
        assert label in out
    if "numba" in CPU_BACKENDS:
        assert "probe: fused 3 reads + 2 writes (numba)" in out
    if importlib.util.find_spec("torch") is not None:
        assert "torch.optim.RMSprop foreach=True (cpu)" in out and "torch.optim.RMSprop foreach=False (cpu)" in out
    else:
        assert "no torch rows: torch is not installed" in out
    assert "[1/1] 4K plain" in done.stderr and "round 2/2" in done.stderr


def test_importing_the_benchmark_starts_neither_numba_nor_torch():
    """``main`` imports torch before any backend can start Numba's threads: no module may import either first."""
    script = ("import importlib, pkgutil, sys\n"
              "import puzzle_rms.bench as package\n"
              "names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != '__main__']\n"
              "for name in names:\n"
              "    importlib.import_module('puzzle_rms.bench.' + name)\n"
              "print(' '.join(names))\n"
              "print(sorted(m for m in ('numba', 'torch', 'cupy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names, started = done.stdout.splitlines()
    assert {"cli", "library_rows", "probes", "runner", "startup"} <= set(names.split())  # __main__ runs the benchmark
    assert started == "[]"


def test_goals_are_checked_on_the_global_state_rows_of_the_cases_that_ran():
    """A goal is met when the row's value reaches its threshold; goals of cases or backends absent are skipped."""
    update = {"device": "cpu", "backend": "numba", "kind": "update", "state": "global", "label": "update"}
    ran = [{"name": "16M", "variant": "plain", "rows": [dict(update, ofProbe=0.95)],
            "speedups": [{"backend": "numba", "row": "update", "baseline": "torch.optim.RMSprop foreach=True (cpu)",
                          "ratio": 5.9},
                         {"backend": "numba", "row": "update", "baseline": "naive numpy (textbook, temporaries)",
                          "ratio": 8.5}]},
           {"name": "2000x100", "variant": "plain", "rows": [dict(update, label="local", state="local")],
            "speedups": []}]
    checks = goals.goal_checks(ran)
    assert [(c["case"], c["what"], c["value"], c["threshold"], c["met"]) for c in checks] == [
        ("16M", "ofProbe", 0.95, 0.9, True),
        ("16M", "torch.optim.RMSprop foreach=True (cpu)", 5.9, 6.0, False),
        ("16M", "naive numpy (textbook, temporaries)", 8.5, 8.0, True)]
    text = goals.format_goals(checks)
    assert text.splitlines()[0] == "== benchmark goals =="
    assert "  MISSED 16M plain numba update: 5.90 (goal >= 6.00) x faster than torch" in text


@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="numba is not installed")
def test_numba_start_up_runs_a_cold_and_a_warm_process():
    measured = startup.numba_startup()
    assert set(measured) == {"cold", "warm"}
    for run in measured.values():
        assert set(run["firstUpdateSeconds"]) == {"small", "large"}
        assert 0 < run["importSeconds"] < run["totalSeconds"]
        assert all(0 < seconds < run["totalSeconds"] for seconds in run["firstUpdateSeconds"].values())
    assert "cold (empty cache, compiles)" in startup.format_startup(measured)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed (pip install torch)")
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_train_case_steps_the_same_network_as_torch(backend):
    """The train case's two steps train the same MLP: after five steps from the same weights on the same batches,
    the losses and every weight agree with torch's (float32, different summation orders)."""
    import torch

    from puzzle_rms.bench import train

    step, net, _ = train.puzzle_step(backend, 8, 6, seed=2)
    torchStep, torchNet, _ = train.torch_step(torch, 8, 6, seed=2)
    for _ in range(5):
        np.testing.assert_allclose(step(), torchStep(), rtol=1e-5)
    linears = [module for module in torchNet if isinstance(module, torch.nn.Linear)]
    for i, linear in zip((0, 2, 4), linears):
        np.testing.assert_allclose(backends.current().to_host(net[i].W), linear.weight.detach().numpy().T,
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(backends.current().to_host(net[i].b), linear.bias.detach().numpy(),
                                   rtol=1e-4, atol=1e-6)
