"""Data-parallel failures end the job instead of hanging it, and ranks that disagree refuse to train.

Each scenario starts 2 ranks of tests/mpi_failure_worker.py with ``mpiexec -n 2``, both as ``python script`` and as
``python -m mpi4py script`` (the launch line the README gives), and must finish well within the subprocess limit.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_distributed import _mpiexec, mpi_env, needs_mpi

WORKER = str(Path(__file__).resolve().parent / "mpi_failure_worker.py")
LAUNCHERS = {"python": [], "python-m-mpi4py": ["-m", "mpi4py"]}
LIMIT = 60  # seconds; a hang is what these tests exist to catch


def launch(scenario: str, launcher: str, outDir: Path) -> tuple[int, str, float]:
    command = [_mpiexec(), "-n", "2", sys.executable, *LAUNCHERS[launcher], WORKER, scenario, str(outDir)]
    start = time.monotonic()
    try:
        result = subprocess.run(command, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=LIMIT, start_new_session=True)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{scenario} under {launcher} hung for {LIMIT} s; output:\n{expired.output}")
    return result.returncode, result.stdout, time.monotonic() - start


@needs_mpi
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_an_uncaught_exception_on_one_rank_ends_every_rank_with_its_error(launcher: str, tmp_path: Path) -> None:
    code, output, _ = launch("uncaught", launcher, tmp_path)
    assert code != 0, output
    assert "RuntimeError: rank 1 failed on purpose at step 1" in output


@needs_mpi
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_rank_that_runs_fewer_steps_makes_the_others_abort_at_the_timeout(launcher: str, tmp_path: Path) -> None:
    code, output, seconds = launch("fewer-steps", launcher, tmp_path)
    assert code != 0, output
    assert ("rank 0 of 2: allreduce (gradient mean of the float32 bucket, update 3) did not complete within 3 s "
            "(NodeInfo timeout)") in output, output
    assert seconds > 3  # it waited for the deadline, not less


@needs_mpi
def test_ranks_with_different_shapes_of_the_same_size_all_raise_naming_them(tmp_path: Path) -> None:
    code, output, _ = launch("shapes", "python", tmp_path)
    assert code == 0, output
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1]
    assert "RMSProp.setupOn: the 2 ranks disagree" in messages[0]
    assert "variables '0.W': rank 0: position 0, shape (4, 8), float32; rank 1: position 0, shape (5, 7), float32" \
        in messages[0]
    assert "'2.b'" not in messages[0]  # equal on both ranks: not listed


@needs_mpi
def test_ranks_with_different_learning_rates_all_raise_naming_it(tmp_path: Path) -> None:
    code, output, _ = launch("learn-rate", "python", tmp_path)
    assert code == 0, output
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert messages[0] == messages[1]
    assert "hyperparameters 'learnRate': rank 0: 0.01; rank 1: 0.02" in messages[0], messages[0]


@needs_mpi
@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "60", True])
def test_node_info_rejects_a_timeout_that_cannot_work(timeout: object) -> None:
    from puzzle_rms.distributed import NodeInfo

    with pytest.raises(ValueError, match="NodeInfo: timeout must be a positive finite number of seconds or None"):
        NodeInfo(timeout=timeout)


@needs_mpi
def test_a_world_of_one_has_nothing_to_compare() -> None:
    from puzzle_rms.distributed import NodeInfo

    NodeInfo().checkSame("test", {"variables": {"w": "anything"}})
