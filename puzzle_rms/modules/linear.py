"""Linear: the affine layer y = x W + b."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.module import Module
from puzzle_rms.validation import check_bool, check_choice, check_real, check_rng, check_size
from puzzle_rms.variable import Variable

INIT_SCHEMES = ("xavier", "he")


class Linear(Module):
    r"""Fully connected layer :math:`y = x W + b` on a batch ``x`` of shape ``(batch, insize)``.

    Parameters
    ----------
    insize, outsize : int
        Input and output features; ``W`` has shape ``(insize, outsize)`` (PuzzleLib's layout), ``b`` ``(outsize,)``.
    wscale : float
        Multiplier of the initial weights.
    useBias : bool
        Whether to add the bias ``b`` (initialised to zero).
    initscheme : {"xavier", "he"}, optional
        ``"xavier"`` (the default): :math:`W \sim U(-a, a)`, :math:`a = \sqrt{6 / (insize + outsize)}`;
        ``"he"``: :math:`W \sim N(0, 2 / insize)`. Both are then multiplied by ``wscale``.
    name : str, optional
        Key in a container.
    rng : numpy.random.Generator, optional
        Source of the initial weights; NumPy's global RNG (``np.random``) when omitted.

    Notes
    -----
    With :math:`G = \partial L / \partial y`: :math:`\partial L / \partial x = G W^T`,
    :math:`\partial L / \partial W = x^T G`, :math:`\partial L / \partial b = \sum_{batch} G`.
    """

    def __init__(self, insize: int, outsize: int, wscale: float = 1.0, useBias: bool = True,
                 initscheme: Optional[str] = None, name: Optional[str] = None,
                 rng: Optional[np.random.Generator] = None) -> None:
        super().__init__(name)
        self.insize, self.outsize = check_size("Linear", "insize", insize), check_size("Linear", "outsize", outsize)
        wscale = check_real("Linear", "wscale", wscale)
        self.useBias = check_bool("Linear", "useBias", useBias)
        initscheme = check_choice("Linear", "initscheme", "xavier" if initscheme is None else initscheme,
                                  INIT_SCHEMES)
        gen = np.random if check_rng("Linear", "rng", rng) is None else rng
        if initscheme == "xavier":
            bound = np.sqrt(6.0 / (insize + outsize))
            W = gen.uniform(-bound, bound, size=(insize, outsize))
        else:
            W = gen.normal(0.0, np.sqrt(2.0 / insize), size=(insize, outsize))
        self.setVar("W", Variable((wscale * W).astype(np.float32)))
        if self.useBias:
            self.setVar("b", Variable(np.zeros(outsize, dtype=np.float32)))

    @property
    def W(self) -> Any:
        return self.vars["W"].data

    @property
    def b(self) -> Any:
        return self.vars["b"].data if self.useBias else None

    def updateData(self, data: Any) -> Any:
        if data.ndim != 2 or data.shape[1] != self.insize:
            raise ValueError(f"{self!r}: input of shape {tuple(data.shape)}, expected (batch, {self.insize})")
        y = backends.current().matmul(data, self.W)
        if self.useBias:
            y += self.b
        return y

    def updateGrad(self, grad: Any) -> Any:
        return backends.current().matmul(grad, self.W.T)

    def accGradParams(self, grad: Any) -> None:
        gradW = self.vars["W"].grad  # added in place: the optimizer's flat buffer stays bound
        gradW += backends.current().matmul(self.inData.T, grad)
        if self.useBias:
            gradB = self.vars["b"].grad
            gradB += grad.sum(axis=0)
