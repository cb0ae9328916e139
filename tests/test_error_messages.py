"""Errors a newcomer meets say where the fault is and how to fix it, and change nothing."""
from __future__ import annotations

import numpy as np
import pytest

from puzzle_rms import Variable
from puzzle_rms.containers import Sequential
from puzzle_rms.modules import Activation, Linear, relu
from puzzle_rms.optimizers import RMSProp


def snapshot(net):
    return {name: var.data.copy() for name, var in net.namedVariables().items()}


def test_sequential_names_the_module_with_the_wrong_width(backend_name):
    """The third module expects 7 inputs but gets 8: the message gives its position, key and the module's own error."""
    gen = np.random.default_rng(0)
    net = Sequential()
    net.extend([Linear(4, 8, rng=gen), Activation(relu), Linear(7, 2, rng=gen)])
    before = snapshot(net)
    with pytest.raises(ValueError) as info:
        net(np.zeros((3, 4), np.float32))
    assert str(info.value) == ("Sequential(name=None): module 3 of 3 (index 2, key '2'): "
                               "Linear(name=None): input of shape (3, 8), expected (batch, 7)")
    assert all(np.array_equal(before[name], var.data) for name, var in net.namedVariables().items())


def test_nested_sequential_errors_give_the_whole_path(backend_name):
    gen = np.random.default_rng(0)
    inner = Sequential(name="head")
    inner.extend([Linear(8, 3, rng=gen), Linear(4, 1, rng=gen)])
    net = Sequential()
    net.extend([Linear(2, 8, rng=gen), inner])
    with pytest.raises(ValueError, match=r"^Sequential\(name=None\): module 2 of 2 \(index 1, key 'head'\): "
                                         r"Sequential\(name='head'\): module 2 of 2 \(index 1, key '1'\): "
                                         r"Linear\(name=None\): input of shape \(5, 3\), expected \(batch, 4\)$"):
        net(np.zeros((5, 2), np.float32))


@pytest.mark.parametrize("data, got", [
    ([[1.0, 2.0, 3.0]], "a Python list holding float values"),
    ([1, 2, 3], "a Python list holding int values"),
    (2.5, "a float"),
])
def test_python_lists_as_input_get_a_type_error_saying_how_to_convert(backend_name, data, got):
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    before = layer.getVar("W").data.copy()
    with pytest.raises(TypeError) as info:
        layer(data)
    assert str(info.value) == (f"Linear(name=None): input must be an array (a list only of arrays, one per input of a "
                               f"multi-input module), got {got}; convert it with np.asarray(value, dtype=np.float32)")
    assert np.array_equal(layer.getVar("W").data, before) and layer.inData is None


def test_a_list_as_grad_is_named_as_the_grad(backend_name):
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    layer(np.ones((1, 3), np.float32))
    with pytest.raises(TypeError, match=r"Linear\(name=None\): grad must be an array .*got a Python list"):
        layer.backward([[1.0, 2.0]])


def test_unnamed_variable_errors_give_its_shape_not_none(backend_name):
    var = Variable(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError) as info:
        var.grad = np.zeros((2, 3), np.float32)
    message = str(info.value)
    assert message.startswith("unnamed Variable of shape (3, 2): grad of shape (2, 3)") and "None" not in message
    with pytest.raises(ValueError, match=r"^unnamed Variable of shape \(4,\): learnRate must be in \[0, inf\), got -1"):
        Variable(np.zeros(4, np.float32), learnRate=-1)
    with pytest.raises(TypeError, match=r"^unnamed Variable of shape \(2,\): dtype int32 is not supported"):
        Variable(np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"^Variable 'W': learnRate"):
        Variable(np.zeros(4, np.float32), name="W", learnRate=-1)


@pytest.mark.parametrize("keyword, message", [
    ("lr", "RMSProp: unexpected keyword argument 'lr'; did you mean learnRate? 'lr' is the name in torch: "
           "RMSProp.like('torch', lr=...) takes that framework's argument names and defaults"),
    ("alpha", "RMSProp: unexpected keyword argument 'alpha'; did you mean factor? 'alpha' is the name in "
              "puzzlelib-graves, torch: RMSProp.like('torch', alpha=...) takes that framework's argument names and "
              "defaults"),
    ("learning_rate", "RMSProp: unexpected keyword argument 'learning_rate'; did you mean learnRate? "
                      "'learning_rate' is the name in keras3, keras2, keras2-legacy, tf1, mindspore, mxnet, mxnet2, "
                      "paddle, optax: RMSProp.like('keras3', learning_rate=...) takes that framework's argument names "
                      "and defaults"),
    ("learnrate", "RMSProp: unexpected keyword argument 'learnrate'; did you mean learnRate?"),
    ("momentom", "RMSProp: unexpected keyword argument 'momentom'; did you mean momentum?"),
])
def test_rmsprop_unknown_keyword_suggests_its_name_and_the_like_route(keyword, message):
    with pytest.raises(TypeError) as info:
        RMSProp(**{keyword: 0.01})
    assert str(info.value) == message


def test_rmsprop_keyword_with_no_close_name_lists_them_all():
    with pytest.raises(TypeError, match=r"^RMSProp: unexpected keyword argument 'xyz'; it takes: learnRate, factor, "
                                        r"epsilon, nodeinfo, epsInSqrt, .*, sparseUpdate, sparseDuplicates, .*, emaStart, stateDtype, stateSeed$"):
        RMSProp(xyz=1)


def test_rmsprop_framework_names_map_to_the_option_the_preset_sets():
    """Found by translating the preset, so keras's weight_decay (decoupled) and torch's (coupled) both show."""
    with pytest.raises(TypeError, match=r"did you mean decoupledWeightDecay or weightDecay\?"):
        RMSProp(weight_decay=0.1)
    with pytest.raises(TypeError, match=r"did you mean lossScale\? 'rescale_grad' is the name in mxnet, mxnet2"):
        RMSProp(rescale_grad=0.5)


def test_every_framework_argument_name_points_to_rmsprop_like():
    """Each argument name of a preset that RMSProp itself does not take gets the like() route, none crashes."""
    import inspect

    from puzzle_rms.optimizers.presets import PRESETS

    ours = set(inspect.signature(RMSProp).parameters)
    for name in sorted({argument for preset in PRESETS.values() for argument in preset.arguments} - ours):
        with pytest.raises(TypeError, match=rf"^RMSProp: unexpected keyword argument '{name}'; .*"
                                            rf"is the name in .*: RMSProp.like\('[\w.-]+', {name}=...\)"):
            RMSProp(**{name: 0.5})
