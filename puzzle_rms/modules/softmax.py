"""SoftMax: the softmax over the channel axis (axis 1) of (N, C) or (N, C, ...) data."""
from __future__ import annotations

from typing import Any

from puzzle_rms import backends
from puzzle_rms.modules.module import Module


class SoftMax(Module):
    r""":math:`y_{nc\dots} = e^{x_{nc\dots} - m} / \sum_k e^{x_{nk\dots} - m}` over the channels (axis 1), with
    :math:`m` the channel maximum; backward :math:`\partial L / \partial x = y \odot (G - \sum_c G_c y_c)`
    for :math:`G = \partial L / \partial y`."""

    def updateData(self, data: Any) -> Any:
        if data.ndim < 2:
            raise ValueError(f"{self!r}: input of shape {tuple(data.shape)}; expected (batch, channels, ...)")
        xp = backends.current().xp
        e = xp.exp(data - data.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def updateGrad(self, grad: Any) -> Any:
        y = self.data
        return y * (grad - (grad * y).sum(axis=1, keepdims=True))
