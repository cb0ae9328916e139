"""Run PuzzleLib's own tests on puzzle_rms with their imports rewritten; report which run.

This checks the claim "PuzzleLib code ports by changing its import lines". The selected files of
the fetched PuzzleLib repository (see generate.py for how to fetch it; ``--root`` or
``PUZZLELIB_ROOT``, default /work/ext) are turned into scripts in a temporary folder and each is
run in a subprocess with a timeout, by the Python that runs this tool (it must have puzzle_rms
installed). Nothing is written into this repository.

A PuzzleLib file holds an implementation (e.g. ``class Linear``) followed by its self-test
(``def unittest():`` and the functions it calls, e.g. ``calcTest``, ``trainTest``): the test part
starts at the first function after the last class that is ``unittest`` or ends in ``Test``. The script
made from it keeps the test part word for word and replaces the rest:

* every ``import``/``from`` line naming PuzzleLib is rewritten (also inside functions):
  ``PuzzleLib`` -> ``puzzle_rms``; ``PuzzleLib.Backend[.X]`` -> ``puzzle_rms.backends[.x]``
  (deeper names in snake_case); ``PuzzleLib.Variable`` -> ``puzzle_rms.variable``; and
  ``PuzzleLib.{Modules,Containers,Cost,Optimizers}[.File]`` -> ``puzzle_rms.{modules,containers,
  cost,optimizers}`` (the package: ``from PuzzleLib.Modules.Linear import Linear`` becomes
  ``from puzzle_rms.modules import Linear``);
* the file's implementation is replaced by one import, from the package above, of the names it
  defines that the test uses (so the test exercises puzzle_rms's ``Linear``, not PuzzleLib's);
  of the file's top-level imports, those the test part uses are kept;
* PuzzleLib test helpers imported from another file (names ending in ``Test``, such as
  ``Optimizer.trainSimpleTest``) are copied in from that file with the same import rewriting.

Files without a ``unittest`` function run whole, with only their import lines rewritten.

Usage (from the repository root)::

    python tools/puzzlelib_goldens/port.py                    # the default selection, numpy backend
    python tools/puzzlelib_goldens/port.py --backend numba Optimizers/RMSProp.py Modules/Linear.py
    python tools/puzzlelib_goldens/port.py --json port.json   # also write the results as JSON
"""
import argparse
import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import time

PACKAGES = {"Modules": "puzzle_rms.modules", "Containers": "puzzle_rms.containers", "Cost": "puzzle_rms.cost",
            "Optimizers": "puzzle_rms.optimizers"}

# PuzzleLib files whose unittest() covers the core issue 14 lists.
DEFAULT_SELECTION = [
    "Modules/Linear.py", "Modules/Activation.py", "Modules/SoftMax.py",
    "Modules/Replicate.py", "Modules/Split.py", "Modules/Concat.py", "Modules/Reshape.py", "Modules/Flatten.py",
    "Modules/Identity.py", "Modules/Dropout.py", "Modules/Cast.py", "Modules/Add.py", "Modules/Sum.py",
    "Modules/Module.py", "Containers/Sequential.py", "Containers/Parallel.py", "Containers/Graph.py",
    "Cost/MSE.py", "Cost/CrossEntropy.py", "Cost/Abs.py", "Cost/BCE.py", "Cost/SmoothL1.py",
    "Optimizers/SGD.py", "Optimizers/MomentumSGD.py", "Optimizers/NesterovSGD.py", "Optimizers/RMSProp.py",
    "Optimizers/RMSPropGraves.py",
]

IMPORT_LINE = re.compile(r"^(\s*)(from|import)\s+(PuzzleLib(?:\.\w+)*)\b")


def snake(name: str) -> str:
    """CamelCase -> snake_case (``ElementWise`` -> ``element_wise``, ``MatVec`` -> ``mat_vec``)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def rewrite_module(path: str) -> str:
    """The puzzle_rms module for a PuzzleLib module path (see the module docstring)."""
    parts = path.split(".")[1:]
    if not parts:
        return "puzzle_rms"
    if parts[0] in PACKAGES:
        return PACKAGES[parts[0]]
    if parts[0] == "Backend":
        return ".".join(["puzzle_rms.backends", *(snake(part) for part in parts[1:])])
    return ".".join(["puzzle_rms", *(snake(part) for part in parts)])


def rewrite(source: str) -> str:
    """The source with every PuzzleLib import line rewritten."""
    lines = []
    for line in source.splitlines(keepends=True):
        match = IMPORT_LINE.match(line)
        if match:
            line = line[:match.start(3)] + rewrite_module(match.group(3)) + line[match.end(3):]
        lines.append(line)
    return "".join(lines)


def _segment(source: str, node: ast.AST) -> str:
    lines = source.splitlines(keepends=True)
    start = node.decorator_list[0].lineno if getattr(node, "decorator_list", None) else node.lineno
    return "".join(lines[start - 1:node.end_lineno])


def _helper(root: str, module: str, name: str) -> str:
    """The source of function ``name`` in PuzzleLib module ``module``, imports rewritten."""
    path = os.path.join(root, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as stream:
        source = stream.read()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return rewrite(_segment(source, node))
    raise LookupError(f"{name} not found in {module}")


def _names(source: str) -> set:
    """Every name the code reads (bare names and the roots of attribute chains)."""
    return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}


def port(root: str, relpath: str) -> str:
    """The ported script for one PuzzleLib file (see the module docstring)."""
    with open(os.path.join(root, "PuzzleLib", relpath), encoding="utf-8") as stream:
        source = stream.read()
    tree = ast.parse(source)
    if not any(isinstance(node, ast.FunctionDef) and node.name == "unittest" for node in tree.body):
        return rewrite(source)
    lastClass = max((i for i, node in enumerate(tree.body) if isinstance(node, ast.ClassDef)), default=-1)
    first = next(i for i, node in enumerate(tree.body) if i > lastClass and isinstance(node, ast.FunctionDef)
                 and (node.name == "unittest" or node.name.endswith("Test")))
    tests = [rewrite(_segment(source, node)) for node in tree.body[first:] if not isinstance(node, ast.If)]
    helpers, defined, imports = [], [], []
    for node in tree.body[:first]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            defined.append(node.name)
        elif isinstance(node, ast.Assign):
            defined += [target.id for target in node.targets if isinstance(target, ast.Name)]
    for node in imports:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("PuzzleLib") and node.level == 0:
            helpers += [_helper(root, node.module, alias.name) for alias in node.names if alias.name.endswith("Test")]
    used = _names("\n".join(helpers + tests))
    head = []
    for node in imports:
        aliases = [alias for alias in node.names if (alias.asname or alias.name).split(".")[0] in used
                   and not alias.name.endswith("Test")]
        if not aliases:
            continue
        names = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in aliases)
        if isinstance(node, ast.Import):
            head.append(rewrite(f"import {names}\n"))
        else:
            head.append(rewrite(f"from {node.module} import {names}\n"))
    own = rewrite_module("PuzzleLib." + relpath[:-3].replace("/", "."))
    public = [name for name in dict.fromkeys(defined) if not name.startswith("_") and name in used]
    if public:
        head.append(f"from {own} import {', '.join(public)}\n")
    return "".join(head) + "\n\n" + "\n\n".join(helpers + tests) + "\n\nif __name__ == \"__main__\":\n\tunittest()\n"


def error_line(stderr: str) -> str:
    """The exception line of a traceback (its last non-empty line), or the first line of other output."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b|^[\w.]+: ", line):
            return line[:300]
    return lines[-1][:300]


def run_one(root: str, relpath: str, python: str, timeout: float, env: dict) -> dict:
    try:
        source = port(root, relpath)
    except (OSError, SyntaxError, LookupError) as error:
        return {"script": relpath, "status": "not ported", "seconds": 0.0, "error": str(error)}
    with tempfile.TemporaryDirectory(prefix="puzzlelib_port_") as folder:
        script = os.path.join(folder, os.path.basename(relpath))
        with open(script, "w", encoding="utf-8") as stream:
            stream.write(source)
        start = time.monotonic()
        try:
            done = subprocess.run([python, script], cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"script": relpath, "status": "timeout", "seconds": round(time.monotonic() - start, 1),
                    "error": f"no exit within {timeout} s"}
    ok = done.returncode == 0
    return {"script": relpath, "status": "ok" if ok else "fail", "seconds": round(time.monotonic() - start, 1),
            "error": "" if ok else error_line(done.stderr or done.stdout)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", help="paths inside the PuzzleLib package (default: the core selection)")
    parser.add_argument("--root", default=os.environ.get("PUZZLELIB_ROOT", "/work/ext"),
                        help="folder holding the PuzzleLib package (default %(default)s)")
    parser.add_argument("--backend", default="numpy", help="PUZZLE_RMS_BACKEND for the runs (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per script (default %(default)s)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with puzzle_rms installed")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--show", action="store_true", help="print the ported scripts instead of running them")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.root, "PuzzleLib")):
        parser.error(f"--root {args.root!r} holds no PuzzleLib folder; fetch PuzzleLib first (see generate.py)")
    env = {**os.environ, "PUZZLE_RMS_BACKEND": args.backend, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    results = []
    for relpath in args.scripts or DEFAULT_SELECTION:
        if args.show:
            print(f"# ---- {relpath}\n{port(args.root, relpath)}")
            continue
        result = run_one(args.root, relpath, args.python, args.timeout, env)
        results.append(result)
        print(f"{result['status']:8s} {result['seconds']:6.1f}s  {relpath:32s} {result['error']}", flush=True)
    if args.show:
        return 0
    passed = sum(result["status"] == "ok" for result in results)
    print(f"{passed} of {len(results)} PuzzleLib scripts ran unchanged apart from their imports "
          f"(backend {args.backend})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump({"backend": args.backend, "results": results}, stream, indent=1)
            stream.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
