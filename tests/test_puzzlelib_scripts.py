"""examples/puzzlelib/: scripts written in PuzzleLib's API give real PuzzleLib's numbers from the same seed.

Each script seeds ``np.random`` as the PuzzleLib run did and builds its network with PuzzleLib's default
initialisation, so the initial weights must equal the golden's bit for bit; then losses and final weights
are compared at float32 tolerances (tests/goldens/puzzlelib/, written by tools/puzzlelib_goldens/generate.py).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import puzzlelib_golden as golden

from puzzle_rms import backends

SCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "puzzlelib"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"puzzlelib_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_same_weights(got: dict, recorded: dict, atol: float = 0.0) -> None:
    assert sorted(got) == sorted(recorded)
    for name, value in got.items():
        if atol == 0:
            np.testing.assert_array_equal(value, golden.array(recorded[name]), err_msg=name)
        else:
            np.testing.assert_allclose(value, golden.array(recorded[name]), atol=atol, err_msg=name)


def test_docs_loop_gives_puzzlelibs_losses_step_by_step_from_the_seed(every_backend):
    recorded = golden.load("script_docs_rmsprop")
    result = script("docs_rmsprop").run()
    assert_same_weights(result["initialWeights"], recorded["initialWeights"])
    np.testing.assert_allclose(result["losses"], recorded["losses"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(result["losses"][:20], recorded["losses"][:20], rtol=1e-4)
    assert_same_weights(result["finalWeights"], recorded["finalWeights"], atol=1e-4)


def test_train_simple_network_gives_puzzlelibs_losses_from_the_seed(every_backend):
    """Steps 1-40 at rtol 1e-4, 41-80 at 1e-2: learnRate=1e-2 amplifies float32 rounding (see
    test_puzzlelib_goldens.test_train_simple_test_network_gives_puzzlelibs_losses)."""
    recorded = golden.load("script_train_simple")
    result = script("train_simple").run(steps=80)
    assert_same_weights(result["initialWeights"], recorded["initialWeights"])
    np.testing.assert_allclose(result["losses"][:40], recorded["losses"][:40], rtol=1e-4)
    np.testing.assert_allclose(result["losses"][40:80], recorded["losses"][40:80], rtol=1e-2)


def test_graph_and_sequential_with_replicate_and_concat_give_puzzlelibs_losses(every_backend):
    """The Graph matches all 60 steps at rtol 1e-4. The Sequential's run turns unstable after step 45 (PuzzleLib's
    own loss rises at steps 48-51), where the relative difference between two float32 summation orders grows
    from 3e-6 (step 46) to 3e-2 (step 51): steps 1-45 are compared at rtol 1e-5, 46-60 at rtol 1e-1."""
    recorded = golden.load("script_graph_replicate_concat")
    result = script("graph_replicate_concat").run()
    for key in ("graph", "sequential"):
        assert_same_weights(result[key]["initialWeights"], recorded[key]["initialWeights"])
    np.testing.assert_allclose(result["graph"]["losses"], recorded["graph"]["losses"], rtol=1e-4)
    # RMSProp steps are lr * g / sqrt(ms): near-zero gradients turn float32 rounding into ~1e-5 differences
    assert_same_weights(result["graph"]["finalWeights"], recorded["graph"]["finalWeights"], atol=1e-4)
    optimizer, state = result["graph"]["optimizer"], recorded["graph"]["optimizer"]
    assert optimizer.t == state["t"]
    flat = np.concatenate([backends.current().to_host(optimizer.stateOf(name)["ms"]).ravel()
                           for name in state["globalStateOrder"]])  # PuzzleLib packs variables sorted by name
    np.testing.assert_allclose(flat, golden.array(state["msFlat"]), rtol=1e-3, atol=1e-9)
    losses, want = result["sequential"]["losses"], recorded["sequential"]["losses"]
    np.testing.assert_allclose(losses[:45], want[:45], rtol=1e-5)
    np.testing.assert_allclose(losses[45:], want[45:], rtol=1e-1)


def test_cross_entropy_classifier_gives_puzzlelibs_losses_and_validation(every_backend):
    recorded = golden.load("script_classifier_ce")
    result = script("classifier_ce").run()
    assert_same_weights(result["initialWeights"], recorded["initialWeights"])
    np.testing.assert_allclose(result["losses"], recorded["losses"], rtol=1e-4, atol=1e-5)
    assert_same_weights(result["finalWeights"], recorded["finalWeights"], atol=1e-5)
    assert result["validate"] == pytest.approx(recorded["validate"], rel=1e-6)
    assert result["meanError"] == pytest.approx(recorded["getMeanErrorOver80Steps"], rel=1e-5)
    attrs = result["optimizer"].getAttrDict()
    assert attrs == pytest.approx(recorded["optimizer"]["attrs"])
    for key, value in recorded["optimizer"]["state"].items():
        name, buffer = key.rsplit(".", 1)
        np.testing.assert_allclose(backends.current().to_host(result["optimizer"].stateOf(name)[buffer]),
                                   golden.array(value), rtol=1e-4, atol=1e-7)
