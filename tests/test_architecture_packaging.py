"""setup.cfg names its packages one by one (``backends/`` installs as ``puzzle_rms.backends``), so a new
subpackage that is not added there would be left out of the wheel without any error: check the list."""
from __future__ import annotations

import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_options() -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return config["options"]


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def _packages_on_disk(folders: dict[str, str]) -> set[str]:
    """Every folder holding an ``__init__.py`` under each source folder, named as it installs."""
    found = set()
    for package, folder in folders.items():
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                relative = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.add(package if relative == "." else ".".join([package, *relative.split(os.sep)]))
    return found


def test_every_package_folder_is_listed_in_setup_cfg():
    options = _setup_options()
    mapped = dict(line.replace(" ", "").split("=", 1) for line in _lines(options["package_dir"]))
    assert mapped == {"puzzle_rms.backends": "backends"}
    onDisk = _packages_on_disk({"puzzle_rms": "puzzle_rms", **mapped})
    assert {"puzzle_rms", "puzzle_rms.backends", "puzzle_rms.bench"} <= onDisk
    listed = set(_lines(options["packages"]))
    assert onDisk - listed == set(), "folders with an __init__.py that setup.cfg's packages leaves out of the wheel"
    assert listed - onDisk == set(), "packages listed in setup.cfg without a folder holding an __init__.py"
