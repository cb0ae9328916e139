"""puzzle_rms: a PuzzleLib-style toolkit around one fused RMSProp, on NumPy, Numba or CuPy.

The array backends live in :mod:`puzzle_rms.backends` (the folder ``backends/`` of the
repository); pick one with ``PUZZLE_RMS_BACKEND`` or ``puzzle_rms.backends.use(name)``.
"""
from puzzle_rms.config import Config
from puzzle_rms.variable import Variable

__all__ = ["Config", "Variable"]
__version__ = "0.1.0"
