"""Hyperparameters assigned after construction (PuzzleLib's idiom, ``opt.factor = 0.95``) are checked with the
constructor's message and leave the old value on error; values that cannot work in float32 kernels are refused
with the reason; a dynamic loss scale never grows to inf."""
from __future__ import annotations

import numpy as np
import pytest

from puzzle_rms.optimizers import DynamicLossScale, RMSProp
from puzzle_rms.optimizers.loss_scale import MAX_LOSS_SCALE
from puzzle_rms.variable import Variable

# (attribute, constructor argument, bad value)
BAD = [
    ("factor", "factor", -0.1), ("factor", "factor", float("nan")),
    ("epsilon", "epsilon", -1.0), ("epsilon", "epsilon", 1e-46), ("epsilon", "epsilon", "1e-5"),
    ("momentum", "momentum", float("nan")), ("momentum", "momentum", -0.1), ("nesterov", "nesterov", "yes"),
    ("centered", "centered", 1), ("epsInSqrt", "epsInSqrt", None), ("lrInMomentum", "lrInMomentum", 0),
    ("biasCorrection", "biasCorrection", "no"), ("wdBeforeClip", "wdBeforeClip", 2), ("maximize", "maximize", 1.0),
    ("useMasterWeights", "masterWeights", 1), ("initialMeanSquare", "initialMeanSquare", -1.0),
    ("weightDecay", "weightDecay", -1.0), ("weightDecay", "weightDecay", 1e300),
    ("decoupledWeightDecay", "decoupledWeightDecay", 1e300), ("decayFilter", "decayFilter", 3),
    ("clipValue", "clipValue", 0.0), ("clipWeights", "clipWeights", -1.0), ("clipNorm", "clipNorm", 0.0),
    ("globalClipNorm", "globalClipNorm", -2.0), ("lossScale", "lossScale", 0.0), ("lossScale", "lossScale", 1e-39),
    ("lossScale", "lossScale", 1e300), ("learnRate", "learnRate", -1.0), ("learnRate", "learnRate", []),
    ("learnRate", "learnRate", float("inf")), ("nonFinite", "nonFinite", "maybe"),
    ("sparseUpdate", "sparseUpdate", "sometimes"), ("clipValueFirst", "clipValueFirst", 1),
    ("gradientAccumulationSteps", "gradientAccumulationSteps", 0), ("emaMomentum", "emaMomentum", 1.5),
    ("emaOverwriteFrequency", "emaOverwriteFrequency", 0), ("emaStart", "emaStart", "never"),
]


@pytest.mark.parametrize("attribute,argument,value", BAD, ids=[f"{a}={v!r}" for a, _, v in BAD])
def test_assignment_is_checked_with_the_constructors_message(attribute, argument, value):
    with pytest.raises((TypeError, ValueError)) as fromConstructor:
        RMSProp(**{argument: value})
    optimizer = RMSProp()
    old = getattr(optimizer, attribute)
    with pytest.raises(type(fromConstructor.value)) as fromAssignment:
        setattr(optimizer, attribute, value)
    assert str(fromAssignment.value) == str(fromConstructor.value)
    assert argument in str(fromAssignment.value)
    assert getattr(optimizer, attribute) is old


@pytest.mark.parametrize("argument,value,reason", [
    ("epsilon", 1e-46, r"epsilon must be 0 or in \[1.17549e-38, 3.40282e\+38\], got 1e-46 \(in float32 state a smaller "
                       r"value is flushed to 0"),
    ("lossScale", 1e-39, r"lossScale must be in \[1.17549e-38, 1.84467e\+19\], got 1e-39 \(its reciprocal multiplies"),
    ("weightDecay", 1e300, r"weightDecay must be in \[0, 3.40282e\+38\], got 1e\+300 \(it multiplies the weights"),
    ("decoupledWeightDecay", 1e300, r"decoupledWeightDecay must be in \[0, 3.40282e\+38\]"),
])
def test_values_that_cannot_work_in_float32_are_refused_with_the_reason(argument, value, reason):
    with pytest.raises(ValueError, match=reason):
        RMSProp(**{argument: value})


def test_group_weight_decay_that_cannot_work_is_refused():
    optimizer = RMSProp()
    with pytest.raises(ValueError, match=r"weightDecay must be in \[0, 3.40282e\+38\], got 1e\+300"):
        optimizer.setupOn([{"params": [Variable(np.ones(3, np.float32), name="w")], "weightDecay": 1e300}])


def test_cross_checks_hold_on_assignment():
    optimizer = RMSProp(momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match=r"nesterov=True needs momentum > 0, got momentum=0"):
        optimizer.momentum = 0.0
    assert optimizer.momentum == 0.9
    optimizer = RMSProp(biasCorrection=True)
    with pytest.raises(ValueError, match=r"biasCorrection needs factor < 1, got factor=1"):
        optimizer.factor = 1.0
    optimizer = RMSProp(factor=1.0)
    with pytest.raises(ValueError, match=r"biasCorrection needs factor < 1"):
        optimizer.biasCorrection = True
    assert optimizer.biasCorrection is False


def _variables() -> dict[str, Variable]:
    return {"w": Variable(np.linspace(-1, 1, 6).astype(np.float32).reshape(2, 3), name="w")}


def test_what_setup_built_cannot_change_after_setup_the_rest_takes_effect(backend_name):
    optimizer = RMSProp(0.1, factor=0.9)
    variables = _variables()
    optimizer.setupOn(variables)
    for attribute, value in [("centered", True), ("momentum", 0.5), ("useMasterWeights", True),
                             ("weightDecay", 0.1), ("decoupledWeightDecay", 0.1), ("decayFilter", lambda n: True),
                             ("sparseUpdate", "lazy")]:
        old = getattr(optimizer, attribute)
        with pytest.raises(ValueError, match=r"cannot change after setupOn"):
            setattr(optimizer, attribute, value)
        assert getattr(optimizer, attribute) is old
    optimizer.factor = 0.5  # takes effect at the next update: ms = 0.5 * 0 + 0.5 * g**2
    variables["w"].grad[...] = 2.0
    optimizer.update()
    np.testing.assert_array_equal(optimizer.stateOf("w")["ms"], np.float32(0.5 * 4.0))
    withMomentum = RMSProp(momentum=0.5)
    withMomentum.setupOn(_variables())
    withMomentum.momentum = 0.7  # the buffer exists: allowed
    assert withMomentum.momentum == 0.7


def test_preset_errors_name_the_frameworks_argument():
    with pytest.raises(ValueError, match=r"a lr sequence must be a non-empty") as caught:
        RMSProp.like("torch", lr=[])
    assert "learnRate" not in str(caught.value)
    with pytest.raises(ValueError, match=r"eps must be 0 or in \[1.17549e-38, 3.40282e\+38\], got 1e-46") as caught:
        RMSProp.like("torch", eps=1e-46)
    assert "epsilon" not in str(caught.value)


def test_dynamic_loss_scale_is_capped_below_inf():
    scale = DynamicLossScale(initialScale=2.0 ** 62, growthInterval=1)
    for _ in range(5):
        scale.record(True)
    assert scale.scale == MAX_LOSS_SCALE == 2.0 ** 64
    huge = DynamicLossScale(initialScale=1.0, growthFactor=1e300, growthInterval=1)
    for _ in range(3):
        huge.record(True)
    assert huge.scale == MAX_LOSS_SCALE
    with pytest.raises(ValueError, match=r"loss-scale state 'scale' must be in \[1.17549e-38, 1.84467e\+19\]"):
        scale.loadState({"scale": 2.0 ** 70, "goodSteps": 0})
