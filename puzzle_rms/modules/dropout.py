"""Dropout: random zeroing of inputs in train mode, the identity in eval mode."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.module import Module
from puzzle_rms.validation import check_range, check_rng


class Dropout(Module):
    r"""In train mode :math:`y = x \odot m / (1 - p)` with :math:`m_i \sim \text{Bernoulli}(1 - p)`, and
    :math:`\partial L / \partial x = G \odot m / (1 - p)`; in eval mode :math:`y = x` (PuzzleLib's scaling).

    Parameters
    ----------
    p : float
        Probability of zeroing an element, in [0, 1).
    rng : numpy.random.Generator, optional
        Source of the masks; NumPy's global RNG when omitted (the masks are not PuzzleLib's: its generator
        is its own).
    slicing, inplace
        Accepted for PuzzleLib's signature: only ``slicing=None`` is supported; the output is a new array.
    name : str, optional
        Key in a container.
    """

    def __init__(self, p: float = 0.5, rng: Optional[np.random.Generator] = None, slicing: Any = None,
                 inplace: bool = False, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.p = check_range("Dropout", "p", p, 0.0, 1.0, highOpen=True)
        self.rng = check_rng("Dropout", "rng", rng)
        if slicing is not None:
            raise ValueError(f"Dropout: slicing must be None here, got {slicing!r}")
        self.inplace = inplace
        self.mask: Any = None

    def updateData(self, data: Any) -> Any:
        if not self.train:
            self.mask = None
            return data
        gen = np.random if self.rng is None else self.rng
        keep = gen.random(data.shape)
        scale = data.dtype.type(1.0 / (1.0 - self.p))
        self.mask = backends.current().to_device((keep >= self.p).astype(data.dtype) * scale)
        return data * self.mask

    def updateGrad(self, grad: Any) -> Any:
        return grad if self.mask is None else grad * self.mask
