"""Read the PuzzleLib goldens in tests/goldens/puzzlelib/ (written by tools/puzzlelib_goldens/generate.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = Path(__file__).parent / "goldens" / "puzzlelib"


def load(name: str) -> dict[str, Any]:
    """The JSON golden ``name`` (e.g. "costs" for costs.json)."""
    with open(FOLDER / f"{name}.json", encoding="utf-8") as stream:
        return json.load(stream)


def array(entry: dict[str, Any]) -> np.ndarray:
    """A stored array ({"shape", "dtype", "data"}) as a NumPy array of its dtype."""
    return np.array(entry["data"], dtype=entry["dtype"]).reshape(entry["shape"])


def path(name: str) -> Path:
    """The path of a fixture file in the goldens folder (e.g. "classifier_model.hdf")."""
    return FOLDER / name
