"""The handwritten-digits example: its data are the UCI set, it reaches 97% on the test images, the script runs."""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import digits  # noqa: E402  (examples/ is not a package)
from example_support import ProgressBar  # noqa: E402
from test_examples import has_matplotlib, png_size, run_script  # noqa: E402


def test_data_are_the_uci_test_set():
    """1,797 images of 64 pixel counts in 0..16; per digit the counts UCI lists for optdigits.tes."""
    pixels, labels = digits.load_digits()
    assert pixels.shape == (1797, 64) and pixels.dtype == np.float32 and labels.dtype == np.int64
    assert pixels.min() == 0 and pixels.max() == 16 and np.array_equal(pixels, np.round(pixels))
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    recorded = (ROOT / "examples" / "data" / "digits.LICENSE.md").read_text()
    assert hashlib.sha256(digits.DATA.read_bytes()).hexdigest() in recorded and "CC BY 4.0" in recorded


def test_mlp_reaches_97_percent_on_the_test_images(backend_name):
    metrics = digits.train(backend_name, epochs=20, seed=0, verbose=False)
    assert metrics["backend"] == backend_name
    assert metrics["testAccuracy"] >= 0.97
    assert metrics["validationAccuracy"][-1] >= 0.95 and metrics["trainAccuracy"][-1] >= 0.99
    assert all(len(metrics[key]) == 20 for key in ("trainLoss", "trainAccuracy", "validationLoss",
                                                   "validationAccuracy"))
    wrong = metrics["misclassified"]
    assert len(wrong) == round((1 - metrics["testAccuracy"]) * 360)
    assert all(image.shape == (8, 8) and true != guess for image, true, guess in wrong)


def test_script_shows_a_bar_and_metrics_per_epoch_and_plots(tmp_path):
    plot = tmp_path / "digits.png"
    result = run_script(["examples/digits.py", "--backend", "numpy", "--epochs", "2", "--plot", str(plot)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "backend: numpy (--backend numpy)"
    assert lines[1] == "1257 training, 180 validation and 360 test images, 17226 parameters"
    for epoch in (1, 2):
        assert lines[1 + epoch].startswith(f"epoch   {epoch}/2 [{'#' * 30}] 40/40  train loss ")
        assert "validation loss" in lines[1 + epoch]
    assert lines[4].startswith("final: test accuracy ")
    if has_matplotlib():
        assert png_size(plot) == (2800, 1000)  # 14 x 5 inches at 200 dpi


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_terminal_only():
    piped, terminal = io.StringIO(), Terminal()
    for stream in (piped, terminal):
        bar = ProgressBar(4, "epoch 1/1", stream=stream)
        for done in range(1, 5):
            bar.update(done)
        bar.finish("done")
    assert piped.getvalue() == f"epoch 1/1 [{'#' * 30}] 4/4  done\n"
    frames = terminal.getvalue().split("\r")[1:]
    assert frames[:4] == [f"epoch 1/1 [{'#' * filled}{'.' * (30 - filled)}] {done}/4"
                          for done, filled in ((1, 7), (2, 15), (3, 22), (4, 30))]
    assert frames[4] == f"epoch 1/1 [{'#' * 30}] 4/4  done\n"
    silent = io.StringIO()
    ProgressBar(4, "x", enabled=False, stream=silent).finish("done")
    assert silent.getvalue() == ""
