"""JSON descriptions of hyperparameter values: numbers as they are, schedules and callables by type and settings.

Two optimizers are configured alike when the descriptions of their hyperparameters are equal; a checkpoint
stores them (see :meth:`puzzle_rms.optimizers.Optimizer.hyperparameters`).
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np

from puzzle_rms.optimizers.loss_scale import DynamicLossScale


def describe(value: Any, nested: bool = False) -> Any:
    """A JSON value that identifies ``value``.

    Numbers, strings, booleans and None are themselves; NumPy scalars and arrays become Python numbers
    and lists; lists, tuples and dicts are described item by item.
    A :class:`~puzzle_rms.optimizers.loss_scale.DynamicLossScale` is its type and :meth:`settings`.
    A function is ``{"function": "<module>.<qualified name>"}``. Any other object (a schedule) is
    ``{"type": "<module>.<qualified name>"}`` plus, when it is not ``nested`` inside another value, its
    public attributes whose descriptions are not dicts.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [describe(item, True) for item in value]
    if isinstance(value, dict):
        return {str(key): describe(item, True) for key, item in value.items()}
    if isinstance(value, DynamicLossScale):
        return {"type": "DynamicLossScale", **value.settings()}
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return {"function": f"{getattr(value, '__module__', '?')}.{value.__qualname__}"}
    description: dict[str, Any] = {"type": f"{type(value).__module__}.{type(value).__qualname__}"}
    if not nested:
        for name, item in vars(value).items() if hasattr(value, "__dict__") else ():
            if not name.startswith("_"):
                item = describe(item, True)
                if not isinstance(item, dict):
                    description[name] = item
    return description
