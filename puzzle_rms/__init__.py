"""puzzle_rms: a PuzzleLib-style toolkit around one fused RMSProp, on NumPy, Numba or CuPy.

The array backend lives in the separate package :mod:`backends`; pick it with
``PUZZLE_RMS_BACKEND`` or ``backends.use(name)``.
"""
from puzzle_rms.variable import Variable

__all__ = ["Variable"]
__version__ = "0.1.0"
