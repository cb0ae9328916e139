r"""PuzzleLib's weight initialisation schemes, drawing from ``np.random`` in PuzzleLib's order.

A scheme is a name, or a pair ``(name, factorType)``. With ``ins``/``outs`` the input/output neurons
(``insize``/``outsize`` of a Linear) the factor :math:`n` is ``ins`` ("in", the default), ``outs``
("out") or :math:`(ins + outs) / 2` ("avg"):

================================  ====================================================
scheme                            weights
================================  ====================================================
None, "xavier_uniform"            :math:`U(-\sqrt{3 / n}, \sqrt{3 / n})`
"xavier", "xavier_normal"         :math:`N(0, 1 / n)` (standard deviation :math:`\sqrt{1 / n}`)
"he"                              :math:`N(0, 2 / n)`
"gaussian"                        :math:`N(0, wscale^2)`
"uniform"                         :math:`U(-wscale, wscale)`
"none"                            zeros, nothing drawn (PuzzleLib leaves the memory uninitialised)
================================  ====================================================

``wscale`` matters only to "gaussian" and "uniform", as in PuzzleLib. Draws are one call on the
whole shape, cast to float32, so a seeded ``np.random`` gives PuzzleLib's weights bit for bit.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

SCHEMES = (None, "xavier", "xavier_uniform", "xavier_normal", "he", "gaussian", "uniform", "none")
FACTOR_TYPES = ("in", "out", "avg")


def parseScheme(owner: str, initscheme: Any) -> tuple[Optional[str], str]:
    """``(scheme, factorType)`` of a scheme name or pair; ValueError naming the choices otherwise."""
    scheme, factorType = initscheme, "in"
    if isinstance(initscheme, (tuple, list)):
        if len(initscheme) != 2:
            raise ValueError(f"{owner}: initscheme pair must be (scheme, factorType), got {initscheme!r}")
        scheme, factorType = initscheme
    if not (scheme is None or isinstance(scheme, str)) or scheme not in SCHEMES:
        raise ValueError(f"{owner}: initscheme must be one of {', '.join(map(repr, SCHEMES))} "
                         f"or a pair (scheme, factorType), got {initscheme!r}")
    if factorType not in FACTOR_TYPES:
        raise ValueError(f"{owner}: initscheme factorType must be one of {', '.join(map(repr, FACTOR_TYPES))}, "
                         f"got {factorType!r}")
    return scheme, factorType


def createTensorWithScheme(owner: str, initscheme: Any, shape: tuple[int, int], wscale: float,
                           rng: Any = None) -> np.ndarray:
    """A float32 array of ``shape`` = ``(ins, outs)`` initialised by ``initscheme`` (see the module docstring).

    ``rng`` is a ``numpy.random.Generator`` or None for NumPy's global RNG (PuzzleLib's source).
    """
    scheme, factorType = parseScheme(owner, initscheme)
    ins, outs = shape
    factor = {"in": ins, "out": outs, "avg": (ins + outs) / 2}[factorType]
    gen = np.random if rng is None else rng
    if scheme == "none":
        return np.zeros(shape, np.float32)
    if scheme in (None, "xavier_uniform"):
        bound = math.sqrt(3.0 / factor)
        values = gen.uniform(-bound, bound, shape)
    elif scheme in ("xavier", "xavier_normal"):
        values = gen.normal(0.0, math.sqrt(1.0 / factor), shape)
    elif scheme == "he":
        values = gen.normal(0.0, math.sqrt(2.0 / factor), shape)
    elif scheme == "gaussian":
        values = gen.normal(0.0, wscale, shape)
    else:
        values = gen.uniform(-wscale, wscale, shape)
    return values.astype(np.float32)
