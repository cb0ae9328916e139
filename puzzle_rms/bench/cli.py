"""The command line: its options, the torch-before-Numba import, and the run from cases to report."""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Callable, Optional, Sequence

from puzzle_rms import backends, bench
from puzzle_rms.bench.cases import (DEFAULT_EMBEDDING, DEFAULT_SIZES, DEFAULT_TENSORS, FAMILIES, FP16_SIZE,
                                    TINY_EMBEDDING, TINY_SIZES, TINY_TENSORS, VARIANTS, build_cases)
from puzzle_rms.bench.goals import format_goals, goal_checks, state_goal_checks
from puzzle_rms.bench.report import format_case, format_header, load_average, machine_info, write_json
from puzzle_rms.bench.runner import run_case
from puzzle_rms.bench.startup import format_startup, numba_startup
from puzzle_rms.bench.train import format_train_case, train_case, train_shapes
from puzzle_rms.gpu_check import main as gpu_check
from puzzle_rms.bench.state_case import STATE_SIZES, TINY_STATE_SIZES, format_state, run_state

CASE_CHOICES = FAMILIES + ("state",)


def parse_size(text: str) -> int:
    """``"16M"`` -> 16 * 2**20, ``"4K"`` -> 4096, ``"1000"`` -> 1000."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a positive integer with optional K or M suffix")
    return int(digits) * scale


def parse_shape(text: str) -> tuple[int, int]:
    """``"2000x100"`` -> (2000, 100)."""
    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"tensors {text!r}: expected COUNTxSIZE, e.g. 2000x100")
    return parse_size(parts[0]), parse_size(parts[1])


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def _choices(allowed: Sequence[str], what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        text = text.strip()
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: expected one of {', '.join(allowed)}")
        return text
    return check


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The options, with the defaults of a full or a ``--tiny`` run filled in; exits with status 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m puzzle_rms.bench", description=bench.__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=_csv(_choices(("numpy", "numba", "cupy"), "backend")),
                        help="comma-separated backends to time (default: every usable one)")
    parser.add_argument("--cases", type=_csv(_choices(CASE_CHOICES + ("train",), "case family")),
                        default=list(CASE_CHOICES) + ["train"],
                        help="case families: single, multi, fp16, sparse, state (float32 vs bfloat16 vs 8-bit "
                             "optimizer state, and a quality run), train (default: all)")
    parser.add_argument("--state-sizes", type=_csv(parse_size),
                        help="parameters of the state case (default 16M,64M)")
    parser.add_argument("--variants", type=_csv(_choices(VARIANTS, "variant")), default=list(VARIANTS),
                        help="plain, centered-momentum (default: both)")
    parser.add_argument("--sizes", type=_csv(parse_size),
                        help="parameters of the single-tensor cases (default 1M,16M,64M)")
    parser.add_argument("--tensors", type=_csv(parse_shape),
                        help="COUNTxSIZE multi-tensor cases (default 200x1000,2000x100)")
    parser.add_argument("--widths", type=_csv(parse_size),
                        help="hidden widths W of the train case's MLP 256-W-W-1 (default 64,512,2048)")
    parser.add_argument("--batches", type=_csv(parse_size), help="batch sizes of the train case (default 64,256)")
    parser.add_argument("--repeat", type=int, help="timed rounds per row (default 11; tiny 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls per row first (default 2; tiny 1)")
    parser.add_argument("--min-time", type=float,
                        help="seconds a round lasts at least, repeating the call (default 0.02)")
    parser.add_argument("--no-torch", action="store_true", help="skip torch.optim.RMSprop even when installed")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive NumPy/CuPy rows")
    parser.add_argument("--no-startup", action="store_true", help="skip the numba cold/warm start measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes, few rounds, no start-up measurement (a smoke test, not a measurement)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--gpu-check", action="store_true",
                        help="run the GPU check instead (python -m puzzle_rms.gpu_check): gpu tests, then GPU timings")
    args = parser.parse_args(argv)
    tiny = args.tiny
    args.sizes = args.sizes or list(TINY_SIZES if tiny else DEFAULT_SIZES)
    args.state_sizes = args.state_sizes or list(TINY_STATE_SIZES if tiny else STATE_SIZES)
    args.tensors = args.tensors or list(TINY_TENSORS if tiny else DEFAULT_TENSORS)
    args.trainShapes = train_shapes(args.widths, args.batches, tiny)
    args.embedding = TINY_EMBEDDING if tiny else DEFAULT_EMBEDDING
    args.fp16Size = TINY_SIZES[0] if tiny else FP16_SIZE
    args.repeat = args.repeat if args.repeat is not None else (3 if tiny else 11)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 2)
    args.min_time = args.min_time if args.min_time is not None else (0.0 if tiny else 0.02)
    for name in ("repeat", "warmup"):
        if getattr(args, name) < (1 if name == "repeat" else 0):
            parser.error(f"--{name} must be >= {1 if name == 'repeat' else 0}, got {getattr(args, name)}")
    if args.min_time < 0:
        parser.error(f"--min-time must be >= 0, got {args.min_time}")
    return args


def import_torch(wanted: bool) -> Any:
    """torch, imported before Numba starts its threads, or None (not wanted or not installed)."""
    if not wanted:
        return None
    if "numba" in sys.modules:
        print("warning: numba was imported before torch in this process; torch's CPU timings may be invalid "
              "(run the benchmark as its own process)", file=sys.stderr)
    try:
        import torch
    except ImportError:
        return None
    return torch


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; print one table per case (and the numba start-up); return the exit status."""
    args = parse_args(argv)
    if args.gpu_check:
        return gpu_check()
    torch = import_torch(not args.no_torch)
    names = args.backends or backends.available()
    missing = [name for name in names if backends.unavailable_reason(name) is not None]
    for name in missing:
        print(f"error: backend {name!r} is not usable here: {backends.unavailable_reason(name)}", file=sys.stderr)
    if missing:
        return 2
    progress = (lambda text: None) if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    cases = build_cases(args.sizes, args.tensors, args.embedding, args.fp16Size, args.variants, args.cases)
    report: dict[str, Any] = {"machine": None, "options": {k: v for k, v in vars(args).items() if k != "json"},
                              "startup": None, "cases": []}
    loadBefore = load_average()
    if "numba" in names and not args.no_startup and not args.tiny:
        progress("numba start-up: cold and warm processes")
        report["startup"] = numba_startup()
    for index, case in enumerate(cases, 1):
        if not args.quiet:
            print(f"[{index}/{len(cases)}] {case.name} {case.variant}", file=sys.stderr, flush=True)
        result = run_case(case, names, torch, args.repeat, args.warmup, args.min_time, not args.no_naive,
                          args.seed, progress)
        report["cases"].append(result.summary())
        del result
        gc.collect()
    if "train" in args.cases:
        for index, (width, batch) in enumerate(args.trainShapes, 1):
            if not args.quiet:
                print(f"[train {index}/{len(args.trainShapes)}] MLP width {width}, batch {batch}", file=sys.stderr,
                      flush=True)
            report["cases"].append(train_case(width, batch, names, torch, args.repeat, args.warmup, args.min_time,
                                              args.seed, progress))
    if "state" in args.cases:
        if not args.quiet:
            print("[state] float32 vs bfloat16 vs 8-bit optimizer state", file=sys.stderr, flush=True)
        report["state"] = run_state(args.state_sizes, names, args.repeat, args.warmup, args.min_time, args.seed,
                                    args.tiny, progress)
    report["machine"] = machine_info(torch)
    report["machine"]["loadavgBefore"] = loadBefore
    print(format_header(report["machine"]))
    if report["startup"] is not None:
        print(format_startup(report["startup"]))
    for summary in report["cases"]:
        print(format_train_case(summary) if summary["family"] == "train" else format_case(summary))
    if report.get("state") is not None:
        print(format_state(report["state"]))
    report["targets"] = goal_checks(report["cases"]) + state_goal_checks(report.get("state"))  # JSON key kept
    if report["targets"]:
        print(format_goals(report["targets"]))
    if args.json:
        write_json(report, args.json)
    return 0
