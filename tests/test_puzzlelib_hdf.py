"""PuzzleLib's HDF5 files: files written by real PuzzleLib load here with its values; ours have its layout.

The .hdf fixtures and the expected numbers in tests/goldens/puzzlelib/ were both written by real
PuzzleLib 1.0.2 (tools/puzzlelib_goldens/generate.py): the model and optimizer files after training,
and the same weights and optimizer state printed to JSON.
"""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install -e '.[hdf5]')")

import puzzlelib_golden as golden  # noqa: E402

from puzzle_rms.checkpoint import CheckpointError, CheckpointMismatchError  # noqa: E402
from puzzle_rms.containers import Sequential  # noqa: E402
from puzzle_rms.modules import Activation, Linear, relu  # noqa: E402
from puzzle_rms.optimizers import SGD, RMSProp  # noqa: E402
from puzzle_rms.variable import Variable  # noqa: E402

FLAT_MS = f"{np.float32}.ms"  # PuzzleLib's key for a global-state buffer: "<class 'numpy.float32'>.ms"


def classifier() -> Sequential:
    net = Sequential()
    net.extend([Linear(4, 16), Activation(relu), Linear(16, 3)])
    return net


def host(x) -> np.ndarray:
    return np.asarray(x.get() if hasattr(x, "get") else x)


def test_puzzlelib_model_file_loads_with_its_values(backend_name):
    expected = golden.load("script_classifier_ce")["finalWeights"]
    net = classifier()
    net.load(str(golden.path("classifier_model.hdf")))
    table = net.namedVariables()
    assert sorted(table) == sorted(expected)
    for name, var in table.items():
        np.testing.assert_array_equal(host(var.data), golden.array(expected[name]))


@pytest.mark.parametrize("useGlobalState", [False, True])
def test_puzzlelib_optimizer_file_loads_its_state_and_step(backend_name, useGlobalState):
    recorded = golden.load("script_classifier_ce")["optimizer"]
    net = classifier()
    optimizer = RMSProp(learnRate=0.01)
    optimizer.setupOn(net, useGlobalState=useGlobalState)
    optimizer.load(str(golden.path("classifier_rmsprop.hdf")))
    assert optimizer.t == recorded["t"] == 80
    for name, _ in optimizer.variables():
        np.testing.assert_array_equal(host(optimizer.stateOf(name)["ms"]), golden.array(recorded["state"][f"{name}.ms"]))


def test_puzzlelib_graph_files_with_nested_names_and_a_global_state_buffer(backend_name):
    script = golden.load("script_graph_replicate_concat")["graph"]
    final = script["finalWeights"]
    params = {name: Variable(np.zeros(golden.array(entry).shape, np.float32), name=name) for name, entry in final.items()}
    from puzzle_rms import puzzlelib_hdf

    puzzlelib_hdf.loadModule(str(golden.path("graph_model.hdf")), params)
    for name, var in params.items():
        np.testing.assert_array_equal(host(var.data), golden.array(final[name]))

    optimizer = RMSProp(learnRate=0.01)
    optimizer.setupOn(params, useGlobalState=True)
    optimizer.load(str(golden.path("graph_rmsprop_global.hdf")))
    flat, offset = golden.array(script["optimizer"]["msFlat"]), 0
    assert script["optimizer"]["globalStateOrder"] == sorted(final)
    for name in script["optimizer"]["globalStateOrder"]:
        size = params[name].data.size
        np.testing.assert_array_equal(host(optimizer.stateOf(name)["ms"]).ravel(), flat[offset:offset + size])
        offset += size
    assert offset == flat.size and optimizer.t == script["optimizer"]["t"]


def test_written_files_have_puzzlelib_layout_and_round_trip(tmp_path, backend_name):
    np.random.seed(1)
    net = classifier()
    optimizer = RMSProp(learnRate=0.01)
    optimizer.setupOn(net, useGlobalState=True)
    ms = {name: np.random.rand(*var.data.shape).astype(np.float32) for name, var in optimizer.variables()}
    for name, value in ms.items():
        optimizer.stateOf(name)["ms"][...] = value
    optimizer.t = 7
    net.save(tmp_path / "net.hdf")
    optimizer.save(tmp_path / "opt.h5")

    with h5py.File(tmp_path / "net.hdf", "r") as hdf:
        links = {name: int(hdf["links"][name][()]) for name in hdf["links"]}
        assert sorted(links) == [".0.W", ".0.b", ".2.W", ".2.b"]
        for name, var in net.namedVariables().items():
            np.testing.assert_array_equal(hdf["params"][str(links["." + name])][()], host(var.data))
    with h5py.File(tmp_path / "opt.h5", "r") as hdf:
        assert {name: hdf[".attrs"][name][()] for name in hdf[".attrs"]} == {
            "t": 7, "learnRate": 0.01, "factor": 0.9, "epsilon": 1e-5}
        for name, value in ms.items():
            np.testing.assert_array_equal(hdf[".states"][f"{name}.ms"][()], value)
        flat = np.concatenate([ms[name].ravel() for name in sorted(ms)])
        np.testing.assert_array_equal(hdf[".states"][FLAT_MS][()], flat)

    other, otherOptimizer = classifier(), RMSProp(learnRate=0.01)
    otherOptimizer.setupOn(other, useGlobalState=False)
    other.load(tmp_path / "net.hdf")
    otherOptimizer.load(tmp_path / "opt.h5")
    assert otherOptimizer.t == 7
    for name, var in net.namedVariables().items():
        np.testing.assert_array_equal(host(other.getVar(name).data), host(var.data))
        np.testing.assert_array_equal(host(otherOptimizer.stateOf(name)["ms"]), ms[name])


def test_centered_momentum_is_stored_as_graves_delta_with_puzzlelib_sign(tmp_path):
    w = Variable(np.ones(3, np.float32), name="W")
    optimizer = RMSProp(learnRate=0.01, factor=0.95, epsilon=1e-4, centered=True, momentum=0.9)
    optimizer.setupOn({"W": w})
    state = optimizer.stateOf("W")
    state["ms"][...], state["mg"][...], state["mom"][...] = [1.0, 2.0, 3.0], [0.5, -0.5, 0.25], [0.1, -0.2, 0.3]
    optimizer.save(tmp_path / "graves.hdf")
    with h5py.File(tmp_path / "graves.hdf", "r") as hdf:
        states = hdf[".states"]
        np.testing.assert_array_equal(states["W.ms"][()], np.float32([1.0, 2.0, 3.0]))
        np.testing.assert_array_equal(states["W.mg"][()], -np.float32([0.5, -0.5, 0.25]))
        np.testing.assert_array_equal(states["W.delta"][()], -np.float32([0.1, -0.2, 0.3]))
        assert {name: float(hdf[".attrs"][name][()]) for name in hdf[".attrs"]} == {
            "t": 0.0, "learnRate": 0.01, "alpha": 0.95, "epsilon": 1e-4, "momRate": 0.9}
    fresh = RMSProp(learnRate=0.01, factor=0.95, epsilon=1e-4, centered=True, momentum=0.9)
    fresh.setupOn({"W": Variable(np.ones(3, np.float32), name="W")})
    fresh.load(tmp_path / "graves.hdf")
    np.testing.assert_array_equal(host(fresh.stateOf("W")["mom"]), np.float32([0.1, -0.2, 0.3]))
    np.testing.assert_array_equal(host(fresh.stateOf("W")["mg"]), np.float32([0.5, -0.5, 0.25]))


def test_mismatching_model_is_refused_and_left_untouched():
    net = Sequential()
    net.extend([Linear(4, 8), Activation(relu), Linear(8, 3)])
    before = {name: host(var.data).copy() for name, var in net.namedVariables().items()}
    with pytest.raises(CheckpointMismatchError) as caught:
        net.load(golden.path("classifier_model.hdf"))
    assert "parameter '0.W': shape (4, 16) in the file, (4, 8) here" in str(caught.value)
    for name, var in net.namedVariables().items():
        np.testing.assert_array_equal(host(var.data), before[name])


def test_optimizer_hyperparameters_are_checked_unless_kept():
    net = classifier()
    optimizer = RMSProp(learnRate=0.02)
    optimizer.setupOn(net)
    with pytest.raises(CheckpointMismatchError, match=r"hyperparameter learnRate: 0.01 in the file, 0.02"):
        optimizer.load(golden.path("classifier_rmsprop.hdf"))
    assert optimizer.t == 0 and not np.any(host(optimizer.stateOf("0.W")["ms"]))
    optimizer.load(golden.path("classifier_rmsprop.hdf"), hyperparameters="keep")
    assert optimizer.t == 80 and optimizer.learnRate == 0.02


def test_non_numeric_datasets_are_refused_unread(tmp_path):
    with h5py.File(tmp_path / "evil.hdf", "w") as hdf:
        hdf.create_group("params").create_dataset("0", data="import os", dtype=h5py.string_dtype())
        hdf.create_group("links").create_dataset(".W", data=np.int64(0))
    w = Variable(np.ones((2, 2), np.float32), name="W")
    with pytest.raises(CheckpointError, match="params/0 holds dtype object, expected a numeric dataset"):
        from puzzle_rms import puzzlelib_hdf

        puzzlelib_hdf.loadModule(tmp_path / "evil.hdf", {"W": w})
    np.testing.assert_array_equal(host(w.data), np.ones((2, 2), np.float32))


def test_missing_h5py_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'needs h5py, which is not installed: pip install "puzzle_rms\[hdf5\]"'):
        classifier().save(tmp_path / "net.hdf")
    assert not (tmp_path / "net.hdf").exists()


def test_sgd_without_state_round_trips_its_step(tmp_path):
    w = Variable(np.ones(2, np.float32), name="W")
    optimizer = SGD(learnRate=0.5)
    optimizer.setupOn({"W": w})
    optimizer.t = 3
    optimizer.save(tmp_path / "sgd.hdf")
    fresh = SGD(learnRate=0.5)
    fresh.setupOn({"W": Variable(np.ones(2, np.float32), name="W")})
    fresh.load(tmp_path / "sgd.hdf")
    assert fresh.t == 3


def test_non_checkpoint_files_get_no_allow_pickle_advice(tmp_path):
    (tmp_path / "notes.npz").write_bytes(b"not a checkpoint at all")
    shutil.copy(golden.path("classifier_model.hdf"), tmp_path / "model.npz")
    net = classifier()
    with pytest.raises(CheckpointError) as plain:
        net.load(tmp_path / "notes.npz")
    with pytest.raises(CheckpointError) as hdf:
        net.load(tmp_path / "model.npz")
    for error in (plain.value, hdf.value):
        assert "allow_pickle" not in str(error) and "pickle.load" not in str(error)
    assert "is not a puzzle_rms checkpoint (an .npz zip archive): File is not a zip file" in str(plain.value)
    assert "it is an HDF5 file; PuzzleLib's HDF5 files load from a path ending in .hdf" in str(hdf.value)
    with pytest.raises(CheckpointError, match="is not an HDF5 file"):
        net.load(shutil.copy(tmp_path / "notes.npz", tmp_path / "notes.hdf"))


def test_buffers_puzzlelib_has_no_place_for_are_refused_before_writing(tmp_path):
    optimizer = RMSProp(masterWeights=True)
    optimizer.setupOn({"W": Variable(np.ones(2, np.float16), name="W")})
    with pytest.raises(ValueError, match="keeps a 'master' buffer, which PuzzleLib's format has no place for"):
        optimizer.save(tmp_path / "opt.hdf")
    assert list(tmp_path.iterdir()) == []
