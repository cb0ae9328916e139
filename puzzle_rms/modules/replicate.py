"""Replicate: one input handed on as a list of ``times`` identical outputs."""
from __future__ import annotations

from typing import Any, Optional

from puzzle_rms.modules.module import Module
from puzzle_rms.validation import check_size


class Replicate(Module):
    r""":math:`[y_1, \dots, y_k] = [x, \dots, x]` (``times`` = :math:`k`, the same array each time, to be read,
    not written); :math:`\partial L / \partial x = \sum_i \partial L / \partial y_i`."""

    def __init__(self, times: int, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.times = check_size("Replicate", "times", times)

    def updateData(self, data: Any) -> list:
        if isinstance(data, (list, tuple)):
            raise ValueError(f"{self!r}: input must be one array, got a list of {len(data)}")
        return [data] * self.times

    def updateGrad(self, grad: list) -> Any:
        return sum(grad[1:], grad[0].copy())
