"""Every public constructor and call rejects bad arguments with an error naming the argument, the value and
what was expected; bad calls on a set-up optimizer leave parameters and state untouched.

One table, one row per bad argument: the call, the exception type, the argument's name and how the value
must appear in the message (its ``repr`` unless the row says otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pytest

from puzzle_rms import backends
from puzzle_rms.checkpoint import loadModule, loadOptimizer, loadTraining, saveModule, saveTraining
from puzzle_rms.containers import Sequential
from puzzle_rms.cost import MSE, CrossEntropy
from puzzle_rms.modules import Activation, Embedding, Linear
from puzzle_rms.optimizers import (SGD, CosineDecay, DynamicLossScale, ExponentialDecay, PiecewiseConstant,
                                   RMSProp)
from puzzle_rms.variable import Variable

UNSET = object()
EXPECTATION_WORDS = ("must", "expected", "one of", "needs", "accepts", "accepted", "does not match", "call ")


@dataclass
class Case:
    id: str
    call: Callable[[], Any]
    error: type
    argument: str
    value: Any = UNSET  # its repr must appear in the message
    shows: Optional[str] = None  # what must appear instead of the repr (e.g. a type name)


def var(shape: Any = (3,), dtype: Any = np.float32, name: str = "v") -> Variable:
    return Variable(np.ones(shape, dtype), name=name)


def set_up(optimizer: Any, useGlobalState: bool = False) -> Any:
    optimizer.setupOn([var()], useGlobalState=useGlobalState)
    return optimizer


def rms(**kwargs: Any) -> Callable[[], Any]:
    return lambda: RMSProp(**kwargs)


class NotANode:
    rank = 0


def bad_learn_rate_assigned() -> None:
    optimizer = set_up(RMSProp())
    optimizer.learnRate = -0.5  # refused at the assignment, with the constructor's message


def schedule_returning_nan() -> None:
    optimizer = set_up(RMSProp(lambda step: float("nan")))
    optimizer.update()


def setup_twice_the_same() -> None:
    shared = var(name="shared")
    RMSProp().setupOn([shared, shared])


def ckpt(tmp: Any) -> str:
    path = str(tmp / "v.npz")
    saveModule(path, {"v": var()})
    return path


CASES = [
    # RMSProp and each of its options
    Case("rms-learnRate-negative", rms(learnRate=-1.0), ValueError, "learnRate", -1.0),
    Case("rms-learnRate-string", rms(learnRate="fast"), TypeError, "learnRate", "fast"),
    Case("rms-learnRate-nan", rms(learnRate=float("nan")), ValueError, "learnRate", float("nan")),
    Case("rms-learnRate-sequence-negative", rms(learnRate=[0.1, -0.1]), ValueError, "learnRate", [0.1, -0.1]),
    Case("rms-learnRate-sequence-empty", rms(learnRate=[]), ValueError, "learnRate", []),
    Case("rms-factor-negative", rms(factor=-0.5), ValueError, "factor", -0.5),
    Case("rms-factor-bool", rms(factor=True), TypeError, "factor", True),
    Case("rms-factor-inf", rms(factor=float("inf")), ValueError, "factor", float("inf")),
    Case("rms-epsilon-negative", rms(epsilon=-1e-8), ValueError, "epsilon", -1e-8),
    Case("rms-epsInSqrt", rms(epsInSqrt="yes"), TypeError, "epsInSqrt", "yes"),
    Case("rms-momentum-inf", rms(momentum=float("inf")), ValueError, "momentum", float("inf")),
    Case("rms-momentum-negative", rms(momentum=-0.1), ValueError, "momentum", -0.1),
    Case("rms-lrInMomentum", rms(lrInMomentum=1), TypeError, "lrInMomentum", 1),
    Case("rms-nesterov-type", rms(nesterov="on", momentum=0.9), TypeError, "nesterov", "on"),
    Case("rms-nesterov-without-momentum", rms(nesterov=True), ValueError, "nesterov", shows="momentum=0.0"),
    Case("rms-centered", rms(centered=None), TypeError, "centered", None),
    Case("rms-initialMeanSquare", rms(initialMeanSquare=-0.5), ValueError, "initialMeanSquare", -0.5),
    Case("rms-biasCorrection-type", rms(biasCorrection=1), TypeError, "biasCorrection", 1),
    Case("rms-biasCorrection-factor-one", rms(biasCorrection=True, factor=1.0), ValueError, "biasCorrection",
         shows="factor=1.0"),
    Case("rms-weightDecay", rms(weightDecay=-1e-4), ValueError, "weightDecay", -1e-4),
    Case("rms-decoupledWeightDecay", rms(decoupledWeightDecay="0.1"), TypeError, "decoupledWeightDecay", "0.1"),
    Case("rms-decayFilter", rms(decayFilter="beta"), TypeError, "decayFilter", "beta"),
    Case("rms-wdBeforeClip", rms(wdBeforeClip=0), TypeError, "wdBeforeClip", 0),
    Case("rms-clipValue", rms(clipValue=0.0), ValueError, "clipValue", 0.0),
    Case("rms-clipWeights", rms(clipWeights=-1.0), ValueError, "clipWeights", -1.0),
    Case("rms-maximize", rms(maximize="no"), TypeError, "maximize", "no"),
    Case("rms-masterWeights", rms(masterWeights=1), TypeError, "masterWeights", 1),
    Case("rms-lossScale-zero", rms(lossScale=0.0), ValueError, "lossScale", 0.0),
    Case("rms-lossScale-string", rms(lossScale="dynamic"), TypeError, "lossScale", "dynamic"),
    Case("rms-clipNorm", rms(clipNorm=0.0), ValueError, "clipNorm", 0.0),
    Case("rms-globalClipNorm", rms(globalClipNorm=-2.0), ValueError, "globalClipNorm", -2.0),
    Case("rms-nonFinite", rms(nonFinite="warn"), ValueError, "nonFinite", "warn"),
    Case("rms-sparseUpdate", rms(sparseUpdate="sparse"), ValueError, "sparseUpdate", "sparse"),
    Case("rms-sparseDuplicates", rms(sparseDuplicates="mean"), ValueError, "sparseDuplicates", "mean"),
    Case("rms-sparseDuplicates-square-rho-zero", rms(sparseDuplicates="square-per-occurrence", factor=0.0),
         ValueError, "sparseDuplicates", shows="factor=0"),
    Case("rms-clipValueFirst", rms(clipValueFirst="yes"), TypeError, "clipValueFirst", "yes"),
    Case("rms-gradientAccumulationSteps", rms(gradientAccumulationSteps=0), ValueError, "gradientAccumulationSteps", 0),
    Case("rms-gradientAccumulationSteps-lazy", rms(gradientAccumulationSteps=2, sparseUpdate="lazy"), ValueError,
         "gradientAccumulationSteps", shows="'lazy'"),
    Case("rms-emaMomentum", rms(emaMomentum=1.5), ValueError, "emaMomentum", 1.5),
    Case("rms-emaOverwriteFrequency", rms(emaMomentum=0.9, emaOverwriteFrequency=2.5), TypeError,
         "emaOverwriteFrequency", 2.5),
    Case("rms-emaStart", rms(emaStart="never"), ValueError, "emaStart", "never"),
    Case("rms-stateDtype", rms(stateDtype="float8"), ValueError, "stateDtype", "float8"),
    Case("rms-stateSeed", rms(stateSeed=1.5), TypeError, "stateSeed", 1.5),
    Case("rms-nodeinfo", rms(nodeinfo=NotANode()), TypeError, "nodeinfo", shows="NotANode"),
    Case("rms-like-name", lambda: RMSProp.like("caffe"), ValueError, "name", "caffe"),
    Case("rms-like-value", lambda: RMSProp.like("torch", alpha=2.0), ValueError, "alpha", 2.0),
    Case("rms-unknown-keyword", lambda: RMSProp(lr=0.01), TypeError, "learnRate", shows="'lr'"),
    Case("rms-like-unknown-argument", lambda: RMSProp.like("torch", learning_rate=0.1), TypeError,
         "learning_rate", shows="'learning_rate'"),
    Case("rms-like-missing-argument", lambda: RMSProp.like("optax"), TypeError, "learning_rate",
         shows="missing"),
    # SGD
    Case("sgd-lr", lambda: SGD(learnRate=-0.1), ValueError, "learnRate", -0.1),
    Case("sgd-nonFinite", lambda: SGD(nonFinite=None), ValueError, "nonFinite", None),
    # Optimizer.setupOn, update
    Case("setup-target", lambda: RMSProp().setupOn(42), TypeError, "target", shows="int"),
    Case("setup-useGlobalState", lambda: RMSProp().setupOn([var()], useGlobalState="yes"), TypeError,
         "useGlobalState", "yes"),
    Case("setup-not-a-variable", lambda: RMSProp().setupOn({"w": np.ones(3)}), TypeError, "'w'",
         shows="ndarray"),
    Case("setup-no-variables", lambda: RMSProp().setupOn([]), ValueError, "no variables", shows="list"),
    Case("setup-twice-the-same", setup_twice_the_same, ValueError, "'shared'", shows="twice"),
    Case("setup-group-unknown-key", lambda: RMSProp().setupOn([{"params": [var()], "lr": 0.1}]), TypeError,
         "parameter group 0", shows="['lr']"),
    Case("setup-group-no-params", lambda: RMSProp().setupOn([{"learnRate": 0.1}]), TypeError, "'params'",
         shows="{'learnRate': 0.1}"),
    Case("setup-group-weightDecay", lambda: RMSProp().setupOn([{"params": [var()], "weightDecay": -1.0}]),
         ValueError, "weightDecay", -1.0),
    Case("setup-group-learnRate", lambda: RMSProp().setupOn([{"params": [var()], "learnRate": "x"}]),
         TypeError, "learnRate", "x"),
    Case("setup-group-decayFilter", lambda: RMSProp().setupOn([{"params": [var()], "decayFilter": 3}]),
         TypeError, "decayFilter", 3),
    Case("update-before-setup", lambda: RMSProp().update(), RuntimeError, "setupOn", shows="update()"),
    Case("assigned-bad-learnRate", bad_learn_rate_assigned, ValueError, "learnRate", -0.5),
    Case("update-schedule-nan", schedule_returning_nan, ValueError, "learning rate", float("nan")),
    Case("stateOf-unknown", lambda: set_up(RMSProp()).stateOf("nope"), KeyError, "nope", shows="['v']"),
    # schedules
    Case("exp-initial", lambda: ExponentialDecay(-1.0, 0.5, 10), ValueError, "initial", -1.0),
    Case("exp-decayRate", lambda: ExponentialDecay(0.1, 0.0, 10), ValueError, "decayRate", 0.0),
    Case("exp-decaySteps", lambda: ExponentialDecay(0.1, 0.5, 0), ValueError, "decaySteps", 0),
    Case("exp-staircase", lambda: ExponentialDecay(0.1, 0.5, 10, staircase="yes"), TypeError, "staircase", "yes"),
    Case("cos-initial", lambda: CosineDecay("0.1", 10), TypeError, "initial", "0.1"),
    Case("cos-decaySteps", lambda: CosineDecay(0.1, -5), ValueError, "decaySteps", -5),
    Case("cos-alpha", lambda: CosineDecay(0.1, 10, alpha=1.5), ValueError, "alpha", 1.5),
    Case("piecewise-lengths", lambda: PiecewiseConstant([10], [0.1]), ValueError, "values", shows="got 1"),
    Case("piecewise-order", lambda: PiecewiseConstant([10, 5], [0.1, 0.2, 0.3]), ValueError, "boundaries",
         [10, 5]),
    Case("piecewise-boundary-type", lambda: PiecewiseConstant(["a"], [0.1, 0.2]), TypeError, "boundaries", "a"),
    Case("piecewise-value", lambda: PiecewiseConstant([10], [0.1, -0.2]), ValueError, "values", -0.2),
    # DynamicLossScale
    Case("dls-initialScale", lambda: DynamicLossScale(initialScale=0.0), ValueError, "initialScale", 0.0),
    Case("dls-growthFactor", lambda: DynamicLossScale(growthFactor=0.5), ValueError, "growthFactor", 0.5),
    Case("dls-backoffFactor", lambda: DynamicLossScale(backoffFactor=1.5), ValueError, "backoffFactor", 1.5),
    Case("dls-growthInterval-zero", lambda: DynamicLossScale(growthInterval=0), ValueError, "growthInterval", 0),
    Case("dls-growthInterval-fraction", lambda: DynamicLossScale(growthInterval=2.5), TypeError, "growthInterval",
         2.5),
    Case("dls-minScale", lambda: DynamicLossScale(minScale=-1.0), ValueError, "minScale", -1.0),
    # Variable
    Case("variable-dtype-int", lambda: Variable(np.arange(3)), TypeError, "dtype", shows="int64"),
    Case("variable-dtype-str", lambda: Variable(np.array(["a"])), TypeError, "dtype", shows="<U1"),
    Case("variable-name", lambda: Variable(np.ones(2, np.float32), name=5), TypeError, "name", 5),
    Case("variable-learnRate-negative", lambda: Variable(np.ones(2, np.float32), learnRate=-1.0), ValueError,
         "learnRate", -1.0),
    Case("variable-learnRate-type", lambda: Variable(np.ones(2, np.float32), learnRate="x"), TypeError,
         "learnRate", "x"),
    Case("variable-grad-shape", lambda: Variable(np.ones(2, np.float32), grad=np.ones(3, np.float32)), ValueError,
         "grad", shows="(3,)"),
    Case("variable-grad-type", lambda: Variable(np.ones(2, np.float32), grad=[1.0, 2.0]), TypeError, "grad",
         shows="list"),
    # modules
    Case("linear-insize", lambda: Linear(0, 3), ValueError, "insize", 0),
    Case("linear-outsize", lambda: Linear(3, 2.5), ValueError, "outsize", 2.5),
    Case("linear-wscale", lambda: Linear(3, 2, wscale="big"), TypeError, "wscale", "big"),
    Case("linear-useBias", lambda: Linear(3, 2, useBias=1), TypeError, "useBias", 1),
    Case("linear-initscheme", lambda: Linear(3, 2, initscheme="glorot"), ValueError, "initscheme", "glorot"),
    Case("linear-rng", lambda: Linear(3, 2, rng=7), TypeError, "rng", 7),
    Case("module-name", lambda: Linear(3, 2, name=5), TypeError, "name", 5),
    Case("activation-name", lambda: Activation("gelu"), ValueError, "activation", "gelu"),
    Case("activation-args", lambda: Activation("leakyRelu", args=("x",)), TypeError, "args", "x"),
    Case("embedding-vocab", lambda: Embedding(0, 4), ValueError, "vocab", 0),
    Case("embedding-dim", lambda: Embedding(10, -4), ValueError, "dim", -4),
    Case("embedding-wscale", lambda: Embedding(10, 4, wscale=float("nan")), ValueError, "wscale", float("nan")),
    Case("embedding-rng", lambda: Embedding(10, 4, rng="seed"), TypeError, "rng", "seed"),
    Case("calcMode", lambda: Linear(3, 2).calcMode(np.int32), ValueError, "calcMode", shows="int32"),
    Case("sequential-append", lambda: Sequential().append(42), TypeError, "append", shows="int"),
    Case("linear-input", lambda: Linear(3, 2)(np.ones((4, 5), np.float32)), ValueError, "input",
         shows="(4, 5)"),
    # costs
    Case("mse-shapes", lambda: MSE()(np.ones((2, 3)), np.ones((3, 2))), ValueError, "target", shows="(3, 2)"),
    Case("mse-empty", lambda: MSE()(np.ones((0, 3)), np.ones((0, 3))), ValueError, "pred", shows="(0, 3)"),
    Case("mse-dtype", lambda: MSE()(np.ones(3, np.int64), np.ones(3, np.int64)), ValueError, "pred",
         shows="int64"),
    Case("ce-pred-shape", lambda: CrossEntropy()(np.ones(3), np.zeros(3, np.int64)), ValueError, "pred",
         shows="(3,)"),
    Case("ce-target-dtype", lambda: CrossEntropy()(np.ones((2, 3)), np.zeros(2)), ValueError, "target",
         shows="float64"),
    Case("ce-target-range", lambda: CrossEntropy()(np.ones((2, 3)), np.array([0, 3])), ValueError, "target",
         shows="[0, 3]"),
    # backends
    Case("backend-name", lambda: backends.use("tensorflow"), ValueError, "backend", "tensorflow"),
    Case("backend-type", lambda: backends.use(3), ValueError, "backend", 3),
]

CHECKPOINT_CASES = [
    Case("save-path", lambda tmp: saveModule(3, {"v": var()}), TypeError, "path", 3),
    Case("save-module", lambda tmp: saveModule(str(tmp / "m.npz"), 42), TypeError, "module", shows="int"),
    Case("save-module-entry", lambda tmp: saveModule(str(tmp / "m.npz"), {"v": 1.0}), TypeError, "'v'",
         shows="float"),
    Case("save-optimizer", lambda tmp: saveTraining(str(tmp / "m.npz"), {"v": var()}, "adam"), TypeError,
         "optimizer", shows="str"),
    Case("load-path", lambda tmp: loadModule(None, {"v": var()}), TypeError, "path", None),
    Case("load-hyperparameters", lambda tmp: loadOptimizer(ckpt(tmp), set_up(RMSProp()), hyperparameters="restore"),
         ValueError, "hyperparameters", "restore"),
    Case("load-training-hyperparameters",
         lambda tmp: loadTraining(ckpt(tmp), {"v": var()}, set_up(RMSProp()), hyperparameters=True), ValueError,
         "hyperparameters", True),
    Case("load-missing-file", lambda tmp: loadModule(str(tmp / "absent.npz"), {"v": var()}), FileNotFoundError,
         "checkpoint", shows="absent.npz"),
]


def check_message(case: Case, error: BaseException) -> None:
    message = str(error)
    assert case.argument in message, message
    shown = case.shows if case.shows is not None else repr(case.value)
    assert shown in message, message
    if case.error is not FileNotFoundError:
        assert any(word in message for word in EXPECTATION_WORDS), message


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_argument_is_named_with_its_value(backend_name, case):
    with pytest.raises(case.error) as info:
        case.call()
    assert type(info.value) is case.error or case.error is not Exception
    check_message(case, info.value)


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[case.id for case in CHECKPOINT_CASES])
def test_bad_checkpoint_argument_is_named_with_its_value(tmp_path, case):
    with pytest.raises(case.error) as info:
        case.call(tmp_path)
    check_message(case, info.value)


def test_table_covers_every_rmsprop_option():
    import inspect

    options = set(inspect.signature(RMSProp.__init__).parameters) - {"self"}
    covered = {case.id.split("-")[1] for case in CASES if case.id.startswith("rms-")}
    assert options <= covered, sorted(options - covered)


# --- bad calls leave a set-up optimizer untouched ------------------------------------------------
def snapshot(variables: list[Variable], optimizer: Any) -> list[bytes]:
    out = [np.asarray(v.data).tobytes() for v in variables]
    out += [np.asarray(view).tobytes() for v in variables for view in optimizer.stateOf(v.name).values()]
    return out + [repr((optimizer.t, optimizer.skippedSteps)).encode()]


@pytest.mark.parametrize("useGlobalState", [False, True])
def test_rejected_calls_modify_nothing(backend_name, useGlobalState):
    variables = [var((2, 3), name="a"), var(4, np.float64, name="b")]
    optimizer = RMSProp(0.1, momentum=0.9, centered=True)
    optimizer.setupOn(variables, useGlobalState=useGlobalState)
    for v in variables:
        v.grad[...] = 0.5
    optimizer.update()
    before = snapshot(variables, optimizer)
    with pytest.raises(ValueError, match="learnRate must be finite"):
        optimizer.learnRate = float("inf")
    assert optimizer.learnRate == 0.1
    optimizer.learnRate = lambda step: float("inf")
    with pytest.raises(ValueError, match="learning rate"):
        optimizer.update()
    optimizer.learnRate = 0.1
    with pytest.raises(TypeError, match="useGlobalState"):
        optimizer.setupOn(variables, useGlobalState=1)
    with pytest.raises(ValueError, match="does not match"):
        variables[0].grad = np.ones((3, 2), np.float32)
    assert snapshot(variables, optimizer) == before
    assert optimizer.update() and snapshot(variables, optimizer) != before
