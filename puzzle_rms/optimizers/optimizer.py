"""Optimizer: setupOn, zeroGradParams, update, with everything that is not the update rule itself.

The base class owns what every rule shares: parameter groups, flat global
state, learning-rate schedules, loss scaling, gradient-norm clipping, the
non-finite gradient check and data-parallel gradient averaging. A subclass
names its state buffers (:meth:`stateInit`), its hyperparameters
(:attr:`Optimizer.HYPERPARAMETERS`) and runs its fused kernel on one bucket
(:meth:`step`).

The optimizer describes its own state: :meth:`stateArrays`, the counters ``t``
and ``skippedSteps``, :meth:`lossScaleState` and :meth:`hyperparameters` are
what a checkpoint writes, and :meth:`loadState` takes them back, validated.

Per update, the host work is scalar or per group, never per element: one
reduction pass per bucket (``segment_sumsq`` when clipping needs the norms,
else the overflow-free ``segment_nonfinite`` for the check), then one kernel
call per bucket (one per dtype with global state).
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np

from puzzle_rms import backends, puzzlelib_hdf
from puzzle_rms.checkpoint import loadOptimizer, saveOptimizer
from puzzle_rms.optimizers.buckets import Bucket, ParamGroup
from puzzle_rms.optimizers.describe import describe
from puzzle_rms.optimizers.loss_scale import DynamicLossScale, check_fixed_loss_scale, check_loss_scale_state
from puzzle_rms.optimizers.schedules import learn_rate_at, validate_learn_rate
from puzzle_rms.sparse import RowSparseVariable
from puzzle_rms.validation import (DECAY_REASON, Checked, check_bool, check_choice, check_float32_range, check_int,
                                   check_optional_positive, check_range)
from puzzle_rms.variable import Variable, check_updatable


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or infinity; nothing was updated."""


NON_FINITE_POLICIES = ("raise", "skip", "ignore")
SPARSE_UPDATES = ("dense", "lazy")
NODEINFO_METHODS = ("broadcast", "allreduceMean", "checkSame")
COUNTER_MAX = 2 ** 63 - 1  # t and skippedSteps fit an int64
SPARSE_DUPLICATES = ("sum", "clip-per-occurrence", "square-per-occurrence")
GROUP_KEYS = ("params", "learnRate", "learnRateScale", "weightDecay", "decoupledWeightDecay", "decayFilter")


def _named_variables(target: Any, owner: str) -> list[tuple[str, Variable]]:
    """(name, Variable) pairs of a Module, a dict of Variables or a list of Variables."""
    if hasattr(target, "namedVariables"):
        items = list(target.namedVariables().items())
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
        if var.grad is None:
            raise ValueError(f"{owner}.setupOn: variable {name!r} has no gradient (made with withgrad=False); "
                             "expected trainable Variables only")
    return items

def _match_state(owner: str, views: dict[str, dict[str, Any]], arrays: Any) -> list[tuple[Any, np.ndarray]]:
    """(state view, host array) for every buffer, once ``arrays`` fits ``views`` exactly in names, shapes, dtypes.

    Raises TypeError for a value that is not a mapping or a NumPy array, and ValueError listing every name,
    buffer, shape and dtype that differs.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{owner}: arrays must be a mapping name -> buffer -> numpy array, got {type(arrays).__name__}")
    mismatches = [f"variable {name!r}: not optimized by this optimizer" for name in arrays if name not in views]
    pairs = []
    for name, buffers in views.items():
        if name not in arrays:
            mismatches.append(f"variable {name!r}: missing (its buffers: {sorted(buffers)})")
            continue
        given = arrays[name]
        if not isinstance(given, Mapping):
            raise TypeError(f"{owner}: arrays[{name!r}] must be a mapping buffer -> numpy array, got "
                            f"{type(given).__name__}")
        mismatches += [f"state {buffer!r} of {name!r}: not a buffer of this optimizer (its buffers: "
                       f"{sorted(buffers)})" for buffer in given if buffer not in buffers]
        for buffer, view in buffers.items():
            array = given.get(buffer)
            if array is None:
                mismatches.append(f"state {buffer!r} of {name!r}: missing")
            elif not isinstance(array, np.ndarray):
                raise TypeError(f"{owner}: state {buffer!r} of {name!r} must be a numpy array (host), got "
                                f"{type(array).__name__}")
            elif array.shape != tuple(view.shape):
                mismatches.append(f"state {buffer!r} of {name!r}: shape {array.shape}, expected {tuple(view.shape)}")
            elif array.dtype != view.dtype:
                mismatches.append(f"state {buffer!r} of {name!r}: dtype {array.dtype}, expected {view.dtype}")
            else:
                pairs.append((view, array))
    if mismatches:
        lines = "\n".join(f"  - {line}" for line in mismatches)
        raise ValueError(f"{owner}: the arrays do not fit this optimizer's state ({len(mismatches)} mismatches); "
                         f"nothing was loaded:\n{lines}")
    return pairs


def fixed_after_setup(obj: Any, owner: str, name: str, changed: bool) -> None:
    """Raise when ``name`` is given a value that setupOn already built into the buckets or the state buffers."""
    if changed and obj.__dict__.get("buckets"):
        raise ValueError(f"{owner}: {name} shapes what setupOn built (state buffers, parameter groups); it cannot "
                         f"change after setupOn. Assign it before setupOn, or call setupOn again (a fresh state)")


def _check_loss_scale(obj: Any, owner: str, name: str, value: Any) -> Any:
    return value if isinstance(value, DynamicLossScale) else check_fixed_loss_scale(owner, name, value)


def _check_sparse_update(obj: Any, owner: str, name: str, value: Any) -> str:
    value = check_choice(owner, name, value, SPARSE_UPDATES)
    fixed_after_setup(obj, owner, name, value != obj.__dict__.get(name, value))
    return value


def _norm_of(values: np.ndarray) -> float:
    """The L2 norm of float64 ``values`` without overflow: ``m * sqrt(sum((x / m)**2))`` with ``m = max |x|``
    (NaN when a value is NaN or infinite)."""
    biggest = float(np.max(np.abs(values))) if values.size else 0.0
    if not math.isfinite(biggest):
        return math.nan
    if biggest == 0.0:
        return 0.0
    return biggest * math.sqrt(float(np.sum(np.square(values / biggest))))


def _segment_norms(bucket: Bucket, rows: Any, sums: np.ndarray) -> np.ndarray:
    """Per-segment gradient norms from the sums of squares: ``sqrt(sums)``, except where a sum is not finite.

    There the segment's gradient is read again (rare: only then): a segment with a NaN or infinite element
    gets NaN, one whose finite elements overflowed the sum (float64 gradients above about 1.3e154 / sqrt(n))
    gets its norm computed with scaling (:func:`_norm_of`), so that no finite gradient looks non-finite and
    norm clipping gets the true norm. inf remains only for a norm above the float64 range.
    """
    norms = np.sqrt(sums)
    for i in np.flatnonzero(~np.isfinite(sums)).tolist():
        parts = [np.asarray(bucket.backend.to_host(part), dtype=np.float64).reshape(-1)
                 for part in bucket.segmentGradients(i, rows)]
        finite = all(np.isfinite(part).all() for part in parts)
        norms[i] = _norm_of(np.concatenate(parts)) if finite else math.nan
    return norms


def _rowless_norms(sums: np.ndarray) -> np.ndarray:
    """Per-segment norms from sums of squares that include row occurrences not gathered in a RowsView (the
    per-occurrence and clip-first paths): a non-finite sum counts as a non-finite gradient (NaN), since its
    rows cannot be read again here. (So a float64 gradient above about 1e154 raises a false alarm there.)"""
    return np.where(np.isfinite(sums), np.sqrt(np.where(np.isfinite(sums), sums, 0.0)), np.nan)


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
    sparseDuplicates : {"sum", "clip-per-occurrence", "square-per-occurrence"}
        What the clipping (and the rule's state) sees of a row that a row-sparse gradient lists more
        than once: "sum" (the rows are summed first, as a dense gradient would hold them);
        "clip-per-occurrence" (Keras 2: the norms count each occurrence on its own and the value clip
        applies to each occurrence, then the rows are summed); "square-per-occurrence" (Keras 3 on
        TensorFlow: as clip-per-occurrence, and the mean square adds each occurrence's square).

    Attributes
    ----------
    HYPERPARAMETERS : tuple of str
        The attributes that configure the update, described by :meth:`hyperparameters` (and compared
        when a checkpoint is loaded). A subclass extends the tuple with its own. Run-time state
        (``t``, ``skippedSteps``, the buffers), wiring (``nodeinfo``, ``backend``, ``useGlobalState``) and
        the failure policy ``nonFinite`` are not hyperparameters: a run stopped on a NaN may resume with
        ``nonFinite="skip"``.
    """

    HYPERPARAMETERS: tuple[str, ...] = ("learnRate", "lossScale", "clipNorm", "globalClipNorm", "sparseUpdate",
                                        "sparseDuplicates")
    ATTRS: tuple[str, ...] = ("learnRate",)  # PuzzleLib's attributes: what setAttr may set, getAttrDict reports

    # validated on every assignment, in the constructor and after (PuzzleLib scripts assign them)
    learnRate = Checked(lambda obj, owner, name, value: validate_learn_rate(owner, value))
    lossScale = Checked(_check_loss_scale)
    clipNorm = Checked(lambda obj, owner, name, value: check_optional_positive(owner, name, value))
    globalClipNorm = Checked(lambda obj, owner, name, value: check_optional_positive(owner, name, value))
    nonFinite = Checked(lambda obj, owner, name, value: check_choice(owner, name, value, NON_FINITE_POLICIES))
    sparseUpdate = Checked(_check_sparse_update)

    def __init__(self, learnRate: Any = 1e-3, nodeinfo: Any = None, lossScale: Union[float, DynamicLossScale] = 1.0,
                 clipNorm: Optional[float] = None, globalClipNorm: Optional[float] = None,
                 nonFinite: str = "raise", sparseUpdate: str = "dense", sparseDuplicates: str = "sum") -> None:
        owner = type(self).__name__
        self.learnRate = learnRate
        self.lossScale = lossScale
        self.clipNorm = clipNorm
        self.globalClipNorm = globalClipNorm
        self.nonFinite = nonFinite
        self.sparseUpdate = sparseUpdate
        self.sparseDuplicates = check_choice(owner, "sparseDuplicates", sparseDuplicates, SPARSE_DUPLICATES)
        if nodeinfo is not None and sparseDuplicates != "sum":
            raise ValueError(f"{owner}: sparseDuplicates={sparseDuplicates!r} is not supported with nodeinfo; "
                             f"use 'sum'")
        if nodeinfo is not None and not all(callable(getattr(nodeinfo, m, None)) for m in NODEINFO_METHODS):
            raise TypeError(f"{owner}: nodeinfo must be None or a NodeInfo (with methods {', '.join(NODEINFO_METHODS)}"
                            f"), got {nodeinfo!r} ({type(nodeinfo).__name__})")
        self.nodeinfo = nodeinfo
        self.t = 0
        self.skippedSteps = 0
        self.groups: list[ParamGroup] = []
        self.buckets: list[Bucket] = []
        self.backend: Optional[backends.Backend] = None
        self.useGlobalState = False
        self.hooks: list[Any] = []

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

    def preClipValue(self) -> Optional[float]:
        """A value clip that :meth:`update` runs on the gradients (and each pending row) in place before
        measuring norms and summing repeated rows; None for none (the rule's kernel clips, if at all)."""
        return None

    def adjustRows(self, bucket: Bucket, squares: Any, segScale: np.ndarray) -> None:
        """With sparseDuplicates "square-per-occurrence": account for ``squares`` (per bucket,
        ``(segment, indices, sum of squared occurrences, sum of occurrences)`` of each row-sparse segment)
        before the kernel step; ``segScale`` is the kernel's gradient scale of each segment."""
        raise NotImplementedError(f"{type(self).__name__} does not support sparseDuplicates='square-per-occurrence'")

    # --- setup ----------------------------------------------------------------------------------
    def setupOn(self, target: Any, useGlobalState: bool = False) -> None:
        """Attach to the parameters of ``target`` and allocate the optimizer state.

        ``target`` is a Module, a dict or list of Variables, or a list of parameter-group dicts
        ``{"params": <Module|dict|list>, "learnRate": ..., "learnRateScale": ..., "weightDecay": ...,
        "decoupledWeightDecay": ..., "decayFilter": ...}`` (``learnRateScale`` >= 0 multiplies the group's
        learning rate or schedule, as Paddle's group ``learning_rate`` does). With ``useGlobalState=True`` all parameters of one dtype are packed into
        one flat buffer (the Variables become views of it) and one kernel call updates them all.

        Setup is transactional: everything that can fail (argument checks, the decay filters, the
        data-parallel consistency check) runs before the previous setup is released, so an error leaves
        the optimizer as it was. Calling setupOn again starts afresh: new state buffers (``ms`` at
        ``initialMeanSquare``, ``mg`` and ``mom`` at 0), ``t = 0`` and ``skippedSteps = 0``; a
        DynamicLossScale keeps its scale. A Variable taken by another optimizer's global-state setupOn,
        or replaced by ``Module.calcMode``, makes :meth:`update` raise instead of updating nothing.
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
                    check_updatable(f"{owner}.setupOn", f"the {what} of variable {name!r}", getattr(var, what))
                if var.retiredBy is not None:
                    raise ValueError(f"{owner}.setupOn: variable {name!r} was replaced by {var.retiredBy}; set up on "
                                     f"the module's current Variables")
                if self.nodeinfo is not None and self.sparseUpdate == "lazy" and isinstance(var, RowSparseVariable):
                    raise ValueError(f"{owner}.setupOn: variable {name!r} has row-sparse gradients, and "
                                     f"sparseUpdate='lazy' is not supported with nodeinfo; use sparseUpdate='dense'")
        if self.nodeinfo is not None:
            self.nodeinfo.checkSame(f"{owner}.setupOn", self._replicaDescription(backend, groups))
        entries = self._entries(groups)  # runs the decay filters: may raise, before anything is released
        self.release()
        self.groups, self.backend, self.useGlobalState = groups, backend, useGlobalState
        self.buckets = self._make_buckets(backend, entries, useGlobalState)
        self.t, self.skippedSteps = 0, 0
        if self.nodeinfo is not None:
            for bucket in self.buckets:
                self.nodeinfo.broadcast(bucket.weights(), f"{owner}.setupOn: weights of the {bucket.dtype} bucket")
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
                learnRateScale=check_range(owner, "learnRateScale", spec.get("learnRateScale", 1.0), 0.0),
                weightDecay=check_float32_range(owner, "weightDecay", spec.get("weightDecay", defaults["weightDecay"]),
                                                0.0, reason=DECAY_REASON),
                decoupledWeightDecay=check_float32_range(owner, "decoupledWeightDecay", spec.get(
                    "decoupledWeightDecay", defaults["decoupledWeightDecay"]), 0.0, reason=DECAY_REASON),
                decayFilter=decayFilter,
            )
            groups.append(group)
        if not any(group.variables for group in groups):
            raise ValueError(f"{owner}.setupOn: no variables to optimize in the {type(target).__name__} given; "
                             f"expected at least one Variable")
        return groups

    def _replicaDescription(self, backend: backends.Backend, groups: list[ParamGroup]) -> dict[str, dict[str, str]]:
        """What must be equal on every rank of a data-parallel run: backend, variables, hyperparameters."""
        variables = {name: f"position {i}, shape {tuple(var.shape)}, {np.dtype(var.dtype)}"
                     for i, (name, var) in enumerate((n, v) for g in groups for n, v in zip(g.names, g.variables))}
        settings = {name: json.dumps(value, sort_keys=True) for name, value in self._describeSettings(groups).items()}
        return {"backend": {"name": backend.name}, "variables": variables, "hyperparameters": settings}

    def _entries(self, groups: list[ParamGroup]) -> list[tuple[str, Variable, int, bool]]:
        """(name, Variable, group index, whether weight decay applies) of every variable."""
        entries = []
        for gi, group in enumerate(groups):
            for name, var in zip(group.names, group.variables):
                decays = True if group.decayFilter is None else bool(group.decayFilter(name))
                entries.append((name, var, gi, decays))
        return entries

    def _make_buckets(self, backend: backends.Backend, entries: list[tuple[str, Variable, int, bool]],
                      flat: bool) -> list[Bucket]:
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
        self._require_setup("zeroGradParams")
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
                         * g.learnRateScale for g in self.groups])

    # --- PuzzleLib's attribute and hook interface ------------------------------------------------
    def setAttr(self, name: str, value: Any) -> None:
        """Set PuzzleLib attribute ``name`` (one of :attr:`ATTRS`, e.g. ``learnRate``, ``factor``, ``momRate``),
        checked as the constructor checks it; the next update uses it."""
        owner = f"{type(self).__name__}.setAttr"
        if name not in self.ATTRS:
            raise ValueError(f"{owner}: unknown attribute {name!r}; expected one of {', '.join(self.ATTRS)}")
        if name == "learnRate":
            value = validate_learn_rate(owner, value)
        elif name == "epsilon":
            value = check_range(owner, name, value, 0.0, lowOpen=True)
        elif name == "momRate":
            value = check_range(owner, name, value, 0.0, 1.0, highOpen=True)
            if (value > 0) != (getattr(self, name) > 0):
                raise ValueError(f"{owner}: momRate {value!r} would switch the momentum buffer "
                                 f"{'off' if value == 0 else 'on'}; build a new optimizer for that")
        else:
            value = check_range(owner, name, value, 0.0, 1.0)
        setattr(self, name, value)

    def getAttrDict(self) -> dict[str, Any]:
        """PuzzleLib's attributes (:attr:`ATTRS`) and the update counter ``t``."""
        return {**{name: getattr(self, name) for name in self.ATTRS}, "t": self.t}

    def addHook(self, hook: Any) -> None:
        """Call ``hook(var, state)`` on every optimized Variable before each update (e.g.
        :class:`~puzzle_rms.optimizers.hooks.WeightDecay`, which adds to ``var.grad``), in either state mode."""
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}.addHook: hook must be callable(var, state), got {hook!r}")
        self.hooks.append(hook)

    def update(self, useStreams: bool = False, sync: bool = True) -> bool:
        """Apply one update to every parameter from its gradient.

        ``useStreams`` and ``sync`` are PuzzleLib's and change nothing here (one fused kernel call per bucket).
        Hooks (:meth:`addHook`) run first. Returns True when the step was applied, False when it was skipped
        (non-finite gradient with ``nonFinite="skip"`` or a dynamic loss scale). Raises NonFiniteGradientError
        (``nonFinite="raise"``) before any parameter or state is modified.
        """
        self._require_setup("update")
        if self.hooks:
            states = self.stateArrays()
            for hook in self.hooks:
                for name, var in self.variables():
                    hook(var, states[name])
        for bucket in self.buckets:
            bucket.checkBindings(f"{type(self).__name__}.update")
            if not bucket.flat:
                self._check_local_grad(bucket)
        groupLr = self.currentLearnRates()
        groupWd = np.array([g.weightDecay for g in self.groups])
        groupWdd = np.array([g.decoupledWeightDecay for g in self.groups])
        gradScale = 1.0 / self.lossScaleValue
        dynamic = isinstance(self.lossScale, DynamicLossScale)
        preClip = self.preClipValue()
        if preClip is not None:  # in the units of g / lossScale, as the kernel clips
            if self.nonFinite != "ignore" or dynamic:  # check before the clip would turn inf into the limit
                raw = [_rowless_norms(self.backend.segment_sumsq(bucket.grads(), bucket.layout)
                                      + bucket.pendingRowSumsq()) for bucket in self.buckets]
                if not self._finite([np.isnan(n) for n in raw], dynamic):
                    return False
            for bucket in self.buckets:
                bucket.clipGrads(preClip / gradScale)
        needNorms = self.clipNorm is not None or self.globalClipNorm is not None
        occurrences = self.sparseDuplicates != "sum"
        sums = None
        if needNorms and occurrences:  # every row occurrence on its own, before repeated rows are summed
            sums = [self.backend.segment_sumsq(bucket.grads(), bucket.layout) + bucket.pendingRowSumsq()
                    for bucket in self.buckets]
        squares = [bucket.pendingRowSquares() if self.sparseDuplicates == "square-per-occurrence" else None
                   for bucket in self.buckets]
        rowViews = [bucket.sparseRows() for bucket in self.buckets]  # dense mode: rows join the dense gradients
        if self.nodeinfo is not None:
            for bucket in self.buckets:
                self.nodeinfo.allreduceMean(bucket.grads(), f"gradient mean of the {bucket.dtype} bucket, "
                                                            f"update {self.t + 1}")
        norms = None
        if needNorms:  # the norms also tell finiteness
            if sums is None:  # one reduction pass per buffer, all results to the host at once
                rowPairs = [(rows.grads(), rows.layout) for rows in rowViews if rows is not None]
                allSums = self.backend.segment_sumsq_many([(b.grads(), b.layout) for b in self.buckets] + rowPairs)
                perRow = iter(allSums[len(self.buckets):])
                sums = [s + (0.0 if rows is None else rows.segmentSums(next(perRow)))
                        for s, rows in zip(allSums, rowViews)]
                norms = [_segment_norms(bucket, rows, bucketSums)
                         for bucket, rows, bucketSums in zip(self.buckets, rowViews, sums)]
            else:
                norms = [_rowless_norms(bucketSums) for bucketSums in sums]
            if not self._finite([np.isnan(n) for n in norms], dynamic):
                return False
        elif self.nonFinite != "ignore" or dynamic:  # an exponent-bit test: no norms, nothing to overflow
            bad = [bucket.nonfinite() | (False if rows is None else rows.segmentNonfinite())
                   for bucket, rows in zip(self.buckets, rowViews)]
            if not self._finite(bad, dynamic):
                return False
        globalFactor = 1.0
        if self.globalClipNorm is not None:
            total = sum(float(s.sum()) for s in sums)
            norm = (math.sqrt(total) if math.isfinite(total) else _norm_of(np.concatenate(norms))) * gradScale
            globalFactor = min(1.0, self.globalClipNorm / norm) if norm > 0 else 1.0
        for bucket, rows, bucketNorms, bucketSquares in zip(self.buckets, rowViews,
                                                            norms if norms is not None else [None] * len(self.buckets),
                                                            squares):
            clipFactors = None
            if self.clipNorm is not None:
                scaled = bucketNorms * gradScale
                clipFactors = self.clipNorm / np.maximum(scaled, self.clipNorm)  # min(1, clipNorm / norm), 1 at norm 0
            if bucketSquares:
                segScale = gradScale * globalFactor * (1.0 if clipFactors is None else clipFactors)
                self.adjustRows(bucket, bucketSquares, np.broadcast_to(segScale, bucket.sizes.shape))
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

    # --- what a checkpoint holds -----------------------------------------------------------------
    def stateArrays(self) -> dict[str, dict[str, Any]]:
        """Name -> buffer -> view of the state of every optimized variable: what a checkpoint saves.

        Buffers are the rule's (:meth:`stateInit`: ``ms``, ``mg``, ``mom`` for RMSProp) plus ``master`` (float32
        master weights of float16 parameters). Each view has its Variable's shape, lives on :attr:`backend` and
        shares memory with the optimizer, in either state mode. A stateless rule (SGD) maps each name to ``{}``.
        Names come in bucket order.
        """
        self._require_setup("stateArrays")
        return {name: bucket.stateOf(index) for bucket in self.buckets for index, name in enumerate(bucket.names)}

    def hyperparameters(self) -> dict[str, Any]:
        """An explicit JSON description of everything that configures the updates.

        ``{"class": <class name>, "groups": [...], <name>: <value> for each name in HYPERPARAMETERS}``; each
        parameter group is ``{"names", "learnRate" (None: the optimizer's), "weightDecay",
        "decoupledWeightDecay", "decayFilter"}``. Values are described by
        :func:`~puzzle_rms.optimizers.describe.describe`: numbers as they are, a schedule by its type and
        settings, a DynamicLossScale by its settings, a function by its qualified name. A checkpoint stores
        it and compares it on load. Attributes not named in ``HYPERPARAMETERS`` never appear.
        """
        return self._describeSettings(self.groups)

    def _describeSettings(self, groups: list[ParamGroup]) -> dict[str, Any]:
        """:meth:`hyperparameters` with the parameter groups ``groups``."""
        settings = {name: describe(getattr(self, name)) for name in self.HYPERPARAMETERS}
        settings["class"] = type(self).__qualname__
        settings["groups"] = [
            {"names": list(group.names), "learnRate": describe(group.learnRate),
             "learnRateScale": group.learnRateScale, "weightDecay": group.weightDecay,
             "decoupledWeightDecay": group.decoupledWeightDecay, "decayFilter": describe(group.decayFilter)}
            for group in groups
        ]
        return settings

    def lossScaleState(self) -> Optional[dict[str, Any]]:
        """The dynamic loss scale's ``{"scale", "goodSteps"}``, or None when the loss scale is a fixed number."""
        return self.lossScale.state() if isinstance(self.lossScale, DynamicLossScale) else None

    def loadState(self, arrays: Mapping[str, Mapping[str, np.ndarray]], t: int, skippedSteps: int,
                  lossScaleState: Optional[Mapping[str, Any]] = None) -> None:
        """Restore the state that :meth:`stateArrays`, ``t``, ``skippedSteps`` and :meth:`lossScaleState` held.

        Everything is validated before anything is modified; on any error parameters and state are untouched.

        Parameters
        ----------
        arrays : mapping name -> buffer -> numpy.ndarray
            Host arrays with exactly the names, buffers, shapes and dtypes of :meth:`stateArrays` (``{}`` for
            each variable of a stateless rule), copied into the state buffers.
        t : int
            Updates applied so far, an integer in [0, 2**63 - 1] (schedules and bias correction read it).
        skippedSteps : int
            Updates skipped for non-finite gradients, an integer in [0, 2**63 - 1].
        lossScaleState : dict, optional
            ``{"scale": float in [2**-126, 2**64], "goodSteps": int >= 0}``, loaded into a DynamicLossScale. None keeps
            the scaler's current state; with a fixed loss scale it is checked and not used.

        Raises
        ------
        RuntimeError
            :meth:`setupOn` was not called.
        TypeError
            ``arrays`` is not a mapping of mappings of numpy arrays, or a counter is not an integer.
        ValueError
            A name, buffer, shape or dtype differs (every difference is listed), or a counter or the
            loss-scale state is out of range.
        """
        owner = f"{type(self).__name__}.loadState"
        pairs = _match_state(owner, self.stateArrays(), arrays)
        t = check_int(owner, "t", t, 0, COUNTER_MAX)
        skippedSteps = check_int(owner, "skippedSteps", skippedSteps, 0, COUNTER_MAX)
        if lossScaleState is not None:
            lossScaleState = check_loss_scale_state(owner, lossScaleState)
        staged = [(view, self.backend.to_device(array)) for view, array in pairs]  # all moved before any write
        for view, value in staged:
            view[...] = value
        self.t, self.skippedSteps = t, skippedSteps
        if lossScaleState is not None and isinstance(self.lossScale, DynamicLossScale):
            self.lossScale.loadState(lossScaleState)

    def save(self, path: str) -> None:
        """Write the state buffers, step counter, loss-scale state and hyperparameters to ``path`` (.npz, atomic).

        See :func:`puzzle_rms.checkpoint.saveOptimizer`; :func:`puzzle_rms.checkpoint.saveTraining` saves a
        module together with its optimizer. A path ending in .hdf/.h5/.hdf5 gets PuzzleLib's HDF5 layout.
        """
        (puzzlelib_hdf.saveOptimizer if puzzlelib_hdf.isHdfPath(path) else saveOptimizer)(path, self)

    def load(self, path: str, hyperparameters: str = "check") -> None:
        """Restore what :meth:`save` wrote; ``hyperparameters`` is "check" (must match) or "keep" (use this
        optimizer's). Every name, shape and dtype is checked before anything is modified.
        See :func:`puzzle_rms.checkpoint.loadOptimizer`; .hdf/.h5/.hdf5 files are read as PuzzleLib's."""
        (puzzlelib_hdf.loadOptimizer if puzzlelib_hdf.isHdfPath(path) else loadOptimizer)(path, self, hyperparameters)

    def _require_setup(self, method: str) -> None:
        if not self.buckets:
            raise RuntimeError(f"{type(self).__name__}: call setupOn(module) before {method}()")
