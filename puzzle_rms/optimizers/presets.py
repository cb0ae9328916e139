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
mindspore      ``mindspore.nn.RMSProp``                         use_locking
mxnet          ``mx.optimizer.RMSProp`` (1.x)                   (none)
mxnet2         ``mx.optimizer.RMSProp`` (2.x)                   use_fused_step, param_idx2name
paddle         ``paddle.optimizer.RMSProp``                     name
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
(``sqrt(v + eps)``) give NaN only when ``v + eps < 0`` and otherwise a denominator below ``sqrt(eps)``;
MindSpore's CPU kernel leaves the element's ``var`` and ``mom`` unchanged when ``v + eps < 0``. The
MindSpore preset also differs from MindSpore's CPU kernel where that kernel puts eps outside the root
against its documentation (README: deliberate differences).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from puzzle_rms.optimizers.schedules import InverseTimeDecay, validate_learn_rate
from puzzle_rms.validation import (EPSILON_REASON, FLOAT32_TINY, check_bool, check_choice, check_float32_range,
                                   check_int, check_range, check_real)

__all__ = ["ALIASES", "PRESETS", "REQUIRED", "RETIRED", "Argument", "Preset", "mindspore_decay_filter",
           "mxnet_decay_filter", "preset_arguments", "preset_group", "resolve_name"]

REQUIRED = object()  # the default of an argument that has none
_GROUP_KEY_KINDS = {"lr": "lr", "grad_centralization": "bool"}  # group-only keys


@dataclass(frozen=True)
class Argument:
    """One argument of a preset: its default (or :data:`REQUIRED`) and the check it gets.

    ``kind`` is one of: ``lr`` (a float >= 0, a callable of the step, or a sequence), ``decay`` (in
    [0, 1]), ``momentum`` (in [0, 1)), ``eps`` (> 0) and ``eps0`` (>= 0), both at least float32's smallest
    normal number when not 0, ``nonneg`` (>= 0), ``positive`` (> 0), ``bool``,
    ``clip`` (None or any real number; the preset reads <= 0 as off, as MXNet does),
    ``names`` (None or a dict index -> parameter name, MXNet's ``param_idx2name``), ``scheduler`` (None or a
    callable of MXNet's 1-based update count), ``index`` (an integer >= 0), ``paddle-decay`` and
    ``paddle-clip`` (Paddle's ``weight_decay`` and ``grad_clip``, see :func:`_paddle_weight_decay` and
    :func:`_paddle_grad_clip`), ``count`` (an integer >= 1),
    ``any`` (not checked here); ``optional-<kind>`` also accepts None.
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
            return validate_learn_rate(owner, value, name)
        return check_range(owner, name, value, 0.0)
    if kind == "decay":
        return check_range(owner, name, value, 0.0, 1.0)
    if kind == "momentum":
        return check_range(owner, name, value, 0.0, 1.0, highOpen=True)
    if kind in ("eps", "eps0"):  # as RMSProp checks its epsilon (eps0: 0 allowed too), under the framework's name
        return check_float32_range(owner, name, value, 0.0, lowOpen=kind == "eps", least=FLOAT32_TINY,
                                   reason=EPSILON_REASON)
    if kind == "positive":
        return check_range(owner, name, value, 0.0, lowOpen=True)
    if kind == "count":
        return check_int(owner, name, value, 1)
    if kind == "nonneg":
        return check_range(owner, name, value, 0.0)
    if kind == "bool":
        return check_bool(owner, name, value)
    if kind == "clip":
        return None if value is None else check_real(owner, name, value)
    if kind == "scheduler":
        if value is not None and not callable(value):
            raise TypeError(f"{owner}: {name} must be None or a callable num_update -> learning rate (an MXNet "
                            f"LRScheduler), got {value!r}")
        return value
    if kind == "index":
        return check_int(owner, name, value, 0)
    if kind == "paddle-decay":
        return _paddle_weight_decay(owner, name, value)
    if kind == "paddle-clip":
        return _paddle_grad_clip(owner, name, value)
    if kind == "names":
        if value is not None and not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
            raise TypeError(f"{owner}: {name} must be None or a dict of parameter index -> parameter name, "
                            f"got {value!r}")
        return value
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
    # MindSpore multiplies weight_decay by loss_scale and adds it to the still loss-scaled gradient before
    # dividing by loss_scale: the net step uses g / loss_scale + weight_decay * w. use_locking only guards
    # concurrent updates: accepted, ignored.
    return {"learnRate": a["learning_rate"], "factor": a["decay"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "initialMeanSquare": 1.0, "momentum": a["momentum"], "centered": a["centered"],
            "lossScale": a["loss_scale"], "weightDecay": a["weight_decay"],
            "decayFilter": mindspore_decay_filter, "sparseUpdate": "lazy"}


def _mindspore_group(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # with parameter groups MindSpore decays every parameter of a group whose weight_decay is > 0: no name filter
    if a.get("grad_centralization"):
        raise ValueError(f"{owner}: grad_centralization=True is not reproduced (it subtracts each gradient's mean "
                         f"over all but the first axis where that axis has a multiple of 16 entries); expected False")
    keys = {"lr": "learnRate", "weight_decay": "weightDecay"}
    return {**{keys[key]: value for key, value in a.items() if key in keys}, "decayFilter": None}


def _mxnet_common(a: dict[str, Any]) -> dict[str, Any]:
    # MXNet passes a clip value to its kernel only when it is truthy, and the kernel clips only when it is > 0
    def clip(value: Optional[float]) -> Optional[float]:
        return value if value is not None and value > 0 else None
    return {"learnRate": _mxnet_learn_rate(a), "epsilon": a["epsilon"], "centered": a["centered"],
            "clipWeights": clip(a["clip_weights"]), "weightDecay": a["wd"], "lossScale": 1.0 / a["rescale_grad"],
            "clipValue": clip(a["clip_gradient"])}


def _mxnet_learn_rate(a: dict[str, Any]) -> Any:
    """MXNet's rate: ``lr_scheduler(num_update)`` with ``num_update = begin_num_update + step + 1``; like MXNet,
    a scheduler whose ``base_lr`` differs from ``learning_rate`` gets ``base_lr = learning_rate``."""
    scheduler, begin, lr = a["lr_scheduler"], a["begin_num_update"], a["learning_rate"]
    if scheduler is None:
        return 0.01 if lr is None else lr  # MXNet's rate when neither is given
    if lr is not None and getattr(scheduler, "base_lr", lr) != lr:
        scheduler.base_lr = lr
    return lambda step: scheduler(begin + step + 1)


def mxnet_decay_filter(param_idx2name: dict[Any, str]) -> Callable[[str], bool]:
    """MXNet 1.x's weight-decay rule once ``param_idx2name`` names the parameters: a parameter listed there
    whose name ends in neither ``_weight`` nor ``_gamma`` gets ``wd_mult`` 0 (so biases and BatchNorm
    betas are not decayed); parameters not listed keep ``wd``."""
    listed = frozenset(param_idx2name.values())
    return lambda name: name not in listed or name.endswith(("_weight", "_gamma"))


def _mxnet(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    decayFilter = None if not a["param_idx2name"] else mxnet_decay_filter(a["param_idx2name"])
    return {**_mxnet_common(a), "factor": a["gamma1"], "epsInSqrt": True,
            "momentum": a["gamma2"] if a["centered"] else 0.0, "wdBeforeClip": True, "decayFilter": decayFilter}


def _mxnet2(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # param_idx2name only names the parameters in 2.x (no wd_mult rule), and use_fused_step picks the fused
    # kernel or the Python step, whose numbers agree: both accepted, neither changes the numbers; except that
    # the Python step clips to [-c, c] even for c <= 0 (zeroing the gradient), which is refused here.
    if not a["use_fused_step"] and a["clip_gradient"] is not None and a["clip_gradient"] <= 0:
        raise ValueError(f"{owner}: clip_gradient={a['clip_gradient']!r} with use_fused_step=False makes MXNet clip "
                         f"every gradient to [{-a['clip_gradient']!r}, {a['clip_gradient']!r}]; expected "
                         f"clip_gradient > 0 or None there")
    return {**_mxnet_common(a), "factor": a["rho"], "epsInSqrt": a["centered"],
            "momentum": a["momentum"] if a["centered"] else 0.0, "wdBeforeClip": False}


_PADDLE_CLIPS = {"ClipGradByNorm": ("clip_norm",), "ClipGradByGlobalNorm": ("clip_norm",),
                 "ClipGradByValue": ("max", "min")}


def _paddle_weight_decay(owner: str, name: str, value: Any) -> float:
    """Paddle's ``weight_decay``: None, a float (L2 coefficient) or a ``paddle.regularizer.L2Decay`` (read by
    its class name and ``coeff``, so paddle need not be installed here). L1Decay changes the numbers in a
    way puzzle_rms does not reproduce: refused."""
    if value is None:
        return 0.0
    kind = type(value).__name__
    if kind == "L2Decay":
        value = getattr(value, "coeff", getattr(value, "_coeff", None))
    elif kind == "L1Decay":
        raise ValueError(f"{owner}: {name}=L1Decay is not reproduced (puzzle_rms has coupled L2 decay only); "
                         f"expected None, a float >= 0 or paddle.regularizer.L2Decay")
    return check_range(owner, name, value, 0.0)


def _paddle_grad_clip(owner: str, name: str, value: Any) -> Optional[dict[str, float]]:
    """Paddle's ``grad_clip`` as ``{"type": class name, <its arguments>}`` or a paddle clip object (read by its
    class name and attributes): ClipGradByNorm(clip_norm), ClipGradByGlobalNorm(clip_norm) or
    ClipGradByValue(max, min=-max); ClipGradByValue must be symmetric (puzzle_rms clips to [-c, c])."""
    if value is None:
        return None
    if isinstance(value, dict):
        kind, args = value.get("type"), {k: v for k, v in value.items() if k != "type"}
    else:
        kind = type(value).__name__
        args = {arg: getattr(value, arg) for arg in _PADDLE_CLIPS.get(kind, ()) if hasattr(value, arg)}
    if kind not in _PADDLE_CLIPS or set(args) - set(_PADDLE_CLIPS[kind]) or _PADDLE_CLIPS[kind][0] not in args:
        raise ValueError(f"{owner}: {name} must be None, paddle.nn.ClipGradByNorm(clip_norm), "
                         f"ClipGradByGlobalNorm(clip_norm) or ClipGradByValue(max, min=None), or the same as "
                         f"{{'type': <class name>, <arguments>}}; got {value!r}")
    limit = check_range(owner, f"{name} {_PADDLE_CLIPS[kind][0]}", args[_PADDLE_CLIPS[kind][0]], 0.0, lowOpen=True)
    if kind == "ClipGradByValue" and args.get("min") is not None and args["min"] != -limit:
        raise ValueError(f"{owner}: {name}=ClipGradByValue(max={limit!r}, min={args['min']!r}) is not symmetric; "
                         f"expected min=None or min=-max (puzzle_rms clips to [-c, c])")
    return {"type": kind, "limit": limit}


def _paddle(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # Paddle clips first, then adds the L2 term; name only labels the optimizer: accepted, ignored
    clip = a["grad_clip"] or {"type": None, "limit": None}
    return {"learnRate": a["learning_rate"], "factor": a["rho"], "epsilon": a["epsilon"], "epsInSqrt": True,
            "momentum": a["momentum"], "centered": a["centered"], "weightDecay": a["weight_decay"],
            "wdBeforeClip": False, "clipNorm": clip["limit"] if clip["type"] == "ClipGradByNorm" else None,
            "globalClipNorm": clip["limit"] if clip["type"] == "ClipGradByGlobalNorm" else None,
            "clipValue": clip["limit"] if clip["type"] == "ClipGradByValue" else None}


def _paddle_group(owner: str, a: dict[str, Any]) -> dict[str, Any]:
    # a Paddle group's learning_rate scales the optimizer's (and its scheduler's) rate
    keys = {"learning_rate": "learnRateScale", "weight_decay": "weightDecay"}
    return {keys[key]: value for key, value in a.items()}


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
_MXNET_TAIL = {"epsilon": _A(1e-8, "eps"), "centered": _A(False, "bool"), "clip_weights": _A(None, "clip"),
               "wd": _A(0.0, "nonneg"), "rescale_grad": _A(1.0, "positive"), "clip_gradient": _A(None, "clip"),
               "param_idx2name": _A(None, "names"), "lr_scheduler": _A(None, "scheduler"),
               "begin_num_update": _A(0, "index")}

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (
    Preset("puzzlelib", {"learnRate": _A(1e-3, "lr"), "factor": _A(0.9, "decay"), "epsilon": _A(1e-5, "eps"),
                         "nodeinfo": _A(None, "any")},
           _puzzlelib, "PuzzleLib RMSProp: eps outside the root, no momentum", "dense"),
    Preset("puzzlelib-graves", {"learnRate": _A(1e-4, "lr"), "alpha": _A(0.95, "decay"), "momRate": _A(0.9, "momentum"),
                                "epsilon": _A(1e-4, "eps"), "nodeinfo": _A(None, "any")},
           _puzzlelib_graves, "PuzzleLib RMSPropGraves (Graves 2013): centered, eps inside, lr inside the momentum",
           "dense"),
    Preset("torch", {"lr": _A(1e-2, "lr"), "alpha": _A(0.99, "decay"), "eps": _A(1e-8, "eps0"),
                     "weight_decay": _A(0.0, "nonneg"), "momentum": _A(0.0, "nonneg"), "centered": _A(False, "bool"),
                     "foreach": _A(None, "optional-bool"), "maximize": _A(False, "bool"),
                     "capturable": _A(False, "bool"), "differentiable": _A(False, "bool")},
           _torch, "torch.optim.RMSprop: eps outside, lr outside the momentum buffer, coupled weight decay",
           "dense (torch.optim.RMSprop rejects sparse gradients)", ("lr", "weight_decay"), _torch_group,
           ("foreach", "capturable", "differentiable")),
    Preset("keras3", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                      "epsilon": _A(1e-7, "eps0"), "centered": _A(False, "bool"),
                      "weight_decay": _A(None, "optional-nonneg"), **_KERAS_CLIP, **_KERAS_EMA,
                      "loss_scale_factor": _A(None, "optional-positive"),
                      "gradient_accumulation_steps": _A(None, "optional-count"), "name": _A("rmsprop", "any")},
           _keras3, "keras.optimizers.RMSprop (Keras 3): eps inside, lr inside the momentum, decoupled weight decay",
           "dense; on the TensorFlow backend each occurrence of a repeated row is squared on its own",
           ignored=("name",)),
    Preset("keras2", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                      "epsilon": _A(1e-7, "eps0"), "centered": _A(False, "bool"),
                      "weight_decay": _A(None, "optional-nonneg"), **_KERAS_CLIP, **_KERAS_EMA,
                      "jit_compile": _A(True, "bool"), "name": _A("RMSprop", "any")},
           _keras2, "tf.keras.optimizers.RMSprop since TF 2.11 (tf_keras.optimizers.RMSprop, Keras 2): as Keras 3",
           "dense; each occurrence of a repeated row clipped on its own, then summed", ignored=("jit_compile", "name")),
    Preset("keras2-legacy", {"learning_rate": _A(1e-3, "lr"), "rho": _A(0.9, "decay"),
                             "momentum": _A(0.0, "momentum"), "epsilon": _A(1e-7, "eps0"),
                             "centered": _A(False, "bool"), "name": _A("RMSprop", "any"), **_KERAS_CLIP,
                             "decay": _A(0.0, "nonneg")},
           _keras2_legacy, "tf.keras.optimizers.legacy.RMSprop (tf_keras.optimizers.legacy.RMSprop, Keras 2): "
           "eps outside when momentum == 0, inside when > 0; lr / (1 + decay * step)",
           "lazy when momentum > 0 (its sparse raw op), dense when momentum == 0; each occurrence of a repeated "
           "row clipped on its own, then summed", ignored=("name",)),
    Preset("tf1", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "momentum": _A(0.0, "momentum"),
                   "epsilon": _A(1e-10, "eps0"), "use_locking": _A(False, "bool"), "centered": _A(False, "bool"),
                   "name": _A("RMSProp", "any")},
           _tf1, "tf.compat.v1.train.RMSPropOptimizer: eps inside, lr inside the momentum, mean square starts at 1",
           "lazy (repeated rows summed first)", ignored=("use_locking", "name")),
    Preset("mindspore", {"learning_rate": _A(0.1, "lr"), "decay": _A(0.9, "nonneg"), "momentum": _A(0.0, "nonneg"),
                         "epsilon": _A(1e-10, "eps"), "use_locking": _A(False, "bool"), "centered": _A(False, "bool"),
                         "loss_scale": _A(1.0, "positive"), "weight_decay": _A(0.0, "nonneg")},
           _mindspore, "mindspore.nn.RMSProp: as TF1, plus loss_scale and coupled weight decay skipping beta/gamma "
           "(parameter groups: lr and weight_decay per group, no beta/gamma filter); decay and momentum >= 0",
           "lazy", ("lr", "weight_decay", "grad_centralization"), _mindspore_group, ignored=("use_locking",)),
    Preset("mxnet", {"learning_rate": _A(1e-3, "optional-lr"), "gamma1": _A(0.9, "decay"),
                     "gamma2": _A(0.9, "momentum"),
                     **_MXNET_TAIL},
           _mxnet, "mxnet.optimizer.RMSProp (1.x): eps inside; centered adds gamma2 momentum; wd before clip_gradient; "
           "clip values <= 0 are off; with param_idx2name, wd only on names ending in _weight or _gamma",
           "dense"),
    Preset("mxnet2", {"learning_rate": _A(1e-3, "optional-lr"), "rho": _A(0.9, "decay"),
                      "momentum": _A(0.9, "momentum"),
                      **_MXNET_TAIL, "use_fused_step": _A(True, "bool")},
           _mxnet2, "mxnet.optimizer.RMSProp (2.x): eps outside (plain) or inside (centered); wd after clip_gradient; "
           "clip values <= 0 are off",
           "dense", ignored=("use_fused_step", "param_idx2name")),
    Preset("paddle", {"learning_rate": _A(REQUIRED, "lr"), "rho": _A(0.95, "nonneg"), "epsilon": _A(1e-6, "eps0"),
                      "momentum": _A(0.0, "nonneg"), "centered": _A(False, "bool"),
                      "weight_decay": _A(None, "paddle-decay"), "grad_clip": _A(None, "paddle-clip"),
                      "name": _A(None, "any")},
           _paddle, "paddle.optimizer.RMSProp: eps inside, lr inside the momentum, coupled L2 weight decay added "
           "after grad_clip (ClipGradByNorm, ClipGradByGlobalNorm, symmetric ClipGradByValue); groups scale lr",
           "dense", ("learning_rate", "weight_decay"), _paddle_group, ignored=("name",)),
    Preset("optax", {"learning_rate": _A(REQUIRED, "lr"), "decay": _A(0.9, "decay"), "eps": _A(1e-8, "eps0"),
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
    values = {key: _check(owner, key, value, preset.arguments[key].kind if key in preset.arguments
                          else _GROUP_KEY_KINDS[key]) for key, value in groupKwargs.items()}
    return preset.translateGroup(owner, values)
