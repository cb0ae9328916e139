"""Presets behind ``RMSProp.like(name, **kwargs)``: each framework's RMSProp under its own argument names.

Every preset takes exactly the arguments its framework's RMSProp takes (those that change the numbers),
with that framework's defaults, checks them under those names, and translates them into
:class:`~puzzle_rms.optimizers.rmsprop.RMSProp` options. The table of what each one reproduces is in
:data:`PRESETS` (and in the README); the formulas are in ``shared/design/rmsprop-variants.md``.

The one deliberate difference from every framework: the centered variance ``ms - mg**2`` is clamped at
0 before the root, where the frameworks return NaN when rounding makes it negative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from puzzle_rms.optimizers.schedules import validate_learn_rate
from puzzle_rms.validation import (EPSILON_REASON, FLOAT32_TINY, check_bool, check_choice, check_float32_range,
                                   check_range)

__all__ = ["PRESETS", "REQUIRED", "Argument", "Preset", "mindspore_decay_filter", "preset_arguments"]

REQUIRED = object()  # the default of an argument that has none


@dataclass(frozen=True)
class Argument:
    """One argument of a preset: its default (or :data:`REQUIRED`) and the check it gets.

    ``kind`` is one of: ``lr`` (a float >= 0, a callable of the step, or a sequence), ``decay`` (in
    [0, 1]), ``momentum`` (in [0, 1)), ``eps`` (> 0), ``nonneg`` (>= 0), ``positive`` (> 0), ``bool``,
    ``any`` (not checked here); ``optional-<kind>`` also accepts None.
    """

    default: Any
    kind: str


@dataclass(frozen=True)
class Preset:
    """A framework's RMSProp: its arguments, how they map onto RMSProp options, and what it reproduces."""

    name: str
    arguments: dict[str, Argument]
    translate: Callable[[str, dict[str, Any]], dict[str, Any]]
    reproduces: str
    sparse: str

    def signature(self) -> str:
        """The accepted arguments with their defaults, e.g. ``lr=0.01, alpha=0.99``."""
        return ", ".join(name if arg.default is REQUIRED else f"{name}={arg.default!r}"
                         for name, arg in self.arguments.items())


def mindspore_decay_filter(name: str) -> bool:
    """MindSpore's default weight-decay filter: parameters whose name contains 'beta' or 'gamma' are not decayed."""
    return "beta" not in name and "gamma" not in name


def _check(owner: str, name: str, value: Any, kind: str) -> Any:
    if kind.startswith("optional-"):
        return None if value is None else _check(owner, name, value, kind[len("optional-"):])
    if kind == "lr":
        if callable(value) or isinstance(value, (list, tuple, np.ndarray)):
            return validate_learn_rate(owner, value, name)
        return check_range(owner, name, value, 0.0)
    if kind == "decay":
        return check_range(owner, name, value, 0.0, 1.0)
    if kind == "momentum":
        return check_range(owner, name, value, 0.0, 1.0, highOpen=True)
    if kind == "eps":  # as RMSProp checks its epsilon, under the framework's name
        return check_float32_range(owner, name, value, 0.0, lowOpen=True, least=FLOAT32_TINY, reason=EPSILON_REASON)
    if kind == "positive":
        return check_range(owner, name, value, 0.0, lowOpen=True)
    if kind == "nonneg":
        return check_range(owner, name, value, 0.0)
    if kind == "bool":
        return check_bool(owner, name, value)
    return value


def _keras_clipping(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    given = [name for name in ("clipnorm", "clipvalue", "global_clipnorm") if a[name] is not None]
    if len(given) > 1:
        raise ValueError(f"{owner}: only one of clipnorm, clipvalue and global_clipnorm can be set, got {given}")
    return {"clipNorm": a["clipnorm"], "clipValue": a["clipvalue"], "globalClipNorm": a["global_clipnorm"]}


def _puzzlelib(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learnRate"], "factor": a["factor"], "epsilon": a["epsilon"], "nodeinfo": a["nodeinfo"]}


def _puzzlelib_graves(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learnRate"], "factor": a["alpha"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "centered": True, "momentum": a["momRate"], "nodeinfo": a["nodeinfo"]}


def _torch(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["lr"], "factor": a["alpha"], "epsilon": a["eps"], "momentum": a["momentum"],
            "lrInMomentum": False, "centered": a["centered"], "weightDecay": a["weight_decay"],
            "maximize": a["maximize"]}


def _keras(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learning_rate"], "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "momentum": a["momentum"], "centered": a["centered"],
            "decoupledWeightDecay": a["weight_decay"] or 0.0,
            "lossScale": 1.0 if a["loss_scale_factor"] is None else a["loss_scale_factor"],
            **_keras_clipping(owner, a)}


def _tf_keras(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    withMomentum = a["momentum"] > 0
    return {"learnRate": a["learning_rate"], "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": withMomentum,
            "momentum": a["momentum"], "centered": a["centered"],
            "sparseUpdate": "lazy" if withMomentum else "dense", **_keras_clipping(owner, a)}


def _tf1(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learning_rate"], "factor": a["decay"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "initialMeanSquare": 1.0, "momentum": a["momentum"], "centered": a["centered"], "sparseUpdate": "lazy"}


def _mindspore(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # MindSpore adds weight_decay * w to the still loss-scaled gradient, then divides by loss_scale.
    return {"learnRate": a["learning_rate"], "factor": a["decay"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "initialMeanSquare": 1.0, "momentum": a["momentum"], "centered": a["centered"],
            "lossScale": a["loss_scale"], "weightDecay": a["weight_decay"] / a["loss_scale"],
            "decayFilter": mindspore_decay_filter, "sparseUpdate": "lazy"}


def _mxnet_common(a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learning_rate"], "epsilon": a["epsilon"], "centered": a["centered"],
            "clipWeights": a["clip_weights"], "weightDecay": a["wd"], "lossScale": 1.0 / a["rescale_grad"],
            "clipValue": a["clip_gradient"]}


def _mxnet(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {**_mxnet_common(a), "factor": a["gamma1"], "epsInSqrt": True,
            "momentum": a["gamma2"] if a["centered"] else 0.0, "wdBeforeClip": True}


def _mxnet2(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {**_mxnet_common(a), "factor": a["rho"], "epsInSqrt": a["centered"],
            "momentum": a["momentum"] if a["centered"] else 0.0, "wdBeforeClip": False}


def _optax(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    momentum = a["momentum"] or 0.0
    return {"learnRate": a["learning_rate"], "factor": a["decay"], "epsilon": a["eps"],
            "epsInSqrt": a["eps_in_sqrt"], "initialMeanSquare": a["initial_scale"], "centered": a["centered"],
            "momentum": momentum, "nesterov": a["nesterov"] and momentum > 0,
            "biasCorrection": a["bias_correction"]}


_A = Argument
_KERAS_CLIP = {"clipnorm": _A(None, "optional-positive"), "clipvalue": _A(None, "optional-positive"),
               "global_clipnorm": _A(None, "optional-positive")}
_MXNET_TAIL = {"epsilon": _A(1e-8, "eps"), "centered": _A(False, "bool"), "clip_weights": _A(None, "optional-positive"),
               "wd": _A(0.0, "nonneg"), "rescale_grad": _A(1.0, "positive"),
               "clip_gradient": _A(None, "optional-positive")}

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("puzzlelib", {"learnRate": _A(1e-3, "lr"), "factor": _A(0.9, "decay"), "epsilon": _A(1e-5, "eps"),
                         "nodeinfo": _A(None, "any")},
           _puzzlelib, "PuzzleLib RMSProp: eps outside the root, no momentum", "dense"),
    Preset("puzzlelib-graves", {"learnRate": _A(1e-4, "lr"), "alpha": _A(0.95, "decay"), "momRate": _A(0.9, "momentum"),
                                "epsilon": _A(1e-4, "eps"), "nodeinfo": _A(None, "any")},
           _puzzlelib_graves, "PuzzleLib RMSPropGraves (Graves 2013): centered, eps inside, lr inside the momentum",
           "dense"),
    Preset("torch", {"lr": _A(1e-2, "lr"), "alpha": _A(0.99, "decay"), "eps": _A(1e-8, "eps"),
                     "weight_decay": _A(0.0, "nonneg"), "momentum": _A(0.0, "momentum"), "centered": _A(False, "bool"),
                     "maximize": _A(False, "bool")},
           _torch, "torch.optim.RMSprop: eps outside, lr outside the momentum buffer, coupled weight decay",
           "dense (torch.optim.RMSprop rejects sparse gradients)"),
    Preset("keras", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                     "epsilon": _A(1e-7, "eps"), "centered": _A(False, "bool"),
                     "weight_decay": _A(None, "optional-nonneg"), **_KERAS_CLIP,
                     "loss_scale_factor": _A(None, "optional-positive")},
           _keras, "keras.optimizers.RMSprop (Keras 3): eps inside, lr inside the momentum, decoupled weight decay",
           "dense"),
    Preset("tf.keras", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                        "epsilon": _A(1e-7, "eps"), "centered": _A(False, "bool"), **_KERAS_CLIP},
           _tf_keras, "tf.keras.optimizers.legacy.RMSprop (Keras 2): eps outside when momentum == 0, inside when > 0",
           "lazy when momentum > 0 (its sparse raw op), dense when momentum == 0"),
    Preset("tf1", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                   "epsilon": _A(1e-10, "eps"), "centered": _A(False, "bool")},
           _tf1, "tf.compat.v1.train.RMSPropOptimizer: eps inside, lr inside the momentum, mean square starts at 1",
           "lazy"),
    Preset("mindspore", {"learning_rate": _A(0.1, "lr"), "decay": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                         "epsilon": _A(1e-10, "eps"), "centered": _A(False, "bool"), "loss_scale": _A(1.0, "positive"),
                         "weight_decay": _A(0.0, "nonneg")},
           _mindspore, "mindspore.nn.RMSProp: as TF1, plus loss_scale and coupled weight decay skipping beta/gamma",
           "lazy"),
    Preset("mxnet", {"learning_rate": _A(1e-3, "lr"), "gamma1": _A(0.9, "decay"), "gamma2": _A(0.9, "momentum"),
                     **_MXNET_TAIL},
           _mxnet, "mxnet.optimizer.RMSProp (1.x): eps inside; centered adds gamma2 momentum; wd before clip_gradient",
           "dense"),
    Preset("mxnet2", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.9, "momentum"),
                      **_MXNET_TAIL},
           _mxnet2, "mxnet.optimizer.RMSProp (2.x): eps outside (plain) or inside (centered); wd after clip_gradient",
           "dense"),
    Preset("optax", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "eps": _A(1e-8, "eps"),
                     "initial_scale": _A(0.0, "nonneg"), "eps_in_sqrt": _A(True, "bool"), "centered": _A(False, "bool"),
                     "momentum": _A(None, "optional-momentum"), "nesterov": _A(False, "bool"),
                     "bias_correction": _A(False, "bool")},
           _optax, "optax.rmsprop: eps per eps_in_sqrt, lr inside the trace, optax's nesterov and bias correction",
           "dense"),
)}


def preset_arguments(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``kwargs`` against preset ``name`` and return the equivalent RMSProp keyword arguments.

    Raises ValueError for an unknown preset or an out-of-range value, TypeError for an argument the
    framework does not have or a missing required one (listing the accepted arguments).
    """
    check_choice("RMSProp.like", "name", name, tuple(PRESETS))
    preset = PRESETS[name]
    owner = f"RMSProp.like({name!r})"
    unknown = [key for key in kwargs if key not in preset.arguments]
    if unknown:
        raise TypeError(f"{owner}: {name} has no argument {', '.join(map(repr, unknown))}; "
                        f"it accepts: {preset.signature()}")
    missing = [key for key, arg in preset.arguments.items() if arg.default is REQUIRED and key not in kwargs]
    if missing:
        raise TypeError(f"{owner}: missing the required argument {', '.join(map(repr, missing))}; "
                        f"it accepts: {preset.signature()}")
    values = {key: _check(owner, key, kwargs.get(key, arg.default), arg.kind) for key, arg in preset.arguments.items()}
    return preset.translate(owner, values)
