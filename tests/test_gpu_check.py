"""``python -m puzzle_rms.gpu_check`` where no GPU is usable: it says why and fails, running nothing."""
from __future__ import annotations

import pytest

from puzzle_rms import backends, gpu_check


@pytest.mark.skipif(backends.unavailable_reason("cupy") is None, reason="a GPU is usable here")
def test_gpu_check_without_a_gpu_says_why(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "run_tests", lambda: pytest.fail("ran the tests without a GPU"))
    assert gpu_check.main() == 1
    assert capsys.readouterr().out.strip() == (f"GPU check: the cupy backend is not usable here: "
                                               f"{backends.unavailable_reason('cupy')}")
