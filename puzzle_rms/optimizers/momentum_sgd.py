"""MomentumSGD and NesterovSGD: SGD with a momentum buffer, PuzzleLib's names and defaults."""
from __future__ import annotations

from typing import Any

from puzzle_rms.optimizers.sgd import SGD
from puzzle_rms.validation import check_range


class MomentumSGD(SGD):
    r"""Heavy-ball SGD, PuzzleLib's ``MomentumSGD(learnRate=1e-3, momRate=0.9)``: per element, with
    :math:`g = \partial L / \partial w`,

    .. math:: m \leftarrow \mu m + \eta g, \qquad w \leftarrow w - m.

    The state buffer is ``mom`` (PuzzleLib's, with the usual sign). Takes the keyword arguments of
    :class:`~puzzle_rms.optimizers.Optimizer` after ``nodeinfo``.
    """

    HYPERPARAMETERS = SGD.HYPERPARAMETERS + ("momRate", "nesterov")
    ATTRS = ("learnRate", "momRate")

    def __init__(self, learnRate: Any = 1e-3, momRate: float = 0.9, nodeinfo: Any = None, **kwargs: Any) -> None:
        super().__init__(learnRate, nodeinfo, **kwargs)
        self.momRate = check_range(type(self).__name__, "momRate", momRate, 0.0, 1.0, lowOpen=True, highOpen=True)


class NesterovSGD(MomentumSGD):
    r"""Nesterov-momentum SGD, PuzzleLib's ``NesterovSGD(learnRate=1e-3, momRate=0.9)``:

    .. math:: m \leftarrow \mu m + \eta g, \qquad w \leftarrow w - (\mu m + \eta g),

    which is PuzzleLib's :math:`w \leftarrow w - \mu^2 m_{old} - (1 + \mu) \eta g` written with the new buffer.
    """

    nesterov = True
