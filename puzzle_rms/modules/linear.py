"""Linear: the affine layer y = x W + b."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.init_scheme import createTensorWithScheme
from puzzle_rms.modules.module import Module, writeGrad
from puzzle_rms.validation import check_bool, check_real, check_rng, check_size
from puzzle_rms.variable import Variable


class Linear(Module):
    r"""Fully connected layer :math:`y = x W + b` on a batch ``x`` of shape ``(batch, insize)``.

    Parameters
    ----------
    insize, outsize : int
        Input and output features; ``W`` has shape ``(insize, outsize)`` (PuzzleLib's layout), ``b`` ``(outsize,)``.
    wscale : float
        Scale of the "gaussian" and "uniform" schemes (ignored by the others, as in PuzzleLib).
    useBias : bool
        Whether to add the bias ``b`` (initialised to zero).
    initscheme : str or (str, str), optional
        PuzzleLib's schemes (:mod:`puzzle_rms.modules.init_scheme`); None (the default) draws
        :math:`W \sim U(-\sqrt{3 / insize}, \sqrt{3 / insize})`, "xavier" :math:`N(0, 1 / insize)`,
        "he" :math:`N(0, 2 / insize)`; a pair ``(scheme, "in" | "out" | "avg")`` picks the fan.
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
                 initscheme: Any = None, name: Optional[str] = None,
                 rng: Optional[np.random.Generator] = None) -> None:
        super().__init__(name)
        self.insize, self.outsize = check_size("Linear", "insize", insize), check_size("Linear", "outsize", outsize)
        wscale = check_real("Linear", "wscale", wscale)
        self.useBias = check_bool("Linear", "useBias", useBias)
        W = createTensorWithScheme("Linear", initscheme, (self.insize, self.outsize), wscale,
                                   check_rng("Linear", "rng", rng))
        self.setVar("W", Variable(W))
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

    def accGradParams(self, grad: Any, scale: float = 1.0, momentum: float = 0.0) -> None:
        writeGrad(self.vars["W"].grad, backends.current().matmul(self.inData.T, grad), scale, momentum)
        if self.useBias:
            writeGrad(self.vars["b"].grad, grad.sum(axis=0), scale, momentum)
