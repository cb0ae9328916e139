"""RMSProp with every framework's variant behind PuzzleLib's names, run by one fused kernel per bucket."""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.backends.compressed_state import STATE_DTYPE_ALIASES, STATE_DTYPES, state_keys
from puzzle_rms.optimizers.buckets import Bucket, RowsView
from puzzle_rms.optimizers.compressed import CompressedState
from puzzle_rms.optimizers.loss_scale import DynamicLossScale
from puzzle_rms.optimizers.optimizer import Optimizer, fixed_after_setup
from puzzle_rms.optimizers.presets import PRESETS, REQUIRED, preset_arguments
from puzzle_rms.sparse import RowSparseVariable
from puzzle_rms.validation import (DECAY_REASON, EPSILON_REASON, FLOAT32_TINY, Checked, check_bool, check_choice,
                                   check_float32_range, check_int, check_no_unknown_keywords, check_optional_positive,
                                   check_range)


def _current(obj: Any, name: str, default: Any) -> Any:
    """The attribute's value so far (``default`` while the constructor has not set it yet)."""
    return obj.__dict__.get(name, default)


def _factor(obj: Any, owner: str, name: str, value: Any) -> float:
    value = check_range(owner, name, value, 0.0)  # >= 0: MindSpore and Paddle accept a decay above 1
    if value == 1 and _current(obj, "biasCorrection", False):
        raise ValueError(f"{owner}: biasCorrection needs factor < 1, got factor={value!r}")
    return value


def _epsilon(obj: Any, owner: str, name: str, value: Any) -> float:
    return check_float32_range(owner, name, value, 0.0, least=FLOAT32_TINY, reason=EPSILON_REASON)  # 0: torch, TF1


def _momentum(obj: Any, owner: str, name: str, value: Any) -> float:
    value = check_range(owner, name, value, 0.0)  # >= 0: torch, optax and MindSpore accept momentum >= 1
    if value == 0 and _current(obj, "nesterov", False):
        raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={value!r}")
    fixed_after_setup(obj, owner, f"{name} (zero or not: whether a momentum buffer exists)",
                      (value > 0) != (_current(obj, name, value) > 0))
    return value


def _nesterov(obj: Any, owner: str, name: str, value: Any) -> bool:
    value = check_bool(owner, name, value)
    if value and _current(obj, "momentum", 0.0) == 0:
        raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={_current(obj, 'momentum', 0.0)!r}")
    return value


def _bias_correction(obj: Any, owner: str, name: str, value: Any) -> bool:
    value = check_bool(owner, name, value)
    if value and _current(obj, "factor", 0.0) == 1:
        raise ValueError(f"{owner}: biasCorrection needs factor < 1, got factor={_current(obj, 'factor', 0.0)!r}")
    return value


def _flag(obj: Any, owner: str, name: str, value: Any) -> bool:
    return check_bool(owner, name, value)


def _setup_flag(obj: Any, owner: str, name: str, value: Any) -> bool:
    """A flag that decides which state buffers setupOn allocates."""
    value = check_bool(owner, name, value)
    fixed_after_setup(obj, owner, name, value != _current(obj, name if name != "masterWeights" else "useMasterWeights",
                                                           value))
    return value


def _decay(obj: Any, owner: str, name: str, value: Any) -> float:
    value = check_float32_range(owner, name, value, 0.0, reason=DECAY_REASON)
    fixed_after_setup(obj, owner, name, value != _current(obj, name, value))
    return value


def _decay_filter(obj: Any, owner: str, name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{owner}: decayFilter must be a callable name -> bool, got {value!r}")
    fixed_after_setup(obj, owner, name, value is not _current(obj, name, value))
    return value


def _optional_positive(obj: Any, owner: str, name: str, value: Any) -> Any:
    return check_optional_positive(owner, name, value)


def _optional_int(obj: Any, owner: str, name: str, value: Any) -> Any:
    return None if value is None else check_int(owner, name, value, 1)


def _accumulation(obj: Any, owner: str, name: str, value: Any) -> int:
    """gradientAccumulationSteps: > 1 allocates an accumulator, so whether it is 1 is fixed once set up."""
    value = check_int(owner, name, value, 1)
    if value > 1 and _current(obj, "sparseUpdate", "dense") == "lazy":
        raise ValueError(f"{owner}: gradientAccumulationSteps > 1 needs sparseUpdate='dense', got 'lazy'")
    fixed_after_setup(obj, owner, f"{name} (1 or more: whether an accumulator exists)",
                      (value > 1) != (_current(obj, name, value) > 1))
    return value


def _ema_momentum(obj: Any, owner: str, name: str, value: Any) -> Any:
    """emaMomentum: not None allocates the average of the weights, so whether it is None is fixed once set up."""
    value = None if value is None else check_range(owner, name, value, 0.0, 1.0)
    fixed_after_setup(obj, owner, f"{name} (None or not: whether an average of the weights exists)",
                      (value is None) != (_current(obj, name, value) is None))
    return value


def _ema_start(obj: Any, owner: str, name: str, value: Any) -> str:
    return check_choice(owner, name, value, ("first-update", "initial-weights"))


# Two valid values of each preset argument kind: translating both shows which RMSProp option an argument sets.
_SAMPLES = {"lr": (0.01, 0.02), "decay": (0.5, 0.6), "momentum": (0.5, 0.6), "eps": (0.01, 0.02),
            "eps0": (0.01, 0.02), "nonneg": (0.01, 0.02), "positive": (0.5, 2.0), "bool": (False, True)}


def _option_set_by(preset: str, argument: str) -> Optional[str]:
    """The one RMSProp option that ``argument`` of ``RMSProp.like(preset)`` sets, or None (several, none, untested)."""
    arguments = PRESETS[preset].arguments
    samples = _SAMPLES.get(arguments[argument].kind.removeprefix("optional-"))
    if samples is None:
        return None
    base = {name: _SAMPLES["lr"][0] for name, arg in arguments.items() if arg.default is REQUIRED}
    first, second = (preset_arguments(preset, {**base, argument: value}) for value in samples)
    changed = [option for option in first if first[option] != second[option]]
    return changed[0] if len(changed) == 1 else None


def _framework_hint(keyword: str) -> Optional[str]:
    """For a framework's argument name given to RMSProp (``lr``): our name for it and the ``RMSProp.like`` route."""
    frameworks = [name for name, preset in PRESETS.items() if keyword in preset.arguments]
    if not frameworks:
        return None
    ours = sorted({option for name in frameworks for option in [_option_set_by(name, keyword)] if option})
    meant = f"did you mean {' or '.join(ours)}? " if ours else ""
    example = "torch" if "torch" in frameworks else frameworks[0]
    return (f"{meant}{keyword!r} is the name in {', '.join(frameworks)}: RMSProp.like({example!r}, {keyword}=...) "
            f"takes that framework's argument names and defaults")


def _state_dtype(obj: Any, owner: str, name: str, value: Any) -> str:
    """stateDtype: "float32", "bfloat16" or "int8" (aliases allowed); it decides the state buffers."""
    value = check_choice(owner, name, STATE_DTYPE_ALIASES.get(value, value) if isinstance(value, str) else value,
                         STATE_DTYPES)
    fixed_after_setup(obj, owner, name, value != _current(obj, name, value))
    return value


def _state_seed(obj: Any, owner: str, name: str, value: Any) -> int:
    return check_int(owner, name, value, 0)


class RMSProp(Optimizer):
    r"""RMSProp (Tieleman & Hinton 2012) with the options of every major framework.

    Per element, with gradient ``g`` (dL/dw) and step ``t``::

        g   = clip(g / lossScale)  [+ weightDecay * w, before or after the value clip]
        ms  = factor * ms + (1 - factor) * g**2
        mg  = factor * mg + (1 - factor) * g                  (centered)
        v   = max(ms/(1-factor**t) - (mg/(1-factor**t))**2, 0)  (centered; bias terms only with biasCorrection)
        den = sqrt(v + epsilon)   if epsInSqrt   else   sqrt(v) + epsilon
        w  *= 1 - lr * decoupledWeightDecay
        w  -= lr * g / den                                     (momentum == 0)
        mom = momentum * mom + lr * g / den ; w -= mom         (lrInMomentum, TF/Keras/MindSpore/MXNet)
        mom = momentum * mom + g / den ;      w -= lr * mom    (not lrInMomentum, PyTorch)
        w  -= lr * g / den + momentum * mom                    (nesterov with lrInMomentum, optax: instead of w -= mom)
        w  -= lr * (g / den + momentum * mom)                  (nesterov, not lrInMomentum: instead of w -= lr * mom)
        w   = clip(w, -clipWeights, clipWeights)

    Parameters
    ----------
    learnRate : float, callable, sequence or schedule
        Step size (see :mod:`puzzle_rms.optimizers.schedules`).
    factor : float
        Decay ``rho`` of the running mean square, >= 0; normally in [0, 1] (MindSpore also accepts > 1,
        where the running mean extrapolates; the presets check their framework's own range).
    epsilon : float
        Added to the denominator: 0 (as torch and TF1 allow: a zero gradient with a zero mean square then
        gives NaN, as there) or at least 1.18e-38 (float32's smallest normal number: a smaller one vanishes in
        float32 state and 0/0 makes NaN weights).
    epsInSqrt : bool
        Default False: ``sqrt(ms) + eps``, what PuzzleLib's code does (its docs write eps inside the
        root) and PyTorch does, so a PuzzleLib script gets its own numbers. True puts eps inside the
        root (TF, Keras 3, MindSpore, MXNet centered, optax).
    momentum : float
        Heavy-ball momentum ``mu`` >= 0 (>= 1 accumulates without decay, as torch allows); 0 keeps no
        momentum buffer.
    lrInMomentum : bool
        Whether lr multiplies inside the momentum buffer (True, TF/Keras) or outside (False, PyTorch).
    nesterov : bool
        Nesterov momentum as optax applies it (needs momentum > 0). With ``lrInMomentum=False`` the buffer
        holds ``g / den`` and lr multiplies the whole Nesterov step; the two forms agree while lr is constant.
    centered : bool
        Graves' centered variant; the variance is clamped at 0 before the root (a deliberate
        difference: where rounding makes it negative the frameworks give NaN, or with eps inside the
        root and ``v + eps > 0`` a smaller denominator; MindSpore's CPU kernel skips the element).
    initialMeanSquare : float
        Starting value of ``ms`` (0 in most frameworks, 1 in TF1 and MindSpore).
    biasCorrection : bool
        Divide ``ms`` (and ``mg``) by ``1 - factor**t`` (optax).
    weightDecay : float
        Coupled L2 decay added to the gradient.
    decoupledWeightDecay : float
        Decoupled decay ``w -= lr * decoupledWeightDecay * w`` before the step (Keras 3, AdamW style).
    decayFilter : callable(name) -> bool, optional
        Which variables get weight decay (e.g. MindSpore skips names containing beta or gamma).
    wdBeforeClip : bool
        Add coupled decay before (MXNet 1.x) or after (MXNet 2.x) the value clip.
    clipValue : float, optional
        Clip each gradient element to ``[-clipValue, clipValue]``.
    clipWeights : float, optional
        Clip each weight to ``[-clipWeights, clipWeights]`` after the step (MXNet).
    maximize : bool
        Ascend instead of descend (PyTorch).
    masterWeights : bool
        For float16 parameters, keep float32 master weights that the kernel updates (the float16
        parameters are rounded copies). State is float32 for float16 parameters either way, and the
        parameter dtype otherwise.
    clipValueFirst : bool
        Clip gradient values before the norm clipping measures them (Keras 2 legacy), and, with
        ``sparseDuplicates="clip-per-occurrence"``, clip each row occurrence before repeated rows are
        summed. Either way the value clip then runs on the gradient buffers in place, before the kernel.
    gradientAccumulationSteps : int
        Keras 3: ``update()`` calls that only add the gradients into an accumulator (and return False),
        until every ``n``-th call updates with the mean ``(g + accumulated) / n``. Learning-rate schedules
        see the call count (update ``k`` happens at call ``k*n + n - 1``), as Keras' iterations do.
    emaMomentum : float, optional
        Keep an exponential moving average of the parameters, ``ema = m * ema + (1 - m) * w`` after
        every ``update()`` call (Keras ``use_ema``/``ema_momentum``), in the state buffer ``ema``.
    emaOverwriteFrequency : int, optional
        Overwrite the parameters with their average after the calls where ``(iteration + 1)`` is a
        multiple of it (``iteration`` counts updates from 0, as Keras' ``iterations``).
    emaStart : {"first-update", "initial-weights"}
        Where the average starts: at the parameters after the first update (Keras 3: momentum 0 on
        iteration 0) or at the parameters before it (Keras 2).
    nodeinfo, lossScale, clipNorm, globalClipNorm, nonFinite, sparseUpdate, sparseDuplicates
        See :class:`Optimizer`.

    Every hyperparameter may be assigned after construction (``opt.factor = 0.95``); the assignment is
    checked with the constructor's message and a bad value leaves the old one. ``momentum`` (zero or not),
    ``centered``, ``masterWeights`` (``useMasterWeights``), ``weightDecay``, ``decoupledWeightDecay``,
    ``decayFilter`` and ``sparseUpdate`` decide what setupOn builds: after setupOn they raise unless unchanged.
    """

    ATTRS = ("learnRate", "factor", "epsilon")
    HYPERPARAMETERS = Optimizer.HYPERPARAMETERS + (
        "factor", "epsilon", "epsInSqrt", "momentum", "lrInMomentum", "nesterov", "centered", "initialMeanSquare",
        "biasCorrection", "weightDecay", "decoupledWeightDecay", "decayFilter", "wdBeforeClip", "clipValue",
        "clipWeights", "maximize", "useMasterWeights", "clipValueFirst", "gradientAccumulationSteps", "emaMomentum",
        "emaOverwriteFrequency", "emaStart", "stateDtype", "stateSeed",
    )

    # validated on every assignment with the constructor's messages (``opt.factor = 1.5`` raises, as PuzzleLib
    # scripts assign hyperparameters after construction); those that decide the state buffers or the groups
    # cannot change after setupOn
    factor = Checked(_factor)
    epsilon = Checked(_epsilon)
    epsInSqrt = Checked(_flag)
    momentum = Checked(_momentum)
    lrInMomentum = Checked(_flag)
    nesterov = Checked(_nesterov)
    centered = Checked(_setup_flag)
    initialMeanSquare = Checked(lambda obj, owner, name, value: check_range(owner, name, value, 0.0))
    biasCorrection = Checked(_bias_correction)
    weightDecay = Checked(_decay)
    decoupledWeightDecay = Checked(_decay)
    decayFilter = Checked(_decay_filter)
    wdBeforeClip = Checked(_flag)
    clipValue = Checked(_optional_positive)
    clipWeights = Checked(_optional_positive)
    maximize = Checked(_flag)
    useMasterWeights = Checked(_setup_flag, argument="masterWeights")
    clipValueFirst = Checked(_flag)
    gradientAccumulationSteps = Checked(_accumulation)
    emaMomentum = Checked(_ema_momentum)
    emaOverwriteFrequency = Checked(_optional_int)
    emaStart = Checked(_ema_start)
    stateDtype = Checked(_state_dtype)
    stateSeed = Checked(_state_seed)

    def __init__(self, learnRate: Any = 1e-3, factor: float = 0.9, epsilon: float = 1e-5, nodeinfo: Any = None,
                 *, epsInSqrt: bool = False, momentum: float = 0.0, lrInMomentum: bool = True,
                 nesterov: bool = False, centered: bool = False, initialMeanSquare: float = 0.0,
                 biasCorrection: bool = False, weightDecay: float = 0.0, decoupledWeightDecay: float = 0.0,
                 decayFilter: Optional[Callable[[str], bool]] = None, wdBeforeClip: bool = True,
                 clipValue: Optional[float] = None, clipWeights: Optional[float] = None, maximize: bool = False,
                 masterWeights: bool = False, lossScale: Union[float, DynamicLossScale] = 1.0,
                 clipNorm: Optional[float] = None, globalClipNorm: Optional[float] = None,
                 nonFinite: str = "raise", sparseUpdate: str = "dense", sparseDuplicates: str = "sum",
                 clipValueFirst: bool = False, gradientAccumulationSteps: int = 1,
                 emaMomentum: Optional[float] = None, emaOverwriteFrequency: Optional[int] = None,
                 emaStart: str = "first-update", stateDtype: str = "float32", stateSeed: int = 0,
                 **unknown: Any) -> None:
        check_no_unknown_keywords("RMSProp", unknown, [name for name in inspect.signature(RMSProp).parameters
                                                       if name != "unknown"], _framework_hint)
        super().__init__(learnRate, nodeinfo, lossScale, clipNorm, globalClipNorm, nonFinite, sparseUpdate,
                         sparseDuplicates)
        self.factor = factor
        self.epsilon = epsilon
        self.epsInSqrt = epsInSqrt
        self.momentum = momentum
        self.lrInMomentum = lrInMomentum
        self.nesterov = nesterov
        self.centered = centered
        self.initialMeanSquare = initialMeanSquare
        self.biasCorrection = biasCorrection
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
        self.decayFilter = decayFilter
        self.wdBeforeClip = wdBeforeClip
        self.clipValue = clipValue
        self.clipWeights = clipWeights
        self.maximize = maximize
        self.useMasterWeights = masterWeights
        self.clipValueFirst = clipValueFirst
        if sparseDuplicates == "square-per-occurrence" and factor == 0:
            raise ValueError("RMSProp: sparseDuplicates='square-per-occurrence' needs factor > 0, got factor=0")
        self.gradientAccumulationSteps = gradientAccumulationSteps
        self.emaMomentum = emaMomentum
        self.emaOverwriteFrequency = emaOverwriteFrequency
        self.emaStart = emaStart
        self._pending = 0  # update() calls accumulated since the last update (not checkpointed: save after an update)
        self.stateDtype = stateDtype
        self.stateSeed = stateSeed
        self._compressed: dict[int, CompressedState] = {}

    @classmethod
    def like(cls, name: str, /, **kwargs: Any) -> "RMSProp":
        """An RMSProp that reproduces framework ``name``'s RMSProp, configured with that framework's own
        argument names and defaults (``RMSProp.like("torch", lr=0.01, momentum=0.9)``).

        Names: the keys of :data:`~puzzle_rms.optimizers.presets.PRESETS` (puzzlelib, puzzlelib-graves, torch,
        keras3, keras2, keras2-legacy, tf1, mindspore, mxnet, mxnet2, paddle, optax) and the aliases in
        :data:`~puzzle_rms.optimizers.presets.ALIASES` ("keras" is keras3); see
        :mod:`puzzle_rms.optimizers.presets` for what each one reproduces and which arguments it ignores. ``stateDtype`` and ``stateSeed``
        (this toolkit's own, no framework's) pass through to :class:`RMSProp` with every preset.

        Raises
        ------
        ValueError
            Unknown ``name``, or an argument out of its range (the message uses the framework's name for it).
        TypeError
            An argument that framework does not have, or a required one missing; the message lists the
            preset's accepted arguments.
        """
        own = {key: kwargs.pop(key) for key in ("stateDtype", "stateSeed") if key in kwargs}
        return cls(**preset_arguments(name, kwargs), **own)

    def stateInit(self) -> dict[str, float]:
        state = {"ms": self.initialMeanSquare}
        if self.centered:
            state["mg"] = 0.0
        if self.momentum > 0:
            state["mom"] = 0.0
        if self.gradientAccumulationSteps > 1:
            state["acc"] = 0.0
        if self.emaMomentum is not None:
            state["ema"] = 0.0  # set from the parameters on the first update (see emaStart)
        return state

    def preClipValue(self) -> Optional[float]:
        """The value clip to run on the gradients before norms are measured and rows summed: with
        clipValueFirst, or when repeated rows are clipped per occurrence (sparseDuplicates)."""
        return self.clipValue if self.clipValueFirst or self.sparseDuplicates != "sum" else None

    def adjustRows(self, bucket: Bucket, squares: Any, segScale: Any) -> None:
        """Square per occurrence: before the kernel adds ``(1 - rho) * (s * G)**2`` for a listed row with
        summed occurrences ``G``, add ``(1 - rho) / rho * s**2 * (sum of squares - G**2)`` to its mean
        square, so that it ends up with ``(1 - rho) * s**2 * sum of squares`` (``s`` the segment's scale)."""
        xp = self.backend.xp
        ms = bucket.state["ms"]
        for segment, indices, squared, summed in squares:
            rowSize = squared.shape[1]
            where = (int(bucket.offsets[segment]) + indices[:, None] * rowSize
                     + xp.arange(rowSize)[None, :]).reshape(-1)
            extra = (squared - summed * summed).reshape(-1)
            ms[where] += (extra * ((1.0 - self.factor) / self.factor * float(segScale[segment]) ** 2)).astype(ms.dtype)

    def currentLearnRates(self, step: Optional[int] = None) -> Any:
        """As :meth:`Optimizer.currentLearnRates`; with gradient accumulation update ``step`` reads the
        schedules at its call ``step * n + n - 1``."""
        n = self.gradientAccumulationSteps
        step = self.t if step is None else step
        return super().currentLearnRates(step * n + n - 1)

    def update(self) -> bool:
        """:meth:`Optimizer.update`, with gradient accumulation and the parameter average when configured.

        With ``gradientAccumulationSteps = n > 1`` a call that is not the ``n``-th only accumulates the
        gradients and returns False (the count of such calls is not checkpointed: save right after an update);
        the ``n``-th checks the mean gradient, and a skipped (non-finite) one drops the accumulated window.
        """
        self._require_setup("update")
        n = self.gradientAccumulationSteps
        iteration = self.t  # Keras' iterations: calls // n, the updates done before this call
        if self._pending + 1 < n:
            for bucket in self.buckets:
                bucket.sparseRows()  # dense mode: fold the rows into the dense gradient
                acc = bucket.state["acc"]
                acc += bucket.grads()
            self._pending += 1
            applied = False
        else:
            if n > 1:
                for bucket in self.buckets:
                    bucket.sparseRows()
                    grads = bucket.grads()
                    grads += bucket.state["acc"]
                    grads *= 1.0 / n
            if self.emaMomentum is not None and self.emaStart == "initial-weights" and self.t == 0:
                for bucket in self.buckets:
                    self.backend.copy_cast(bucket.state["ema"], self._weights(bucket))
            applied = super().update()
            if n > 1:  # applied, or skipped (non-finite): either way the accumulation window ends
                for bucket in self.buckets:
                    bucket.state["acc"].fill(0)
                self._pending = 0
        if self.emaMomentum is not None and (applied or n > 1):
            self._average(iteration)
        return applied

    def _weights(self, bucket: Bucket) -> Any:
        return bucket.state["master"] if "master" in bucket.state else bucket.weights()

    def _average(self, iteration: int) -> None:
        """``ema = m * ema + (1 - m) * w`` (m = 0 on iteration 0 with emaStart "first-update"); overwrite w
        with it after the iterations the overwrite frequency names."""
        m = 0.0 if (self.emaStart == "first-update" and iteration == 0) else self.emaMomentum
        overwrite = self.emaOverwriteFrequency is not None and (iteration + 1) % self.emaOverwriteFrequency == 0
        for bucket in self.buckets:
            weights, ema = self._weights(bucket), bucket.state["ema"]
            ema *= m
            ema += (1.0 - m) * weights
            if overwrite:
                self.backend.copy_cast(weights, ema)
                if "master" in bucket.state:
                    self.backend.copy_cast(bucket.weights(), weights)

    def groupDefaults(self) -> dict[str, Any]:
        return {"weightDecay": self.weightDecay, "decoupledWeightDecay": self.decoupledWeightDecay,
                "decayFilter": self.decayFilter}

    def masterWeights(self) -> bool:
        return self.useMasterWeights

    def hyper(self, gradScale: float, step: int) -> Any:
        """The kernel's global scalars for update number ``step`` (1-based)."""
        bias = 1.0 / (1.0 - self.factor ** step) if self.biasCorrection else 1.0
        return hyper_vector(
            gradScale=-gradScale if self.maximize else gradScale,
            clipValue=math.inf if self.clipValue is None or self.preClipValue() is not None else self.clipValue,
            wdPre=1.0 if self.wdBeforeClip else 0.0, wdPost=0.0 if self.wdBeforeClip else 1.0,
            rho=self.factor, oneMinusRho=1.0 - self.factor,
            epsIn=self.epsilon if self.epsInSqrt else 0.0, epsOut=0.0 if self.epsInSqrt else self.epsilon,
            mu=self.momentum, lrInMomentum=1.0 if self.lrInMomentum else 0.0, nesterov=1.0 if self.nesterov else 0.0,
            clipWeights=math.inf if self.clipWeights is None else self.clipWeights,
            bcMs=bias, bcMg=bias,
        )

    def step(self, bucket: Union[Bucket, RowsView], segParams: Any, gradScale: float) -> None:
        state = bucket.state
        weights = state["master"] if "master" in state else bucket.weights()
        hyper = self.hyper(gradScale, self.t + 1)
        if self.stateDtype == "float32":
            self.backend.rmsprop_update(weights, bucket.grads(), state["ms"], state.get("mg"), state.get("mom"),
                                        bucket.kernelLayout, segParams, hyper)
            return
        # compressed state keeps its per-segment blocks and scales: the per-segment layout and table, not the
        # coalesced runs of kernelLayout
        rows = isinstance(bucket, RowsView)
        owner = bucket.bucket if rows else bucket
        self._compressed[id(owner)].update(weights, bucket.grads(), state, bucket.layout,
                                           segParams if rows else bucket.segmentParams, hyper,
                                           state_keys(self.stateSeed, self.t + 1), self.backend)

    # --- compressed state -----------------------------------------------------------------------
    def setupOn(self, target: Any, useGlobalState: bool = False) -> None:
        if self.stateDtype != "float32":
            owner = f"RMSProp(stateDtype={self.stateDtype!r}).setupOn"
            if self.sparseDuplicates == "square-per-occurrence":
                raise ValueError(f"{owner}: sparseDuplicates='square-per-occurrence' adds to the mean square outside "
                                 f"the kernel, which compressed state does not support; use stateDtype='float32'")
            for group in self._parse_groups(target):
                for name, var in zip(group.names, group.variables):
                    if np.dtype(var.dtype) not in (np.float16, np.float32):
                        raise TypeError(f"{owner}: variable {name!r} is {np.dtype(var.dtype)}; compressed state "
                                        f"needs float16 or float32 parameters (or stateDtype='float32')")
                    if self.stateDtype == "int8" and self.sparseUpdate == "lazy" and isinstance(var, RowSparseVariable):
                        raise ValueError(f"{owner}: variable {name!r} has row-sparse gradients, and the 8-bit "
                                         f"state cannot recode part of a 256-element block; use "
                                         f"sparseUpdate='dense' or stateDtype='bfloat16'")
        super().setupOn(target, useGlobalState)

    def _make_buckets(self, backend: Any, groups: Any, flat: bool) -> list[Bucket]:
        buckets = super()._make_buckets(backend, groups, flat)
        self._compressed = {} if self.stateDtype == "float32" else {
            id(bucket): CompressedState(bucket, self.stateDtype, self.stateInit()) for bucket in buckets}
        return buckets

    def stateOf(self, name: str) -> dict[str, Any]:
        views = super().stateOf(name)
        if self.stateDtype == "int8":
            bucket = next(b for b in self.buckets if name in b.names)
            views["msScale"] = self._compressed[id(bucket)].scaleView(bucket.names.index(name))
        return views

    def stateArrays(self) -> dict[str, dict[str, Any]]:
        """:meth:`Optimizer.stateArrays`; with ``stateDtype="int8"`` each variable also has ``msScale``, its
        float32 scales (one per 256 elements), and ``ms`` holds the uint8 codes (bfloat16: uint16 patterns)."""
        arrays = super().stateArrays()
        if self.stateDtype == "int8":
            for bucket in self.buckets:
                for index, name in enumerate(bucket.names):
                    arrays[name]["msScale"] = self._compressed[id(bucket)].scaleView(index)
        return arrays

    def loadState(self, arrays: Any, t: int, skippedSteps: int, lossScaleState: Any = None) -> None:
        """:meth:`Optimizer.loadState`. State is never converted between stateDtypes: arrays of another
        stateDtype (told by the dtype of ``ms`` and the presence of ``msScale``) are refused, by name."""
        owner = "RMSProp.loadState"
        if isinstance(arrays, Mapping):
            for name, given in arrays.items():
                ms = given.get("ms") if isinstance(given, Mapping) else None
                if isinstance(ms, np.ndarray):
                    saved = ("int8" if ms.dtype == np.uint8 else "bfloat16" if ms.dtype == np.uint16 else "float32")
                    if saved != self.stateDtype:
                        raise ValueError(f"{owner}: the state of variable {name!r} is stateDtype={saved!r} "
                                         f"(ms is {ms.dtype}), this optimizer keeps stateDtype={self.stateDtype!r}; "
                                         f"state is not converted: create the optimizer with "
                                         f"stateDtype={saved!r}. Nothing was loaded.")
        super().loadState(arrays, t, skippedSteps, lossScaleState)
