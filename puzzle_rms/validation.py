"""Argument checks shared by every public constructor: each error names the argument, the value and the expectation."""
from __future__ import annotations

import difflib
import math
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np


def check_real(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite float, or TypeError/ValueError naming ``owner``'s argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    return float(value)


def check_range(owner: str, name: str, value: Any, low: float, high: float = math.inf,
                lowOpen: bool = False, highOpen: bool = False) -> float:
    """``value`` as a float in the interval given by ``low``/``high`` (closed unless marked open)."""
    value = check_real(owner, name, value)
    if value < low or value > high or (lowOpen and value == low) or (highOpen and value == high):
        left, right = "(" if lowOpen else "[", ")" if highOpen or high == math.inf else "]"
        raise ValueError(f"{owner}: {name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return value


def check_optional_positive(owner: str, name: str, value: Any) -> float | None:
    """None, or a float > 0."""
    return None if value is None else check_range(owner, name, value, 0.0, lowOpen=True)


def check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_optional_str(owner: str, name: str, value: Any) -> str | None:
    """None, or a str."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{owner}: {name} must be a str or None, got {value!r} ({type(value).__name__})")
    return value


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int >= ``low`` (and <= ``high`` when given; bool and non-integral numbers are rejected)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{owner}: {name} must be an integer <= {high}, got {value!r}")
    return int(value)


def check_size(owner: str, name: str, value: Any) -> int:
    """A layer size: an integer >= 1 (ValueError otherwise, as a size of 0 or 2.5 is a wrong value)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def check_rng(owner: str, name: str, value: Any) -> Any:
    """None, or a numpy.random.Generator."""
    if value is not None and not isinstance(value, np.random.Generator):
        raise TypeError(f"{owner}: {name} must be a numpy.random.Generator (np.random.default_rng(seed)) or None, "
                        f"got {value!r} ({type(value).__name__})")
    return value


FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
DECAY_REASON = "it multiplies the weights in float32 state, where a larger value is inf"
EPSILON_REASON = "in float32 state a smaller value is flushed to 0 or loses precision, and 0/0 makes NaN weights"


class Checked:
    """A validated attribute: every assignment, in the constructor and after it, goes through ``check``.

    ``check(obj, owner, argument, value)`` returns the value to store or raises with the constructor's message
    (``owner`` is the class name, ``argument`` the constructor's name for the attribute). So ``opt.factor = 1.5``
    raises exactly what ``RMSProp(factor=1.5)`` raises, and the object keeps its previous value.
    """

    def __init__(self, check: Any, argument: str | None = None) -> None:
        self.check = check
        self.argument = argument

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.argument = self.argument or name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__} has no {self.name!r} yet") from None

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.name] = self.check(obj, type(obj).__name__, self.argument, value)


def check_float32_range(owner: str, name: str, value: Any, low: float, lowOpen: bool = False, least: float = 0.0,
                        high: float = FLOAT32_MAX, reason: str = "it is computed in float32") -> float:
    """``value`` in ``[low, inf)`` (``(low, inf)`` when ``lowOpen``) as :func:`check_range` says, and also within
    ``[least, high]``, where it can work in float32 kernels; that error gives ``reason``."""
    value = check_range(owner, name, value, low, lowOpen=lowOpen)
    if (value != 0 and value < least) or value > high:
        zero = "0 or " if least > 0 and low == 0 and not lowOpen else ""
        raise ValueError(f"{owner}: {name} must be {zero}in [{least:g}, {high:g}], got {value!r} ({reason})")
    return value


def check_no_unknown_keywords(owner: str, given: Iterable[str], known: Sequence[str],
                              hint: Callable[[str], Optional[str]] = lambda keyword: None) -> None:
    """TypeError for the first of ``given`` that ``owner`` does not take: ``hint(keyword)`` when it has one, else the
    closest of ``known`` (ignoring case and underscores), else the list of ``known``."""
    for keyword in given:
        advice = hint(keyword)
        if advice is None:
            normal = {name.lower().replace("_", ""): name for name in known}
            close = difflib.get_close_matches(keyword.lower().replace("_", ""), normal, n=1)
            advice = f"did you mean {normal[close[0]]}?" if close else f"it takes: {', '.join(known)}"
        raise TypeError(f"{owner}: unexpected keyword argument {keyword!r}; {advice}")
