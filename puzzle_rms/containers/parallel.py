"""Parallel: modules applied side by side, module i to element i of a list input."""
from __future__ import annotations

from typing import Any, Union

from puzzle_rms.containers.sequential import Sequential
from puzzle_rms.modules.module import Module


class Parallel(Sequential):
    r"""``[y_1, ..., y_n] = [f_1(x_1), ..., f_n(x_n)]``: a list input of one array per child, a list output.

    Children are added, keyed, inserted and popped as in :class:`Sequential`; slicing gives a Parallel.
    Backward gives child :math:`i` the gradient :math:`\partial L / \partial y_i` and returns the list of
    the children's :math:`\partial L / \partial x_i`; the children accumulate (``momentum=1.0``).
    """

    def __getitem__(self, index: Union[int, str, slice]) -> Union[Module, Parallel]:
        if isinstance(index, slice):
            return Parallel().extend(list(self.modules.values())[index])
        return super().__getitem__(index)

    def _checkList(self, what: str, values: Any) -> None:
        if not isinstance(values, (list, tuple)) or len(values) != len(self.modules):
            got = f"a list of {len(values)}" if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"{self!r}: {what} must be a list of {len(self.modules)} arrays (one per module), "
                             f"got {got}")

    def updateData(self, data: Any) -> list:
        self._checkList("input", data)
        return [module(x) for module, x in zip(self.modules.values(), data)]

    def backward(self, grad: Any, updParamGrads: bool = True, updGrad: bool = True, scale: float = 1.0,
                 momentum: float = 1.0) -> list:
        """Each child's backward on its gradient; see :meth:`Module.backward` for the arguments."""
        self._checkList("grad", grad)
        grad = self._checkedGrad(grad, updParamGrads, updGrad)
        self.grad = [module.backward(g, updParamGrads=updParamGrads, updGrad=updGrad, scale=scale, momentum=momentum)
                     for module, g in zip(self.modules.values(), grad)]
        return self.grad
