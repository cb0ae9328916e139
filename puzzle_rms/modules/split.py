"""Split: one input cut into a list of pieces along an axis."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.module import Module
from puzzle_rms.validation import check_int, check_size


class Split(Module):
    r"""Cut ``x`` along ``axis`` into pieces of the sizes ``sections`` (which must sum to the axis' size);
    backward concatenates the pieces' gradients :math:`\partial L / \partial x = [G_1, G_2, \dots]`.

    Parameters
    ----------
    axis : int
        The axis to cut (PuzzleLib's argument order: ``Split(axis, sections)``).
    sections : sequence of int
        The size of each piece along ``axis``.
    name : str, optional
        Key in a container.
    """

    def __init__(self, axis: int, sections: Sequence[int], name: Optional[str] = None) -> None:
        super().__init__(name)
        self.axis = check_int("Split", "axis", axis, 0)
        if not isinstance(sections, (list, tuple)) or not sections:
            raise TypeError(f"Split: sections must be a non-empty list or tuple of sizes, got {sections!r}")
        self.sections = tuple(check_size("Split", "sections", size) for size in sections)

    def updateData(self, data: Any) -> list:
        if data.ndim <= self.axis or data.shape[self.axis] != sum(self.sections):
            raise ValueError(f"{self!r}: input of shape {tuple(data.shape)} cannot be split along axis {self.axis} "
                             f"into {self.sections}; expected that axis to have size {sum(self.sections)}")
        return backends.current().xp.split(data, np.cumsum(self.sections)[:-1].tolist(), axis=self.axis)

    def updateGrad(self, grad: list) -> Any:
        return backends.current().xp.concatenate(grad, axis=self.axis)
