"""Add and Concat: modules that merge the outputs of several graph nodes."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.module import Module


def _checkList(module: Module, data: Any) -> None:
    if not isinstance(data, (list, tuple)) or len(data) < 2:
        raise ValueError(f"{module!r}: input must be a list of at least two arrays (give the node several parents)")


class Add(Module):
    r"""Element-wise sum :math:`y = \sum_i x_i` of inputs of one shape.

    :math:`\partial L / \partial x_i = \partial L / \partial y` for every input :math:`i`.

    The gradients returned for the inputs are the same array, to be read, not written.
    """

    def updateData(self, data: Any) -> Any:
        _checkList(self, data)
        if len({tuple(x.shape) for x in data}) != 1:
            raise ValueError(f"{self!r}: inputs must have one shape, got {[tuple(x.shape) for x in data]}")
        return sum(data[1:], data[0])

    def updateGrad(self, grad: Any) -> list:
        return [grad] * len(self.inData)


class Concat(Module):
    r"""Concatenation :math:`y = [x_1, x_2, \dots]` along ``axis``; the gradient is split back at the same places.

    Parameters
    ----------
    axis : int
        The axis to join along (the features of a ``(batch, features)`` input by default).
    name : str, optional
        Key in a container.
    """

    def __init__(self, axis: int = 1, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.axis = axis

    def updateData(self, data: Any) -> Any:
        _checkList(self, data)
        return backends.current().xp.concatenate(data, axis=self.axis)

    def updateGrad(self, grad: Any) -> list:
        sections = np.cumsum([x.shape[self.axis] for x in self.inData])[:-1].tolist()
        return backends.current().xp.split(grad, sections, axis=self.axis)
