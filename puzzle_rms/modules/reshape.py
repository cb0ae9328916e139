"""Reshape and Flatten: a new shape for the same data."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms.modules.module import Module


class Reshape(Module):
    """``y = x.reshape(shape)``, where a 0 in ``shape`` keeps that axis of the input and one -1 is inferred;
    backward reshapes the gradient back to the input's shape.

    Parameters
    ----------
    shape : sequence of int
        The output shape (PuzzleLib's convention for 0 and -1).
    showWarnings : bool
        Accepted for PuzzleLib's signature; nothing is logged here.
    name : str, optional
        Key in a container.
    """

    def __init__(self, shape: Sequence[int], showWarnings: bool = True, name: Optional[str] = None) -> None:
        super().__init__(name)
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= -1 for n in shape) \
                or list(shape).count(-1) > 1:
            raise ValueError(f"Reshape: shape must be a tuple of ints >= 0 with at most one -1, got {shape!r}")
        self.shape = tuple(shape)
        self.showWarnings = showWarnings

    def dataShapeFrom(self, shape: tuple) -> tuple:
        """The output shape for an input of ``shape`` (0 copied, -1 inferred), or ValueError when none fits."""
        shape = tuple(shape)
        if any(n == 0 for n in self.shape) and len(self.shape) > len(shape):
            raise ValueError(f"{self!r}: shape {self.shape} copies axes the input of shape {shape} does not have")
        target = [shape[i] if n == 0 else n for i, n in enumerate(self.shape)]
        size, known = int(np.prod(shape)), int(np.prod([n for n in target if n != -1]))
        if -1 in target and known > 0 and size % known == 0:
            target[target.index(-1)] = size // known
        if int(np.prod(target)) != size:
            raise ValueError(f"{self!r}: cannot reshape an input of shape {shape} to {tuple(target)}")
        return tuple(target)

    def gradShapeFrom(self, shape: tuple) -> tuple:
        """The input's shape (of the last forward) for a gradient of ``shape``."""
        return tuple(self.inData.shape)

    def updateData(self, data: Any) -> Any:
        return data.reshape(self.dataShapeFrom(data.shape))

    def updateGrad(self, grad: Any) -> Any:
        return grad.reshape(self.inData.shape)


class Flatten(Module):
    """``y = x.reshape(batch, -1)``: every axis after the first joined; backward restores the input's shape."""

    def updateData(self, data: Any) -> Any:
        return data.reshape(data.shape[0], -1)

    def updateGrad(self, grad: Any) -> Any:
        return grad.reshape(self.inData.shape)
