"""Embedding: a lookup table whose backward pass produces a row-sparse gradient."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms.modules.module import Module
from puzzle_rms.sparse import RowSparseVariable, check_indices
from puzzle_rms.validation import check_real, check_rng, check_size


class Embedding(Module):
    r"""Rows of a table ``W`` of shape ``(vocab, dim)`` picked by integer indices: ``y[..., :] = W[x[...], :]``.

    Parameters
    ----------
    vocab, dim : int
        Number of rows (valid indices are ``0 .. vocab-1``) and the width of each row.
    wscale : float
        Standard deviation of the initial rows, drawn from :math:`N(0, wscale^2)`.
    name : str, optional
        Key in a container.
    rng : numpy.random.Generator, optional
        Source of the initial rows; NumPy's global RNG when omitted.

    Notes
    -----
    With :math:`G = \partial L / \partial y`, :math:`\partial L / \partial W[i] = \sum_{k: x_k = i} G_k`:
    only the rows that were looked up get a gradient. ``W`` is a
    :class:`~puzzle_rms.sparse.RowSparseVariable`: backward adds the pair ``(x, G)`` to ``W.rowGrad``
    (repeated indices are summed when the optimizer takes the rows) and leaves the dense ``W.grad``
    alone; the optimizer's ``sparseUpdate`` decides whether the step is lazy or dense-equivalent.
    The input has no gradient (``backward`` returns None), so an Embedding comes first in a chain.
    """

    def __init__(self, vocab: int, dim: int, wscale: float = 1.0, name: Optional[str] = None,
                 rng: Optional[np.random.Generator] = None) -> None:
        super().__init__(name)
        self.vocab, self.dim = check_size("Embedding", "vocab", vocab), check_size("Embedding", "dim", dim)
        wscale = check_real("Embedding", "wscale", wscale)
        gen = np.random if check_rng("Embedding", "rng", rng) is None else rng
        table = (wscale * gen.standard_normal((self.vocab, self.dim))).astype(np.float32)
        self.setVar("W", RowSparseVariable(table))

    @property
    def W(self) -> Any:
        return self.vars["W"].data

    def updateData(self, data: Any) -> Any:
        check_indices(f"{self!r}", "input", data.reshape(-1), self.vocab)
        return self.W[data]

    def updateGrad(self, grad: Any) -> None:
        return None

    def accGradParams(self, grad: Any, scale: float = 1.0, momentum: float = 0.0) -> None:
        """Add the rows ``scale * G`` to ``W.rowGrad``; ``momentum`` 0 first drops the pending rows and zeroes
        the dense ``grad`` (a bare Embedding overwrites), 1 keeps them; other values are refused."""
        var = self.vars["W"]
        if momentum not in (0, 1):
            raise ValueError(f"{self!r}: accGradParams momentum must be 0 or 1 for a row-sparse gradient, "
                             f"got {momentum!r}")
        if momentum == 0:
            var.rowGrad.clear()
            var.grad.fill(0)
        var.rowGrad.add(self.inData.reshape(-1), (grad if scale == 1 else scale * grad).reshape(-1, self.dim))

    def zeroGradParams(self) -> None:
        """Zero the dense gradient and drop the pending rows."""
        self.vars["W"].grad.fill(0)
        self.vars["W"].rowGrad.clear()

    def calcMode(self, dtype: Any) -> None:
        """As :meth:`Module.calcMode`, keeping ``W`` a RowSparseVariable."""
        super().calcMode(dtype)
        var = self.vars["W"]
        if not isinstance(var, RowSparseVariable):
            self.vars["W"] = RowSparseVariable(var.data, name=var.name, learnRate=var.learnRate)
