"""Optimizer: setupOn, zeroGradParams, update, with everything that is not the update rule itself.

The base class owns what every rule shares: parameter groups, flat global
state, learning-rate schedules, loss scaling, gradient-norm clipping, the
non-finite gradient check and data-parallel gradient averaging. A subclass
names its state buffers (:meth:`stateInit`) and runs its fused kernel on one
bucket (:meth:`step`).

Per update, the host work is scalar or per group, never per element: one
reduction pass per bucket (``segment_sumsq`` when clipping needs the norms,
else the overflow-free ``segment_nonfinite`` for the check), then one kernel
call per bucket (one per dtype with global state).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Union

import numpy as np

from puzzle_rms import backends
from puzzle_rms.optimizers.buckets import Bucket, ParamGroup
from puzzle_rms.optimizers.loss_scale import DynamicLossScale
from puzzle_rms.optimizers.schedules import learn_rate_at, validate_learn_rate
from puzzle_rms.sparse import RowSparseVariable
from puzzle_rms.validation import check_bool, check_choice, check_optional_positive, check_range
from puzzle_rms.variable import Variable


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or infinity; nothing was updated."""


NON_FINITE_POLICIES = ("raise", "skip", "ignore")
SPARSE_UPDATES = ("dense", "lazy")
GROUP_KEYS = ("params", "learnRate", "weightDecay", "decoupledWeightDecay", "decayFilter")


def _named_variables(target: Any, owner: str) -> list[tuple[str, Variable]]:
    """(name, Variable) pairs of a Module, a dict of Variables or a list of Variables."""
    if hasattr(target, "getVarTable"):
        items = list(target.getVarTable().items())
    elif isinstance(target, dict):
        items = list(target.items())
    elif isinstance(target, (list, tuple)):
        items = [(var.name if getattr(var, "name", None) else str(i), var) for i, var in enumerate(target)]
    else:
        raise TypeError(f"{owner}.setupOn: target must be a Module, a dict or list of Variables, or a list of "
                        f"parameter-group dicts, got {type(target).__name__}")
    for name, var in items:
        if not isinstance(var, Variable):
            raise TypeError(f"{owner}.setupOn: {name!r} is a {type(var).__name__}, expected a Variable")
    return items


class Optimizer:
    """Base of all optimizers (PuzzleLib's ``Optimizer``).

    Parameters
    ----------
    learnRate : float, callable, sequence or schedule
        See :mod:`puzzle_rms.optimizers.schedules`. ``optimizer.learnRate`` may be reassigned between steps.
    nodeinfo : NodeInfo, optional
        Data-parallel context: gradients are averaged across processes before each update
        (requires ``useGlobalState=True``).
    lossScale : float or DynamicLossScale
        Gradients arrive multiplied by this and are divided by it inside the kernel.
    clipNorm : float, optional
        Rescale each tensor's gradient to at most this L2 norm.
    globalClipNorm : float, optional
        Rescale all gradients together to at most this global L2 norm.
    nonFinite : {"raise", "skip", "ignore"}
        What to do with a NaN/inf gradient: raise :class:`NonFiniteGradientError` naming the first
        offending variable, or skip the step (counted in ``skippedSteps``); either way parameters and
        state are untouched. "ignore" runs no check. A DynamicLossScale always skips.
    sparseUpdate : {"dense", "lazy"}
        How row-sparse gradients (:class:`~puzzle_rms.sparse.RowSparseVariable`, e.g. an Embedding) are
        applied: "dense" adds the rows into the dense gradient and takes the ordinary step (the same
        numbers as a dense gradient; Keras 3); "lazy" updates only the listed rows and their state, in
        one extra kernel call over those rows (TF1 and MindSpore sparse ops). Norm clipping and the
        finiteness check see the rows either way.
    """

    def __init__(self, learnRate: Any = 1e-3, nodeinfo: Any = None, lossScale: Union[float, DynamicLossScale] = 1.0,
                 clipNorm: Optional[float] = None, globalClipNorm: Optional[float] = None,
                 nonFinite: str = "raise", sparseUpdate: str = "dense") -> None:
        owner = type(self).__name__
        self.learnRate = validate_learn_rate(owner, learnRate)
        if not isinstance(lossScale, DynamicLossScale):
            check_range(owner, "lossScale", lossScale, 0.0, lowOpen=True)
        self.lossScale = lossScale
        self.clipNorm = check_optional_positive(owner, "clipNorm", clipNorm)
        self.globalClipNorm = check_optional_positive(owner, "globalClipNorm", globalClipNorm)
        self.nonFinite = check_choice(owner, "nonFinite", nonFinite, NON_FINITE_POLICIES)
        self.sparseUpdate = check_choice(owner, "sparseUpdate", sparseUpdate, SPARSE_UPDATES)
        if nodeinfo is not None and not all(callable(getattr(nodeinfo, m, None)) for m in ("broadcast", "allreduceMean")):
            raise TypeError(f"{owner}: nodeinfo must be None or a NodeInfo (with broadcast and allreduceMean "
                            f"methods), got {nodeinfo!r} ({type(nodeinfo).__name__})")
        self.nodeinfo = nodeinfo
        self.t = 0
        self.skippedSteps = 0
        self.groups: list[ParamGroup] = []
        self.buckets: list[Bucket] = []
        self.backend: Optional[backends.Backend] = None
        self.useGlobalState = False

    # --- what subclasses provide ----------------------------------------------------------------
    def stateInit(self) -> dict[str, float]:
        """Name -> initial value of each per-parameter state buffer."""
        return {}

    def step(self, bucket: Bucket, segParams: Any, gradScale: float) -> None:
        """Run the fused kernel on one bucket; ``gradScale`` multiplies the gradient (loss scale, clipping)."""
        raise NotImplementedError

    def groupDefaults(self) -> dict[str, Any]:
        """Optimizer-wide values of the per-group hyperparameters (weight decay and its filter)."""
        return {"weightDecay": 0.0, "decoupledWeightDecay": 0.0, "decayFilter": None}

    def masterWeights(self) -> bool:
        return False

    # --- setup ----------------------------------------------------------------------------------
    def setupOn(self, target: Any, useGlobalState: bool = False) -> None:
        """Attach to the parameters of ``target`` and allocate the optimizer state.

        ``target`` is a Module, a dict or list of Variables, or a list of parameter-group dicts
        ``{"params": <Module|dict|list>, "learnRate": ..., "weightDecay": ..., "decoupledWeightDecay": ...,
        "decayFilter": ...}``. With ``useGlobalState=True`` all parameters of one dtype are packed into
        one flat buffer (the Variables become views of it) and one kernel call updates them all.
        """
        owner = type(self).__name__
        check_bool(owner, "useGlobalState", useGlobalState)
        if self.nodeinfo is not None and not useGlobalState:
            raise ValueError(f"{owner}.setupOn: distributed training (nodeinfo) needs useGlobalState=True, "
                             f"so that gradients are averaged with one collective per dtype")
        groups = self._parse_groups(target)
        backend = backends.current()
        seen: dict[int, str] = {}
        names: set[str] = set()
        for group in groups:
            for name, var in zip(group.names, group.variables):
                if id(var) in seen:
                    raise ValueError(f"{owner}.setupOn: variable {name!r} appears twice (also as {seen[id(var)]!r}); "
                                     f"each Variable must appear once")
                if name in names:
                    raise ValueError(f"{owner}.setupOn: two variables are named {name!r}; expected unique names "
                                     f"(name the Variables, or pass dicts of name -> Variable)")
                seen[id(var)] = name
                names.add(name)
                for what in ("data", "grad"):
                    if not backend.owns(getattr(var, what)):
                        raise TypeError(f"{owner}.setupOn: variable {name!r} holds a {type(getattr(var, what)).__name__}"
                                        f" {what} but the current backend is {backend.name!r}")
                if self.nodeinfo is not None and self.sparseUpdate == "lazy" and isinstance(var, RowSparseVariable):
                    raise ValueError(f"{owner}.setupOn: variable {name!r} has row-sparse gradients, and "
                                     f"sparseUpdate='lazy' is not supported with nodeinfo; use sparseUpdate='dense'")
        self.release()
        self.groups, self.backend, self.useGlobalState = groups, backend, useGlobalState
        self.buckets = self._make_buckets(backend, groups, useGlobalState)
        if self.nodeinfo is not None:
            for bucket in self.buckets:
                self.nodeinfo.broadcast(bucket.weights())
                if "master" in bucket.state:
                    backend.copy_cast(bucket.state["master"], bucket.weights())

    def _parse_groups(self, target: Any) -> list[ParamGroup]:
        owner = type(self).__name__
        specs = target if isinstance(target, (list, tuple)) and target and isinstance(target[0], dict) else [{"params": target}]
        defaults = self.groupDefaults()
        groups = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or "params" not in spec:
                raise TypeError(f"{owner}.setupOn: parameter group {i} must be a dict with a 'params' entry, got {spec!r}")
            unknown = sorted(set(spec) - set(GROUP_KEYS))
            if unknown:
                raise TypeError(f"{owner}.setupOn: parameter group {i} has unknown keys {unknown}; "
                                f"accepted: {', '.join(GROUP_KEYS)}")
            decayFilter = spec.get("decayFilter", defaults["decayFilter"])
            if decayFilter is not None and not callable(decayFilter):
                raise TypeError(f"{owner}.setupOn: parameter group {i}: decayFilter must be a callable name -> bool "
                                f"or None, got {decayFilter!r}")
            items = _named_variables(spec["params"], owner)
            lr = spec.get("learnRate")
            group = ParamGroup(
                names=[name for name, _ in items], variables=[var for _, var in items],
                learnRate=None if lr is None else validate_learn_rate(owner, lr),
                weightDecay=check_range(owner, "weightDecay", spec.get("weightDecay", defaults["weightDecay"]), 0.0),
                decoupledWeightDecay=check_range(owner, "decoupledWeightDecay",
                                                 spec.get("decoupledWeightDecay", defaults["decoupledWeightDecay"]), 0.0),
                decayFilter=decayFilter,
            )
            groups.append(group)
        if not any(group.variables for group in groups):
            raise ValueError(f"{owner}.setupOn: no variables to optimize in the {type(target).__name__} given; "
                             f"expected at least one Variable")
        return groups

    def _make_buckets(self, backend: backends.Backend, groups: list[ParamGroup], flat: bool) -> list[Bucket]:
        entries = []  # (name, var, group index, decays?)
        for gi, group in enumerate(groups):
            for name, var in zip(group.names, group.variables):
                decays = True if group.decayFilter is None else bool(group.decayFilter(name))
                entries.append((name, var, gi, decays))
        if flat:
            byDtype: dict[np.dtype, list] = {}
            for entry in entries:
                byDtype.setdefault(np.dtype(entry[1].dtype), []).append(entry)
            parts = list(byDtype.values())
        else:
            parts = [[entry] for entry in entries]
        return [Bucket(backend, [e[0] for e in part], [e[1] for e in part], [e[2] for e in part], [e[3] for e in part],
                       flat, self.stateInit(), self.masterWeights(), lazyRows=self.sparseUpdate == "lazy")
                for part in parts]

    def release(self) -> None:
        """Detach from the current parameters (they keep their values in private arrays)."""
        for bucket in self.buckets:
            bucket.release()
        self.buckets = []

    # --- the step -------------------------------------------------------------------------------
    @property
    def lossScaleValue(self) -> float:
        """The current loss scale (multiply the loss gradient by it before backward)."""
        return self.lossScale.scale if isinstance(self.lossScale, DynamicLossScale) else float(self.lossScale)

    def zeroGradParams(self) -> None:
        """Set every gradient to zero (modules accumulate into them)."""
        self._require_setup()
        for bucket in self.buckets:
            bucket.zeroGrads()

    def variables(self) -> Iterable[tuple[str, Variable]]:
        """(name, Variable) of every optimized parameter, in bucket order."""
        for bucket in self.buckets:
            yield from zip(bucket.names, bucket.variables)

    def stateOf(self, name: str) -> dict[str, Any]:
        """Views of the state buffers (``ms``, ``mg``, ``mom``, ``master`` ...) of the variable called ``name``."""
        for bucket in self.buckets:
            if name in bucket.names:
                return bucket.stateOf(bucket.names.index(name))
        raise KeyError(f"{type(self).__name__}: no variable named {name!r}; expected one of "
                       f"{[n for n, _ in self.variables()]}")

    def currentLearnRates(self, step: Optional[int] = None) -> np.ndarray:
        """The learning rate of each group for update ``step`` (0-based; default: the next update)."""
        step = self.t if step is None else step
        owner = type(self).__name__
        return np.array([learn_rate_at(owner, self.learnRate if g.learnRate is None else g.learnRate, step)
                         for g in self.groups])

    def update(self) -> bool:
        """Apply one update to every parameter from its gradient.

        Returns True when the step was applied, False when it was skipped (non-finite gradient with
        ``nonFinite="skip"`` or a dynamic loss scale). Raises NonFiniteGradientError (``nonFinite="raise"``)
        before anything is modified.
        """
        self._require_setup()
        for bucket in self.buckets:
            if not bucket.flat:
                self._check_local_grad(bucket)
        groupLr = self.currentLearnRates()
        groupWd = np.array([g.weightDecay for g in self.groups])
        groupWdd = np.array([g.decoupledWeightDecay for g in self.groups])
        rowViews = [bucket.sparseRows() for bucket in self.buckets]  # dense mode: rows join the dense gradients
        if self.nodeinfo is not None:
            for bucket in self.buckets:
                self.nodeinfo.allreduceMean(bucket.grads())
        gradScale = 1.0 / self.lossScaleValue
        dynamic = isinstance(self.lossScale, DynamicLossScale)
        sums = None
        if self.clipNorm is not None or self.globalClipNorm is not None:  # the norms also tell finiteness
            sums = [self.backend.segment_sumsq(bucket.grads(), bucket.layout)
                    + (0.0 if rows is None else rows.segmentSumsq()) for bucket, rows in zip(self.buckets, rowViews)]
            if not self._finite([~np.isfinite(s) for s in sums], dynamic):
                return False
        elif self.nonFinite != "ignore" or dynamic:
            bad = [bucket.nonfinite() | (False if rows is None else rows.segmentNonfinite())
                   for bucket, rows in zip(self.buckets, rowViews)]
            if not self._finite(bad, dynamic):
                return False
        globalFactor = 1.0
        if self.globalClipNorm is not None:
            norm = math.sqrt(sum(float(s.sum()) for s in sums)) * gradScale
            globalFactor = min(1.0, self.globalClipNorm / norm) if norm > 0 else 1.0
        for bucket, rows, bucketSums in zip(self.buckets, rowViews,
                                            sums if sums is not None else [None] * len(self.buckets)):
            clipFactors = None
            if self.clipNorm is not None:
                norms = np.sqrt(bucketSums) * gradScale
                clipFactors = self.clipNorm / np.maximum(norms, self.clipNorm)  # min(1, clipNorm / norm), 1 at norm 0
            segParams = bucket.segParams(groupLr, groupWd, groupWdd, clipFactors)
            self.step(bucket, segParams, gradScale * globalFactor)
            if rows is not None:
                self.step(rows, rows.segParams(bucket.segmentParams), gradScale * globalFactor)
            if "master" in bucket.state:
                self.backend.copy_cast(bucket.weights(), bucket.state["master"])
        self.t += 1
        if dynamic:
            self.lossScale.record(True)
        return True

    def _finite(self, bad: list[np.ndarray], dynamic: bool) -> bool:
        """Whether every gradient is finite (``bad``: per bucket, per segment, whether it is not); otherwise
        raise or record the skip, per the policy."""
        if not any(b.any() for b in bad):
            return True
        if dynamic:
            self.lossScale.record(False)
        elif self.nonFinite == "ignore":
            return True
        elif self.nonFinite == "raise":
            offending = {id(bucket.variables[i]) for bucket, b in zip(self.buckets, bad)
                         for i in np.flatnonzero(b).tolist()}
            # the first in the order setupOn was given, the same in local and global state
            first = next(name for group in self.groups for name, var in zip(group.names, group.variables)
                         if id(var) in offending)
            raise NonFiniteGradientError(
                f"{type(self).__name__}.update: the gradient of variable {first!r} is not finite (NaN or inf); "
                f"nothing was updated. Pass nonFinite='skip' to skip such steps.")
        self.skippedSteps += 1
        return False

    def _check_local_grad(self, bucket: Bucket) -> None:
        name, var = bucket.names[0], bucket.variables[0]
        if not self.backend.owns(var.grad):
            raise TypeError(f"{type(self).__name__}.update: variable {name!r} has a {type(var.grad).__name__} "
                            f"gradient but the backend is {self.backend.name!r}")
        if var.grad.shape != var.data.shape or var.grad.dtype != var.data.dtype:
            raise ValueError(f"{type(self).__name__}.update: variable {name!r} has a gradient of shape "
                             f"{tuple(var.grad.shape)} and dtype {var.grad.dtype}; expected shape "
                             f"{tuple(var.data.shape)} and dtype {var.data.dtype}")

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the state buffers, step counter, loss-scale state and hyperparameters to ``path`` (.npz, atomic).

        See :func:`puzzle_rms.checkpoint.saveOptimizer`; :func:`puzzle_rms.checkpoint.saveTraining` saves a
        module together with its optimizer.
        """
        from puzzle_rms.checkpoint import saveOptimizer  # deferred: checkpoint imports this package

        saveOptimizer(path, self)

    def load(self, path: str, hyperparameters: str = "check") -> None:
        """Restore what :meth:`save` wrote; ``hyperparameters`` is "check" (must match) or "keep" (use this
        optimizer's). Every name, shape and dtype is checked before anything is modified.
        See :func:`puzzle_rms.checkpoint.loadOptimizer`."""
        from puzzle_rms.checkpoint import loadOptimizer  # deferred: checkpoint imports this package

        loadOptimizer(path, self, hyperparameters)

    def _require_setup(self) -> None:
        if not self.buckets:
            raise RuntimeError(f"{type(self).__name__}: call setupOn(module) before zeroGradParams() or update()")
