"""What the benchmark times: the step's hyperparameters, the case sizes, and each case's bytes and arrays.

Every row of every case computes the same step (PyTorch's RMSprop semantics), so that the rows, the
baselines and the references in the tests agree on one definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

# The step every row computes: PyTorch's RMSprop semantics (eps outside the root, lr outside momentum).
LEARN_RATE, FACTOR, EPSILON, MOMENTUM = 1e-3, 0.9, 1e-5, 0.9
VARIANTS = ("plain", "centered-momentum")
STATE_BUFFERS = {"plain": 1, "centered-momentum": 3}  # ms; ms, mg, mom
FAMILIES = ("single", "multi", "fp16", "sparse")
DEFAULT_SIZES = (1 << 20, 16 << 20, 64 << 20)
DEFAULT_TENSORS = ((200, 1000), (2000, 100))
DEFAULT_EMBEDDING = (1_000_000, 64, 1000)  # vocab, dim, rows touched per step
TINY_SIZES = (4096,)
TINY_TENSORS = ((8, 64), (32, 16))
TINY_EMBEDDING = (512, 8, 32)
FP16_SIZE = 16 << 20


def rmsprop_options(variant: str) -> dict[str, Any]:
    """Keyword arguments of :class:`~puzzle_rms.optimizers.rmsprop.RMSProp` for a variant (torch semantics)."""
    options: dict[str, Any] = {"learnRate": LEARN_RATE, "factor": FACTOR, "epsilon": EPSILON}
    if variant == "centered-momentum":
        options.update(centered=True, momentum=MOMENTUM, lrInMomentum=False)
    return options


@dataclass(frozen=True)
class Case:
    """One benchmark case: ``tensors`` parameters of ``tensorSize`` elements (or an embedding table)."""

    name: str
    variant: str
    tensors: int
    tensorSize: int
    dtype: str = "float32"
    embedding: Optional[tuple[int, int, int]] = None  # (vocab, dim, touched rows)

    @property
    def params(self) -> int:
        return self.tensors * self.tensorSize

    @property
    def family(self) -> str:
        if self.embedding is not None:
            return "sparse"
        if self.dtype == "float16":
            return "fp16"
        return "single" if self.tensors == 1 else "multi"

    @property
    def bytesPerParam(self) -> int:
        """Bytes one step moves per parameter: w read and written, g read, each state buffer read and written."""
        item = np.dtype(self.dtype).itemsize
        state = 4 if item == 2 else item
        return 2 * item + item + 2 * state * STATE_BUFFERS[self.variant]

    def title(self) -> str:
        if self.embedding is not None:
            vocab, dim, touched = self.embedding
            return (f"{self.variant}, Embedding({vocab:,}, {dim}) with {touched:,} rows touched per step "
                    f"({touched * dim:,} of {vocab * dim:,} parameters)")
        shape = "1 tensor" if self.tensors == 1 else f"{self.tensors:,} tensors x {self.tensorSize:,}"
        return f"{self.variant}, {self.params:,} {self.dtype} parameters in {shape}, {self.bytesPerParam} B/param"


def build_cases(sizes: Sequence[int], tensors: Sequence[tuple[int, int]], embedding: tuple[int, int, int],
                fp16Size: int, variants: Sequence[str], families: Sequence[str]) -> list[Case]:
    """Every case of the chosen families, in family order, each size with each variant."""
    cases = []
    for family in (f for f in FAMILIES if f in families):
        for variant in variants:
            if family == "single":
                cases += [Case(_size_name(n), variant, 1, n) for n in sizes]
            elif family == "multi":
                cases += [Case(f"{count}x{size}", variant, count, size) for count, size in tensors]
            elif family == "fp16":
                cases.append(Case(f"fp16-{_size_name(fp16Size)}", variant, 1, fp16Size, dtype="float16"))
            else:
                cases.append(Case("embedding", variant, 1, embedding[0] * embedding[1], embedding=embedding))
    return cases


def case_arrays(case: Case, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded host ``(w, g)`` pairs, one per tensor: w ~ N(0, 0.1^2), g ~ N(0, 1), in the case's dtype."""
    gen = np.random.default_rng(seed)
    dtype = np.dtype(case.dtype)
    return [((0.1 * gen.standard_normal(case.tensorSize)).astype(dtype),
             gen.standard_normal(case.tensorSize).astype(dtype)) for _ in range(case.tensors)]


def _size_name(n: int) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)
