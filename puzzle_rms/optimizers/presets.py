"""Presets behind ``RMSProp.like(name, **kwargs)``: each framework's RMSProp under its own argument names.

Every preset takes the arguments its framework's RMSProp takes, with that framework's defaults, checks
them under those names, and translates them into :class:`~puzzle_rms.optimizers.rmsprop.RMSProp`
options. Arguments that change the numbers are reproduced; those that only choose the framework's
implementation are accepted and ignored (each preset's ``ignored``). The table of what each one
reproduces is in :data:`PRESETS` (and in the README); every formula is in
:mod:`puzzle_rms.backends.reference`; ``tests/goldens/`` holds each framework's own trajectories.

============== ================================================ ==================================================
preset         framework                                        accepted and ignored
============== ================================================ ==================================================
torch          ``torch.optim.RMSprop``                          foreach, capturable, differentiable
keras3         ``keras.optimizers.RMSprop`` (Keras 3; alias     name
               ``keras``)
keras2         ``tf.keras.optimizers.RMSprop`` since TF 2.11    jit_compile, name
               (``tf_keras.optimizers.RMSprop``)
keras2-legacy  ``tf.keras.optimizers.legacy.RMSprop``           name
               (``tf_keras.optimizers.legacy.RMSprop``)
tf1            ``tf.compat.v1.train.RMSPropOptimizer``          use_locking, name
optax          ``optax.rmsprop``                                (none)
============== ================================================ ==================================================

The name ``tf.keras`` is retired: it reproduced the legacy optimizer while ``tf.keras.optimizers.RMSprop``
is the new one since TF 2.11 (see :data:`RETIRED`). Refused although the framework accepts it: torch's
``alpha > 1`` (the mean square turns negative on the first step and every update is NaN there).

Repeated rows of a row-sparse gradient (``sparseDuplicates``): Keras 2 (both) clips each occurrence on its
own (norms over the un-summed rows, clipvalue per occurrence) and sums them afterwards; Keras 3 on
TensorFlow also adds each occurrence's square to the mean square (except with global_clipnorm, which
densifies the rows); the others sum repeated rows first. TF's raw ``SparseApplyRMSProp`` applies one
step per occurrence: :mod:`puzzle_rms.ops` ``duplicates="apply"``.

The one deliberate difference: the centered variance ``ms - mg**2`` is clamped at 0 before the root.
Where rounding makes it negative, torch (``sqrt(v) + eps``) gives NaN; TF, Keras and optax with eps inside
(``sqrt(v + eps)``) give NaN only when ``v + eps < 0`` and otherwise a denominator below ``sqrt(eps)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from puzzle_rms.optimizers.schedules import InverseTimeDecay, validate_learn_rate
from puzzle_rms.validation import check_bool, check_choice, check_int, check_range

__all__ = ["ALIASES", "PRESETS", "REQUIRED", "RETIRED", "Argument", "Preset", "mindspore_decay_filter",
           "preset_arguments", "preset_group", "resolve_name"]

REQUIRED = object()  # the default of an argument that has none


@dataclass(frozen=True)
class Argument:
    """One argument of a preset: its default (or :data:`REQUIRED`) and the check it gets.

    ``kind`` is one of: ``lr`` (a float >= 0, a callable of the step, or a sequence), ``decay`` (in
    [0, 1]), ``momentum`` (in [0, 1)), ``eps`` (> 0), ``nonneg`` (>= 0), ``positive`` (> 0), ``bool``,
    ``count`` (an integer >= 1), ``any`` (not checked here); ``optional-<kind>`` also accepts None.
    """

    default: Any
    kind: str


@dataclass(frozen=True)
class Preset:
    """A framework's RMSProp: its arguments, how they map onto RMSProp options, and what it reproduces.

    ``ignored`` names the arguments that are accepted and checked but do not change the numbers (they
    choose the framework's implementation). ``groupArguments`` are the per-group keys of the framework's
    parameter groups that puzzle_rms groups carry (checked as the preset's argument of that name), and
    ``translateGroup`` maps them onto :meth:`~puzzle_rms.optimizers.optimizer.Optimizer.setupOn` group keys
    (see :func:`preset_group`).
    """

    name: str
    arguments: dict[str, Argument]
    translate: Callable[[str, dict[str, Any]], dict[str, Any]]
    reproduces: str
    sparse: str
    groupArguments: tuple[str, ...] = ()
    translateGroup: Optional[Callable[[str, dict[str, Any]], dict[str, Any]]] = None
    ignored: tuple[str, ...] = ()  # accepted (checked) but not changing the numbers

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
            return validate_learn_rate(owner, value)
        return check_range(owner, name, value, 0.0)
    if kind == "decay":
        return check_range(owner, name, value, 0.0, 1.0)
    if kind == "momentum":
        return check_range(owner, name, value, 0.0, 1.0, highOpen=True)
    if kind == "eps" or kind == "positive":
        return check_range(owner, name, value, 0.0, lowOpen=True)
    if kind == "count":
        return check_int(owner, name, value, 1)
    if kind == "nonneg":
        return check_range(owner, name, value, 0.0)
    if kind == "bool":
        return check_bool(owner, name, value)
    return value


def _only_one_clip(owner: str, a: dict[str, Any]) -> None:
    given = [name for name in ("clipnorm", "clipvalue", "global_clipnorm") if a[name] is not None]
    if len(given) > 1:
        raise ValueError(f"{owner}: only one of clipnorm, clipvalue and global_clipnorm can be set, got {given}")


def _not_both_norms(owner: str, a: dict[str, Any]) -> None:
    if a["clipnorm"] is not None and a["global_clipnorm"] is not None:
        raise ValueError(f"{owner}: at most one of clipnorm and global_clipnorm can be set, got "
                         f"clipnorm={a['clipnorm']!r}, global_clipnorm={a['global_clipnorm']!r}")


def _keras_ema(a: dict[str, Any]) -> dict[str, Any]:
    return {"emaMomentum": a["ema_momentum"] if a["use_ema"] else None,
            "emaOverwriteFrequency": a["ema_overwrite_frequency"] if a["use_ema"] else None}


def _puzzlelib(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learnRate"], "factor": a["factor"], "epsilon": a["epsilon"], "nodeinfo": a["nodeinfo"]}


def _puzzlelib_graves(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {"learnRate": a["learnRate"], "factor": a["alpha"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "centered": True, "momentum": a["momRate"], "nodeinfo": a["nodeinfo"]}


def _torch(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # foreach, capturable and differentiable choose torch's implementation, not its numbers: accepted, ignored
    return {"learnRate": a["lr"], "factor": a["alpha"], "epsilon": a["eps"], "momentum": a["momentum"],
            "lrInMomentum": False, "centered": a["centered"], "weightDecay": a["weight_decay"],
            "maximize": a["maximize"]}


def _torch_group(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    return {{"lr": "learnRate", "weight_decay": "weightDecay"}[key]: value for key, value in a.items()}


def _keras3(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # name does not change the numbers: accepted, ignored. On the TensorFlow backend a row-sparse gradient
    # stays tf.IndexedSlices through clipnorm/clipvalue, so the mean square adds each occurrence's square;
    # global_clipnorm multiplies it into a dense tensor (repeated rows summed), so only its norm is per occurrence.
    _only_one_clip(owner, a)
    return {"learnRate": a["learning_rate"], "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "momentum": a["momentum"], "centered": a["centered"],
            "decoupledWeightDecay": a["weight_decay"] or 0.0,
            "lossScale": 1.0 if a["loss_scale_factor"] is None else a["loss_scale_factor"],
            "clipNorm": a["clipnorm"], "clipValue": a["clipvalue"], "globalClipNorm": a["global_clipnorm"],
            "gradientAccumulationSteps": a["gradient_accumulation_steps"] or 1, "emaStart": "first-update",
            "sparseDuplicates": "clip-per-occurrence" if a["global_clipnorm"] is not None else "square-per-occurrence",
            **_keras_ema(a)}


def _keras2(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # jit_compile and name do not change the numbers: accepted, ignored. Keras 2 clips by clipnorm, else by
    # global_clipnorm, else by clipvalue: a clipvalue given with a norm is ignored, as there.
    _not_both_norms(owner, a)
    norm = a["clipnorm"] is not None or a["global_clipnorm"] is not None
    return {"learnRate": a["learning_rate"], "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "momentum": a["momentum"], "centered": a["centered"],
            "decoupledWeightDecay": a["weight_decay"] or 0.0,
            "clipNorm": a["clipnorm"], "clipValue": None if norm else a["clipvalue"],
            "globalClipNorm": a["global_clipnorm"], "emaStart": "initial-weights",
            "sparseDuplicates": "clip-per-occurrence", **_keras_ema(a)}


def _keras2_legacy(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # name does not change the numbers: accepted, ignored. clipvalue applies before clipnorm/global_clipnorm.
    _not_both_norms(owner, a)
    withMomentum = a["momentum"] > 0
    learnRate = a["learning_rate"] if not a["decay"] else InverseTimeDecay(a["learning_rate"], a["decay"])
    return {"learnRate": learnRate, "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": withMomentum,
            "momentum": a["momentum"], "centered": a["centered"],
            "sparseUpdate": "lazy" if withMomentum else "dense", "clipNorm": a["clipnorm"],
            "clipValue": a["clipvalue"], "globalClipNorm": a["global_clipnorm"], "clipValueFirst": True,
            "sparseDuplicates": "clip-per-occurrence"}


def _tf1(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # use_locking and name do not change the numbers: accepted, ignored. Repeated sparse indices are summed
    # first (the optimizer deduplicates before its sparse raw op).
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
_KERAS_EMA = {"use_ema": _A(False, "bool"), "ema_momentum": _A(0.99, "decay"),
              "ema_overwrite_frequency": _A(None, "optional-count")}
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
    Preset("torch", {"lr": _A(1e-2, "lr"), "alpha": _A(0.99, "decay"), "eps": _A(1e-8, "nonneg"),
                     "weight_decay": _A(0.0, "nonneg"), "momentum": _A(0.0, "nonneg"), "centered": _A(False, "bool"),
                     "foreach": _A(None, "optional-bool"), "maximize": _A(False, "bool"),
                     "capturable": _A(False, "bool"), "differentiable": _A(False, "bool")},
           _torch, "torch.optim.RMSprop: eps outside, lr outside the momentum buffer, coupled weight decay",
           "dense (torch.optim.RMSprop rejects sparse gradients)", ("lr", "weight_decay"), _torch_group,
           ("foreach", "capturable", "differentiable")),
    Preset("keras3", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                      "epsilon": _A(1e-7, "nonneg"), "centered": _A(False, "bool"),
                      "weight_decay": _A(None, "optional-nonneg"), **_KERAS_CLIP, **_KERAS_EMA,
                      "loss_scale_factor": _A(None, "optional-positive"),
                      "gradient_accumulation_steps": _A(None, "optional-count"), "name": _A("rmsprop", "any")},
           _keras3, "keras.optimizers.RMSprop (Keras 3): eps inside, lr inside the momentum, decoupled weight decay",
           "dense; on the TensorFlow backend each occurrence of a repeated row is squared on its own",
           ignored=("name",)),
    Preset("keras2", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                      "epsilon": _A(1e-7, "nonneg"), "centered": _A(False, "bool"),
                      "weight_decay": _A(None, "optional-nonneg"), **_KERAS_CLIP, **_KERAS_EMA,
                      "jit_compile": _A(True, "bool"), "name": _A("RMSprop", "any")},
           _keras2, "tf.keras.optimizers.RMSprop since TF 2.11 (tf_keras.optimizers.RMSprop, Keras 2): as Keras 3",
           "dense; each occurrence of a repeated row clipped on its own, then summed", ignored=("jit_compile", "name")),
    Preset("keras2-legacy", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"),
                             "momentum": _A(0.0, "momentum"), "epsilon": _A(1e-7, "nonneg"),
                             "centered": _A(False, "bool"), "name": _A("RMSprop", "any"), **_KERAS_CLIP,
                             "decay": _A(0.0, "nonneg")},
           _keras2_legacy, "tf.keras.optimizers.legacy.RMSprop (tf_keras.optimizers.legacy.RMSprop, Keras 2): "
           "eps outside when momentum == 0, inside when > 0; lr / (1 + decay * step)",
           "lazy when momentum > 0 (its sparse raw op), dense when momentum == 0; each occurrence of a repeated "
           "row clipped on its own, then summed", ignored=("name",)),
    Preset("tf1", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                   "epsilon": _A(1e-10, "nonneg"), "use_locking": _A(False, "bool"), "centered": _A(False, "bool"),
                   "name": _A("RMSProp", "any")},
           _tf1, "tf.compat.v1.train.RMSPropOptimizer: eps inside, lr inside the momentum, mean square starts at 1",
           "lazy (repeated rows summed first)", ignored=("use_locking", "name")),
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
    Preset("optax", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "eps": _A(1e-8, "nonneg"),
                     "initial_scale": _A(0.0, "nonneg"), "eps_in_sqrt": _A(True, "bool"), "centered": _A(False, "bool"),
                     "momentum": _A(None, "optional-nonneg"), "nesterov": _A(False, "bool"),
                     "bias_correction": _A(False, "bool")},
           _optax, "optax.rmsprop: eps per eps_in_sqrt, lr inside the trace, optax's nesterov and bias correction",
           "dense"),
)}


ALIASES: dict[str, str] = {"keras": "keras3"}  # the ``keras`` package is Keras 3
RETIRED: dict[str, str] = {
    "tf.keras": "'tf.keras' was ambiguous: it reproduced tf.keras.optimizers.legacy.RMSprop, while since TF 2.11 "
                "tf.keras.optimizers.RMSprop is the new Keras 2 optimizer. Use 'keras2-legacy' for "
                "tf.keras.optimizers.legacy.RMSprop or 'keras2' for tf.keras.optimizers.RMSprop (TF >= 2.11)",
}


def resolve_name(owner: str, name: str) -> str:
    """The preset that ``name`` (a preset name or an alias) means; ValueError for a retired or unknown name."""
    if name in RETIRED:
        raise ValueError(f"{owner}: {RETIRED[name]}")
    name = ALIASES.get(name, name)
    check_choice(owner, "name", name, tuple(PRESETS) + tuple(ALIASES))
    return name


def preset_arguments(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check ``kwargs`` against preset ``name`` (or an alias of it, see :data:`ALIASES`) and return the
    equivalent RMSProp keyword arguments.

    Raises ValueError for an unknown or retired preset name or an out-of-range value, TypeError for an
    argument the framework does not have or a missing required one (listing the accepted arguments).
    """
    name = resolve_name("RMSProp.like", name)
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


def preset_group(name: str, groupKwargs: dict[str, Any]) -> dict[str, Any]:
    """One of framework ``name``'s parameter groups (its per-group keys, without ``params``) as the keys of a
    :meth:`~puzzle_rms.optimizers.optimizer.Optimizer.setupOn` group; add ``params`` to it.

    ``RMSProp.like("torch", lr=0.01).setupOn([{**preset_group("torch", {"lr": 0.1}), "params": head}, ...])``.
    Keys the group leaves out inherit the optimizer's values, as in the framework. Raises TypeError for a
    key that the framework's groups do not have or that puzzle_rms groups cannot carry per group (listing
    the accepted ones), ValueError for a value out of its range.
    """
    name = resolve_name("preset_group", name)
    preset = PRESETS[name]
    owner = f"preset_group({name!r})"
    unknown = [key for key in groupKwargs if key not in preset.groupArguments]
    if unknown or preset.translateGroup is None:
        accepted = ", ".join(preset.groupArguments) or "none (this preset has no parameter groups)"
        raise TypeError(f"{owner}: per-group {', '.join(map(repr, unknown or list(groupKwargs)))} not supported; "
                        f"a parameter group of {name} accepts: {accepted}")
    values = {key: _check(owner, key, value, preset.arguments[key].kind) for key, value in groupKwargs.items()}
    return preset.translateGroup(owner, values)
