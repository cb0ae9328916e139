"""RMSProp with every framework's variant behind PuzzleLib's names, run by one fused kernel per bucket."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

from puzzle_rms.backends.backend import hyper_vector
from puzzle_rms.optimizers.buckets import Bucket
from puzzle_rms.optimizers.loss_scale import DynamicLossScale
from puzzle_rms.optimizers.optimizer import Optimizer
from puzzle_rms.optimizers.presets import preset_arguments
from puzzle_rms.validation import check_bool, check_optional_positive, check_range


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
        w  -= lr * g / den + momentum * mom                    (nesterov, optax; lr inside mom)
        w   = clip(w, -clipWeights, clipWeights)

    Parameters
    ----------
    learnRate : float, callable, sequence or schedule
        Step size (see :mod:`puzzle_rms.optimizers.schedules`).
    factor : float
        Decay ``rho`` of the running mean square, in [0, 1].
    epsilon : float
        Added to the denominator; must be > 0.
    epsInSqrt : bool
        Default False: ``sqrt(ms) + eps``, what PuzzleLib's code does (its docs write eps inside the
        root) and PyTorch does, so a PuzzleLib script gets its own numbers. True puts eps inside the
        root (TF, Keras 3, MindSpore, MXNet centered, optax).
    momentum : float
        Heavy-ball momentum ``mu`` in [0, 1); 0 keeps no momentum buffer.
    lrInMomentum : bool
        Whether lr multiplies inside the momentum buffer (True, TF/Keras) or outside (False, PyTorch).
    nesterov : bool
        Nesterov momentum as optax applies it (needs momentum > 0).
    centered : bool
        Graves' centered variant; the variance is clamped at 0 before the root (a deliberate
        improvement: the frameworks return NaN when rounding makes it negative).
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
    nodeinfo, lossScale, clipNorm, globalClipNorm, nonFinite, sparseUpdate
        See :class:`Optimizer`.
    """

    def __init__(self, learnRate: Any = 1e-3, factor: float = 0.9, epsilon: float = 1e-5, nodeinfo: Any = None,
                 *, epsInSqrt: bool = False, momentum: float = 0.0, lrInMomentum: bool = True,
                 nesterov: bool = False, centered: bool = False, initialMeanSquare: float = 0.0,
                 biasCorrection: bool = False, weightDecay: float = 0.0, decoupledWeightDecay: float = 0.0,
                 decayFilter: Optional[Callable[[str], bool]] = None, wdBeforeClip: bool = True,
                 clipValue: Optional[float] = None, clipWeights: Optional[float] = None, maximize: bool = False,
                 masterWeights: bool = False, lossScale: Union[float, DynamicLossScale] = 1.0,
                 clipNorm: Optional[float] = None, globalClipNorm: Optional[float] = None,
                 nonFinite: str = "raise", sparseUpdate: str = "dense") -> None:
        super().__init__(learnRate, nodeinfo, lossScale, clipNorm, globalClipNorm, nonFinite, sparseUpdate)
        owner = "RMSProp"
        self.factor = check_range(owner, "factor", factor, 0.0, 1.0)
        self.epsilon = check_range(owner, "epsilon", epsilon, 0.0, lowOpen=True)
        self.epsInSqrt = check_bool(owner, "epsInSqrt", epsInSqrt)
        self.momentum = check_range(owner, "momentum", momentum, 0.0, 1.0, highOpen=True)
        self.lrInMomentum = check_bool(owner, "lrInMomentum", lrInMomentum)
        self.nesterov = check_bool(owner, "nesterov", nesterov)
        if nesterov and momentum == 0:
            raise ValueError(f"{owner}: nesterov=True needs momentum > 0, got momentum={momentum!r}")
        self.centered = check_bool(owner, "centered", centered)
        self.initialMeanSquare = check_range(owner, "initialMeanSquare", initialMeanSquare, 0.0)
        self.biasCorrection = check_bool(owner, "biasCorrection", biasCorrection)
        if biasCorrection and factor == 1:
            raise ValueError(f"{owner}: biasCorrection needs factor < 1, got factor={factor!r}")
        self.weightDecay = check_range(owner, "weightDecay", weightDecay, 0.0)
        self.decoupledWeightDecay = check_range(owner, "decoupledWeightDecay", decoupledWeightDecay, 0.0)
        if decayFilter is not None and not callable(decayFilter):
            raise TypeError(f"{owner}: decayFilter must be a callable name -> bool, got {decayFilter!r}")
        self.decayFilter = decayFilter
        self.wdBeforeClip = check_bool(owner, "wdBeforeClip", wdBeforeClip)
        self.clipValue = check_optional_positive(owner, "clipValue", clipValue)
        self.clipWeights = check_optional_positive(owner, "clipWeights", clipWeights)
        self.maximize = check_bool(owner, "maximize", maximize)
        self.useMasterWeights = check_bool(owner, "masterWeights", masterWeights)

    @classmethod
    def like(cls, name: str, **kwargs: Any) -> "RMSProp":
        """An RMSProp that reproduces framework ``name``'s RMSProp, configured with that framework's own
        argument names and defaults (``RMSProp.like("torch", lr=0.01, momentum=0.9)``).

        Names: puzzlelib, puzzlelib-graves, torch, keras, tf.keras, tf1, mindspore, mxnet, mxnet2, optax;
        see :mod:`puzzle_rms.optimizers.presets` for what each one reproduces.

        Raises
        ------
        ValueError
            Unknown ``name``, or an argument out of its range (the message uses the framework's name for it).
        TypeError
            An argument that framework does not have, or a required one missing; the message lists the
            preset's accepted arguments.
        """
        return cls(**preset_arguments(name, kwargs))

    def stateInit(self) -> dict[str, float]:
        state = {"ms": self.initialMeanSquare}
        if self.centered:
            state["mg"] = 0.0
        if self.momentum > 0:
            state["mom"] = 0.0
        return state

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
            clipValue=math.inf if self.clipValue is None else self.clipValue,
            wdPre=1.0 if self.wdBeforeClip else 0.0, wdPost=0.0 if self.wdBeforeClip else 1.0,
            rho=self.factor, oneMinusRho=1.0 - self.factor,
            epsIn=self.epsilon if self.epsInSqrt else 0.0, epsOut=0.0 if self.epsInSqrt else self.epsilon,
            mu=self.momentum, lrInMomentum=1.0 if self.lrInMomentum else 0.0, nesterov=1.0 if self.nesterov else 0.0,
            clipWeights=math.inf if self.clipWeights is None else self.clipWeights,
            bcMs=bias, bcMg=bias,
        )

    def step(self, bucket: Bucket, segParams: Any, gradScale: float) -> None:
        state = bucket.state
        weights = state["master"] if "master" in state else bucket.weights()
        self.backend.rmsprop_update(weights, bucket.grads(), state["ms"], state.get("mg"), state.get("mom"),
                                    bucket.kernelLayout, segParams, self.hyper(gradScale, self.t + 1))
