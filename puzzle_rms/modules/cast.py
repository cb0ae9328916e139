"""Cast: a change of float dtype between two parts of a network."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from puzzle_rms import backends
from puzzle_rms.modules.module import Module

CAST_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class Cast(Module):
    """``y = x.astype(outtype)`` for an input of ``intype``; backward casts the gradient back to ``intype``.

    Unlike other modules, Cast does not convert its input to ``calctype``: the input must be ``intype``.
    """

    def __init__(self, intype: Any, outtype: Any, name: Optional[str] = None) -> None:
        super().__init__(name)
        self.intype, self.outtype = (self._dtype(which, value) for which, value in (("intype", intype),
                                                                                   ("outtype", outtype)))

    @staticmethod
    def _dtype(which: str, value: Any) -> np.dtype:
        try:
            dtype = np.dtype(value)
        except TypeError:
            dtype = None
        if dtype not in CAST_DTYPES:
            raise ValueError(f"Cast: {which} must be one of {[str(d) for d in CAST_DTYPES]}, got {value!r}")
        return dtype

    def _toCalc(self, x: Any, what: str, top: Any = None) -> Any:
        """Move to the backend only (the dtype is Cast's business)."""
        if isinstance(x, (list, tuple)):
            raise ValueError(f"{self!r}: expected one array, got a list of {len(x)}")
        backend = backends.current()
        return x if backend.owns(x) else backend.to_device(x)

    def updateData(self, data: Any) -> Any:
        if data.dtype != self.intype:
            raise TypeError(f"{self!r}: input of dtype {data.dtype}; expected intype {self.intype}")
        return data.astype(self.outtype, copy=False)

    def updateGrad(self, grad: Any) -> Any:
        if grad.dtype != self.outtype:
            raise TypeError(f"{self!r}: grad of dtype {grad.dtype}; expected outtype {self.outtype}")
        return grad.astype(self.intype, copy=False)
