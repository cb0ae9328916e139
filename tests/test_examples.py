"""The example scripts reach their stated quality; they run from the command line; README and CI agree."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from puzzle_rms import backends

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI_RUN = ROOT / ".ci" / "run"
sys.path.insert(0, str(ROOT / "examples"))

import classifier  # noqa: E402  (examples/ is not a package: its scripts import each other by file name)
import regression  # noqa: E402

CUPY_REASON = backends.unavailable_reason("cupy")
TEST_COMMAND = 'pip install -e ".[test,mpi]" && python -m pytest -q -rs'
EXTRAS_COMMAND = 'pip install -e ".[cuda-compile-test,hdf5]"'  # CI only: NVRTC and h5py for optional tests
TORCH_COMMAND = 'pip install "torch==2.13.0"'  # CI only: the comparison tests' framework (its CPU wheel is on disk)
TORCH_CPU_COMMAND = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
EXAMPLE_COMMAND = 'pip install -e ".[plot]" && python examples/regression.py'
# The loop of the issue, which must run unchanged apart from the import lines.
ISSUE_SNIPPET = """\
data = gpuarray.to_gpu(np.random.randn(16, 128).astype(np.float32))
target = gpuarray.to_gpu(np.random.randn(16, 1).astype(np.float32))
optimizer = RMSProp(learnRate=0.001, factor=0.9)
optimizer.setupOn(net, useGlobalState=True)
for i in range(100):
    predictions = net(data)
    error, grad = loss(predictions, target)
    optimizer.zeroGradParams()
    net.backward(grad)
    optimizer.update()
"""


def run_script(args: list[str], envValue=None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python args...`` from the repository root with PUZZLE_RMS_BACKEND set to ``envValue`` (None: unset)."""
    env = {key: value for key, value in os.environ.items() if key != backends.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if envValue is not None:
        env[backends.ENV_VAR] = envValue
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          **kwargs)


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (ValueError if it is not a PNG)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# --- the examples learn ---------------------------------------------------------------------------
def test_regression_explains_most_of_the_variance(backend_name):
    """15 epochs: the test-set MSE falls below 10% of the target variance (R^2 > 0.9) and 90% below epoch 1's."""
    metrics = regression.train(backend_name, epochs=15, seed=0, verbose=False)
    assert metrics["backend"] == backend_name
    assert metrics["testR2"] > 0.9
    assert metrics["testLoss"][-1] < 0.1 * metrics["testLoss"][0]
    assert len(metrics["trainLoss"]) == len(metrics["testLoss"]) == 15


def test_classifier_separates_the_iris_species(backend_name):
    """10 epochs: at least 90% of the 30 held-out flowers and of the 120 training flowers classified right."""
    metrics = classifier.train(backend_name, epochs=10, seed=0, verbose=False)
    assert metrics["testAccuracy"][-1] >= 0.9
    assert metrics["trainAccuracy"] >= 0.9
    assert metrics["trainLoss"][-1] < 0.25
    assert len(metrics["testAccuracy"]) == 10


def test_iris_data_is_the_classic_set():
    features, labels = classifier.load_iris()
    assert features.shape == (150, 4) and np.bincount(labels).tolist() == [50, 50, 50]
    # Published summary statistics of the UCI Iris data (min, max, mean per measurement, in cm).
    np.testing.assert_allclose(features.min(axis=0), [4.3, 2.0, 1.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(features.max(axis=0), [7.9, 4.4, 6.9, 2.5], atol=1e-6)
    np.testing.assert_allclose(features.mean(axis=0), [5.843, 3.054, 3.759, 1.199], atol=1e-3)


def test_examples_are_deterministic(backend_name):
    first = regression.train(backend_name, epochs=2, seed=5, verbose=False)
    second = regression.train(backend_name, epochs=2, seed=5, verbose=False)
    assert first["trainLoss"] == second["trainLoss"] and first["testR2"] == second["testR2"]
    other = regression.train(backend_name, epochs=2, seed=6, verbose=False)
    assert other["trainLoss"] != first["trainLoss"]


def test_regression_rejects_ranks_that_do_not_split_the_data():
    """gcd(64, 1600, 400) = 16: 3 ranks cannot share minibatches of 64, 32 ranks not the 400 test rows."""
    for size in (3, 32):
        with pytest.raises(ValueError, match=f"nodeinfo has {size} ranks.*divides 16"):
            regression.train("numpy", epochs=1, verbose=False, nodeinfo=types.SimpleNamespace(rank=0, size=size))


# --- the scripts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("script", ["regression", "classifier"])
def test_script_runs_and_plots(tmp_path, script):
    plot = tmp_path / f"{script}.png"
    result = run_script([f"examples/{script}.py", "--backend", "numpy", "--epochs", "2", "--plot", str(plot)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "backend: numpy (--backend numpy)"
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert any(line.startswith("final:") for line in lines)
    if has_matplotlib():
        assert png_size(plot) == (1600, 1000)  # 8 x 5 inches at 200 dpi
    else:
        assert not plot.exists() and "matplotlib is not installed" in result.stdout


@pytest.mark.parametrize("script", ["regression", "classifier"])
def test_script_honours_the_environment_variable(script):
    result = run_script([f"examples/{script}.py", "--epochs", "1", "--no-plot"], envValue="numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backend: numpy (PUZZLE_RMS_BACKEND=numpy)\n")
    assert "loss curve written" not in result.stdout


def test_backend_option_overrides_the_environment_variable():
    if backends.unavailable_reason("numba") is not None:
        pytest.skip("numba is not installed")
    result = run_script(["examples/regression.py", "--backend", "numba", "--epochs", "1", "--no-plot"],
                        envValue="numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("backend: numba (--backend numba)\n")


@pytest.mark.skipif(CUPY_REASON is None, reason="CuPy and a CUDA device are usable here")
def test_script_with_an_unusable_backend_exits_with_the_reason():
    result = run_script(["examples/regression.py", "--backend", "cupy", "--epochs", "1", "--no-plot"])
    assert result.returncode == 2
    assert "error: backend 'cupy' is not usable here" in result.stderr and CUPY_REASON in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value, hint", [("nmuba", "did you mean 'numba'?"), ("cuda", "did you mean 'cupy'?")])
def test_script_with_a_mistyped_environment_variable_says_so_in_one_line(value, hint):
    result = run_script(["examples/regression.py", "--epochs", "1", "--no-plot"], envValue=value)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: unknown backend {value!r} in the environment variable PUZZLE_RMS_BACKEND")
    assert hint in result.stderr and len(result.stderr.splitlines()) == 1


def test_script_rejects_unknown_backend_and_bad_epochs():
    result = run_script(["examples/regression.py", "--backend", "tpu"])
    assert result.returncode == 2 and "invalid choice: 'tpu'" in result.stderr
    result = run_script(["examples/classifier.py", "--epochs", "0"])
    assert result.returncode == 2 and "must be a positive integer, got 0" in result.stderr


# --- README and CI ----------------------------------------------------------------------------------
def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_gives_the_two_setup_commands():
    commands = [line for block in code_blocks("bash") for line in block.splitlines()]
    assert EXAMPLE_COMMAND in commands
    assert TEST_COMMAND in commands


def test_ci_runs_exactly_the_readme_test_command():
    """After installing the test-only NVRTC extra (tests/test_cuda_kernels_on_host.py compiles with it)."""
    text = CI_RUN.read_text()
    assert CI_RUN.stat().st_mode & stat.S_IXUSR, ".ci/run must be executable"
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    commands = [line for line in text.splitlines() if line and not line.startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert commands == [TORCH_COMMAND, EXTRAS_COMMAND, TEST_COMMAND]


def test_readme_test_command_installs_no_torch_and_says_how_to_get_its_cpu_build():
    assert "torch" not in TEST_COMMAND and "compare" not in TEST_COMMAND
    assert TORCH_CPU_COMMAND in README


def test_readme_links_resolve_and_reference_pages_link_back():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    linked = set()
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.name} links to {target}, which does not exist"
            linked.add(path)
    for name in ("options", "presets", "ops", "checkpoints", "data-parallel", "benchmark"):  # the reference pages
        page = ROOT / "docs" / f"{name}.md"
        assert page.resolve() in linked, f"the README does not link to {page.name}"
        assert "[Back to the README](../README.md)" in page.read_text()


def test_readme_quick_start_runs():
    code = re.search(r"```python\n(.*?)```", README.split("## Quick start", 1)[1], flags=re.S).group(1)
    assert ISSUE_SNIPPET in code
    result = run_script(["-c", code], envValue="numpy")
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"loss after 100 steps: (\S+)\n", result.stdout)
    # real PuzzleLib 1.0.2 prints the same from the same seed (tests/goldens/puzzlelib/script_docs_rmsprop.json)
    puzzlelib = json.loads((ROOT / "tests/goldens/puzzlelib/script_docs_rmsprop.json").read_text())["losses"][-1]
    assert match and match.group(1) == f"{puzzlelib:.4f}"


# --- on a GPU -------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_regression_example_on_cupy():
    previous = backends.current().name
    try:
        metrics = regression.train("cupy", epochs=15, seed=0, verbose=False)
        assert metrics["backend"] == "cupy" and metrics["testR2"] > 0.9
        assert classifier.train("cupy", epochs=10, seed=0, verbose=False)["testAccuracy"][-1] >= 0.9
    finally:
        backends.use(previous)


@pytest.mark.gpu
def test_scripts_run_on_cupy(tmp_path):
    for script in ("regression", "classifier"):
        result = run_script([f"examples/{script}.py", "--backend", "cupy", "--epochs", "1", "--no-plot"])
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("backend: cupy (--backend cupy)\n")
