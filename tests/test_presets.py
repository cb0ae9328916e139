"""RMSProp.like(name, ...) for what the golden suite does not cover, and the presets' argument checks.

The numbers of torch, Keras 2 (legacy and new), Keras 3, TF1, optax, MindSpore, MXNet 1.x and 2.x and
Paddle are proven against the frameworks
themselves in ``tests/test_goldens.py`` (trajectories printed by each framework, ``tests/goldens/``).
The references left here follow a framework's published update (docs or source listing), with that
framework's argument names and defaults, in float64, without code from ``puzzle_rms``, for presets
without goldens in this file's scope. Each runs four steps with changing gradients and a large eps.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rmsprop_reference import run_named

from puzzle_rms import backends
from puzzle_rms import Variable
from puzzle_rms.optimizers import RMSProp
from puzzle_rms.optimizers.presets import PRESETS, preset_group, resolve_name

F64 = dict(rtol=1e-10, atol=1e-12)
GOLDENS = Path(__file__).parent / "goldens"
NAMES = {"dense.weight": (5, 4), "bn.gamma": (7,)}


def host(x):
    return backends.current().to_host(x)


def lr_at(lr, step):
    return lr(step) if callable(lr) else lr


def changing(step):
    return [0.05, 0.02, 0.08, 0.03][step]


# --- the frameworks' algorithms -------------------------------------------------------------------
def puzzlelib(w, grads, name, learnRate=1e-3, factor=0.9, epsilon=1e-5, nodeinfo=None):
    ms = np.zeros_like(w)
    for t, g in enumerate(grads):
        ms = factor * ms + (1 - factor) * g ** 2
        w = w - lr_at(learnRate, t) * g / (np.sqrt(ms) + epsilon)
    return w


def puzzlelib_graves(w, grads, name, learnRate=1e-4, alpha=0.95, momRate=0.9, epsilon=1e-4, nodeinfo=None):
    mg, ms, delta = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads):
        mg = alpha * mg + (1 - alpha) * g
        ms = alpha * ms + (1 - alpha) * g ** 2
        delta = momRate * delta + lr_at(learnRate, t) * g / np.sqrt(ms - mg ** 2 + epsilon)
        w = w - delta
    return w


REFERENCES = {"puzzlelib": puzzlelib, "puzzlelib-graves": puzzlelib_graves}

CASES = [
    ("puzzlelib", dict(learnRate=0.01, epsilon=0.05)),
    ("puzzlelib", dict(learnRate=changing, factor=0.5, epsilon=0.01)),
    ("puzzlelib-graves", dict(learnRate=changing, alpha=0.9, epsilon=0.01)),
    ("puzzlelib-graves", dict(learnRate=0.01, momRate=0.0, epsilon=0.05)),
]


def problem(seed=7):
    gen = np.random.default_rng(seed)
    weights = {name: gen.standard_normal(shape) for name, shape in NAMES.items()}
    grads = [{name: scale * gen.standard_normal(shape) for name, shape in NAMES.items()}
             for scale in (0.3, 2.0, 0.05, 1.0)]
    return weights, grads



def case_id(case):
    name, kwargs = case
    return name + ":" + ",".join(f"{k}" for k in kwargs if k not in ("epsilon", "eps"))


@pytest.mark.parametrize("useGlobalState", [False, True], ids=["local", "global"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_preset_reproduces_its_framework(backend_name, case, useGlobalState):
    name, kwargs = case
    scale = kwargs.get("loss_scale_factor") or 1.0
    weights, grads = problem()
    got = run_named(RMSProp.like(name, **kwargs), weights, grads, useGlobalState, scale)
    for var in NAMES:
        want = REFERENCES[name](weights[var], [g[var] * scale for g in grads], var, **kwargs)
        np.testing.assert_allclose(got[var], want, **F64, err_msg=f"{name} {kwargs}: {var}")


def golden_kwargs() -> dict[str, set]:
    """Preset -> every argument that some golden case passes (tests/goldens/*.json)."""
    tested: dict[str, set] = {}
    for path in GOLDENS.glob("*.json"):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            if case["kind"] == "optimizer":
                keys = set(case["kwargs"]).union(*(set(g) - {"params"} for g in case.get("groups") or []))
                tested.setdefault(resolve_name("test", case["preset"]), set()).update(keys)
    return tested


def test_every_preset_is_tested_with_its_options():
    """Each argument of each preset is exercised here or in a golden case."""
    goldens = golden_kwargs()
    for name, preset in PRESETS.items():
        tested = goldens.get(name, set()).union(*(kwargs for n, kwargs in CASES if n == name))
        untested = {arg for arg, spec in preset.arguments.items() if spec.kind != "any"} - tested
        untested -= {"lr_scheduler"} if name in ("mxnet", "mxnet2") else set()  # test_mxnet_lr_scheduler_...
        assert not untested, f"{name}: arguments never tested: {sorted(untested)}"


def test_keras_golden_value(backend_name):
    """Keras' documented example: RMSprop(learning_rate=0.1), var = 10, loss = var**2 / 2 -> 9.683772."""
    var = Variable(np.array([10.0], dtype=np.float32), name="var")
    optimizer = RMSProp.like("keras3", learning_rate=0.1)
    optimizer.setupOn([var])
    var.grad[...] = var.data
    optimizer.update()
    np.testing.assert_allclose(host(var.data), [9.683772], rtol=1e-6)


def test_presets_differ_from_each_other(backend_name):
    """With the same numbers under each framework's names, the variants give different results."""
    weights, grads = problem()
    results = {
        "torch": run_named(RMSProp.like("torch", lr=0.05, alpha=0.9, eps=0.05, momentum=0.5), weights, grads, False),
        "keras": run_named(RMSProp.like("keras", learning_rate=0.05, rho=0.9, epsilon=0.05, momentum=0.5),
                            weights, grads, False),
        "tf1": run_named(RMSProp.like("tf1", learning_rate=0.05, decay=0.9, epsilon=0.05, momentum=0.5),
                          weights, grads, False),
        "keras2-legacy": run_named(RMSProp.like("keras2-legacy", learning_rate=0.05, rho=0.9, epsilon=0.05), weights,
                                    grads, False),
    }
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(results[a]["dense.weight"] - results[b]["dense.weight"]).max() > 1e-4, (a, b)


def test_mindspore_skips_decay_for_beta_and_gamma(backend_name):
    optimizer = RMSProp.like("mindspore", weight_decay=0.1)
    assert optimizer.decayFilter("layer.weight") and not optimizer.decayFilter("bn.gamma")
    assert not optimizer.decayFilter("bn.beta")


def test_sparse_update_mode_of_each_preset():
    modes = {name: RMSProp.like(name, **({"learning_rate": 0.1} if name in ("tf1", "optax", "paddle") else {})
                                ).sparseUpdate for name in PRESETS}
    expected = {name: "dense" for name in PRESETS}
    expected.update({"tf1": "lazy", "mindspore": "lazy"})
    assert {name: modes[name] for name in expected} == expected
    assert RMSProp.like("keras2-legacy", momentum=0.9).sparseUpdate == "lazy"


def test_sparse_duplicates_of_each_preset():
    """Keras 2 clips each occurrence of a repeated row; Keras 3 (TensorFlow) also squares each one, except
    that global_clipnorm densifies the rows; every other preset here sums repeated rows first."""
    kinds = {name: RMSProp.like(name, **({"learning_rate": 0.1} if name in ("tf1", "optax", "paddle") else {})
                                ).sparseDuplicates for name in PRESETS}
    assert kinds["keras2"] == kinds["keras2-legacy"] == "clip-per-occurrence"
    assert kinds["keras3"] == "square-per-occurrence"
    assert RMSProp.like("keras3", global_clipnorm=1.0).sparseDuplicates == "clip-per-occurrence"
    assert {kinds[name] for name in ("torch", "tf1", "optax", "puzzlelib", "mindspore", "mxnet", "mxnet2",
                                     "paddle")} == {"sum"}


def test_aliases_and_retired_names():
    assert RMSProp.like("keras", learning_rate=0.1, momentum=0.5).momentum == 0.5  # "keras" is Keras 3
    with pytest.raises(ValueError, match=r"RMSProp.like: 'tf.keras' was ambiguous.*'keras2-legacy'.*'keras2'"):
        RMSProp.like("tf.keras")


def test_preset_group_translates_and_checks():
    assert preset_group("torch", {"lr": 0.1, "weight_decay": 0.2}) == {"learnRate": 0.1, "weightDecay": 0.2}
    with pytest.raises(TypeError, match=r"preset_group\('torch'\): per-group 'momentum' not supported; .*"
                                        r"accepts: lr, weight_decay"):
        preset_group("torch", {"momentum": 0.9})
    with pytest.raises(ValueError, match=r"preset_group\('torch'\): lr must be in \[0, inf\), got -1"):
        preset_group("torch", {"lr": -1})
    assert preset_group("mindspore", {"lr": 0.1}) == {"learnRate": 0.1, "decayFilter": None}
    with pytest.raises(ValueError, match=r"preset_group\('mindspore'\): grad_centralization=True is not reproduced"):
        preset_group("mindspore", {"grad_centralization": True})
    assert preset_group("paddle", {"learning_rate": 0.5, "weight_decay": 0.1}) == {"learnRateScale": 0.5,
                                                                                  "weightDecay": 0.1}
    with pytest.raises(TypeError, match=r"preset_group\('optax'\): .*none \(this preset has no parameter groups\)"):
        preset_group("optax", {"learning_rate": 0.1})


class FactorScheduler:
    """MXNet's FactorScheduler as documented: base_lr * factor ** floor((num_update - 1) / step), num_update >= 1."""

    def __init__(self, step, factor, base_lr):
        self.step, self.factor, self.base_lr = step, factor, base_lr

    def __call__(self, num_update):
        return self.base_lr * self.factor ** ((num_update - 1) // self.step)


@pytest.mark.parametrize("stem", ["mxnet1", "mxnet2"])
@pytest.mark.parametrize("id, kwargs, base", [
    ("factor-scheduler", dict(learning_rate=0.05, epsilon=0.01), 0.05),
    ("factor-scheduler-begin-num-update", dict(learning_rate=0.05, begin_num_update=3, epsilon=0.01), 0.08),
    ("factor-scheduler-lr-none", dict(learning_rate=None, epsilon=0.01), 0.08),
])
def test_mxnet_lr_scheduler_reproduces_the_golden(backend_name, stem, id, kwargs, base):
    """The golden cases ran MXNet with FactorScheduler(step=2, factor=0.5): the preset given a scheduler with
    MXNet's update count (1-based, shifted by begin_num_update; base_lr replaced by learning_rate) matches."""
    case = next(c for c in json.loads((GOLDENS / f"{stem}.json").read_text(encoding="utf-8"))["cases"]
                if c["id"] == id)
    scheduler = FactorScheduler(2, 0.5, base)
    optimizer = RMSProp.like(case["preset"], lr_scheduler=scheduler, **kwargs)
    assert scheduler.base_lr == (base if kwargs["learning_rate"] is None else kwargs["learning_rate"])
    weights = {name: np.array(values, np.float32) for name, values in case["params"].items()}
    grads = [{name: np.array(g["dense"], np.float32) for name, g in step.items()} for step in case["steps"]]
    got = run_named(optimizer, weights, grads, useGlobalState=False)
    for name, want in case["expected"][-1].items():
        np.testing.assert_allclose(got[name], np.array(want, np.float32), rtol=1e-5, atol=1e-6)


class ClipGradByNorm:  # stand-ins named like Paddle's classes: the preset reads class name and attributes
    def __init__(self, clip_norm):
        self.clip_norm = clip_norm


class ClipGradByValue:
    def __init__(self, max, min=None):
        self.max, self.min = max, min


class L2Decay:  # Paddle 3.3.1 keeps the coefficient in _coeff
    def __init__(self, coeff):
        self._coeff = coeff


class L1Decay(L2Decay):
    pass


def test_paddle_reads_clip_and_decay_objects_like_their_dict_form():
    byObject = RMSProp.like("paddle", learning_rate=0.1, grad_clip=ClipGradByNorm(0.5), weight_decay=L2Decay(0.2))
    byDict = RMSProp.like("paddle", learning_rate=0.1, grad_clip={"type": "ClipGradByNorm", "clip_norm": 0.5},
                          weight_decay=0.2)
    assert (byObject.clipNorm, byObject.weightDecay) == (byDict.clipNorm, byDict.weightDecay) == (0.5, 0.2)
    assert RMSProp.like("paddle", learning_rate=0.1, grad_clip=ClipGradByValue(0.3, -0.3)).clipValue == 0.3
    assert RMSProp.like("paddle", learning_rate=0.1, grad_clip={"type": "ClipGradByGlobalNorm",
                                                                "clip_norm": 2.0}).globalClipNorm == 2.0


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(weight_decay=L1Decay(0.1)), r"weight_decay=L1Decay is not reproduced"),
    (dict(weight_decay=-0.1), r"weight_decay must be in \[0, inf\), got -0.1"),
    (dict(grad_clip=ClipGradByValue(0.3, -0.1)), r"grad_clip=ClipGradByValue\(max=0.3, min=-0.1\) is not symmetric"),
    (dict(grad_clip={"type": "ClipGradByNorm", "clip_norm": 0.0}), r"grad_clip clip_norm must be in \(0, inf\)"),
    (dict(grad_clip={"type": "ClipGradByL1", "clip_norm": 1.0}), r"grad_clip must be None, paddle.nn.ClipGradByNorm"),
    (dict(grad_clip=0.5), r"grad_clip must be None, paddle.nn.ClipGradByNorm"),
])
def test_paddle_bad_decay_and_clip(kwargs, pattern):
    with pytest.raises(ValueError, match=rf"RMSProp.like\('paddle'\): {pattern}"):
        RMSProp.like("paddle", learning_rate=0.1, **kwargs)


def test_group_learn_rate_scale_is_checked():
    variables = {"w": Variable(np.zeros(3, np.float32), name="w")}
    with pytest.raises(ValueError, match=r"learnRateScale must be in \[0, inf\), got -1.0"):
        RMSProp(0.1).setupOn([{"params": variables, "learnRateScale": -1.0}])


# --- bad input --------------------------------------------------------------------------------------
def test_unknown_argument_names_the_preset_and_lists_its_arguments():
    with pytest.raises(TypeError) as info:
        RMSProp.like("torch", learning_rate=0.1)
    message = str(info.value)
    assert "RMSProp.like('torch')" in message and "'learning_rate'" in message
    for arg in ("lr=0.01", "alpha=0.99", "eps=1e-08", "weight_decay=0.0", "momentum=0.0", "centered=False",
                "maximize=False"):
        assert arg in message
    with pytest.raises(TypeError, match=r"keras3.*'nesterov'.*accepts: learning_rate=0.001, rho=0.9"):
        RMSProp.like("keras", nesterov=True)
    with pytest.raises(TypeError, match=r"mxnet.*'rho'.*gamma1=0.9, gamma2=0.9"):
        RMSProp.like("mxnet", rho=0.9)
    with pytest.raises(TypeError, match=r"mxnet2.*lr_scheduler must be None or a callable num_update"):
        RMSProp.like("mxnet2", lr_scheduler=0.5)
    with pytest.raises(TypeError, match=r"mxnet.*param_idx2name must be None or a dict"):
        RMSProp.like("mxnet", param_idx2name=["fc_weight"])
    with pytest.raises(TypeError, match=r"keras2-legacy.*'weight_decay'"):
        RMSProp.like("keras2-legacy", weight_decay=0.1)


@pytest.mark.parametrize("name", ["tf1", "optax", "paddle"])
def test_missing_required_learning_rate(name):
    with pytest.raises(TypeError, match=rf"RMSProp.like\('{name}'\): missing the required argument 'learning_rate'"):
        RMSProp.like(name)


@pytest.mark.parametrize("name, kwargs, pattern", [
    ("torch", dict(lr=-0.1), r"lr must be in \[0, inf\), got -0.1"),
    ("torch", dict(alpha=1.5), r"alpha must be in \[0, 1\], got 1.5"),
    ("torch", dict(eps=-1e-8), r"eps must be in \[0, inf\), got -1e-08"),
    ("torch", dict(momentum=-0.5), r"momentum must be in \[0, inf\), got -0.5"),
    ("torch", dict(weight_decay=-1.0), r"weight_decay must be in \[0, inf\), got -1.0"),
    ("keras3", dict(rho=-0.1), r"rho must be in \[0, 1\], got -0.1"),
    ("keras3", dict(epsilon=-1e-7), r"epsilon must be in \[0, inf\), got -1e-07"),
    ("keras3", dict(clipnorm=1.0, clipvalue=0.5), r"only one of clipnorm, clipvalue and global_clipnorm"),
    ("keras3", dict(gradient_accumulation_steps=0), r"gradient_accumulation_steps must be an integer >= 1, got 0"),
    ("keras3", dict(use_ema=True, ema_momentum=1.5), r"ema_momentum must be in \[0, 1\], got 1.5"),
    ("keras2", dict(clipnorm=1.0, global_clipnorm=0.5), r"at most one of clipnorm and global_clipnorm"),
    ("keras2-legacy", dict(decay=-0.1), r"decay must be in \[0, inf\), got -0.1"),
    ("tf1", dict(learning_rate=0.1, decay=2.0), r"decay must be in \[0, 1\], got 2.0"),
    ("mindspore", dict(loss_scale=0.0), r"loss_scale must be in \(0, inf\), got 0.0"),
    ("mxnet", dict(gamma1=1.1), r"gamma1 must be in \[0, 1\], got 1.1"),
    ("mxnet", dict(gamma2=-0.1), r"gamma2 must be in \[0, 1\), got -0.1"),
    ("mxnet2", dict(clip_gradient=0.0, use_fused_step=False), r"clip_gradient=0.0 with use_fused_step=False"),
    ("mindspore", dict(decay=-0.1), r"decay must be in \[0, inf\), got -0.1"),
    ("mxnet", dict(begin_num_update=-1), r"begin_num_update must be an integer >= 0, got -1"),
    ("paddle", dict(learning_rate=0.1, rho=-0.5), r"rho must be in \[0, inf\), got -0.5"),
    ("optax", dict(learning_rate=0.1, momentum=-0.9), r"momentum must be in \[0, inf\), got -0.9"),
    ("puzzlelib", dict(factor=1.2), r"factor must be in \[0, 1\], got 1.2"),
    ("puzzlelib-graves", dict(epsilon=0), r"epsilon must be in \(0, inf\), got 0"),
])
def test_bad_values_name_the_framework_argument(name, kwargs, pattern):
    with pytest.raises(ValueError, match=rf"RMSProp.like\('{name}'\): {pattern}"):
        RMSProp.like(name, **kwargs)


def test_bad_types_and_unknown_preset():
    with pytest.raises(TypeError, match=r"RMSProp.like\('torch'\): centered must be True or False, got 1"):
        RMSProp.like("torch", centered=1)
    with pytest.raises(TypeError, match=r"RMSProp.like\('keras3'\): rho must be a real number, got '0.9'"):
        RMSProp.like("keras", rho="0.9")
    with pytest.raises(ValueError, match=r"name must be one of 'puzzlelib', .*'optax', 'keras', got 'adam'"):
        RMSProp.like("adam")


def test_bad_input_at_update_leaves_everything_untouched(backend_name):
    """A schedule that yields a negative rate, or a gradient of another backend's type: clear error, no change."""
    weights, grads = problem()
    variables = {name: Variable(w.copy(), name=name) for name, w in weights.items()}
    optimizer = RMSProp.like("torch", lr=lambda step: 0.1 if step == 0 else -0.1, momentum=0.9)
    optimizer.setupOn(variables)
    for name, g in grads[0].items():
        variables[name].grad[...] = g
    optimizer.update()
    before = {name: host(var.data).copy() for name, var in variables.items()}
    state = {name: {k: host(v).copy() for k, v in optimizer.stateOf(name).items()} for name in NAMES}
    with pytest.raises(ValueError, match=r"learning rate for step 1 must be finite and >= 0, got -0.1"):
        optimizer.update()
    with pytest.raises(TypeError, match=r"grad must be a \w+ array"):
        variables["bn.gamma"].grad = list(grads[1]["bn.gamma"])
    with pytest.raises(ValueError, match=r"grad of shape \(3,\) .* does not match the variable's shape \(7,\)"):
        variables["bn.gamma"].grad = np.zeros(3)
    with pytest.raises(ValueError, match=r"grad of shape \(7,\) and dtype float32 does not match .* float64"):
        variables["bn.gamma"].grad = np.zeros(7, np.float32)
    for name, var in variables.items():
        np.testing.assert_array_equal(host(var.data), before[name])
        for k, v in optimizer.stateOf(name).items():
            np.testing.assert_array_equal(host(v), state[name][k])
    assert optimizer.t == 1


def test_ignored_arguments_are_accepted_and_change_nothing(backend_name):
    """Each preset's ``ignored`` arguments exist, and setting them leaves the trajectory as it is."""
    values = {"foreach": True, "capturable": True, "differentiable": True, "name": "other", "jit_compile": False,
              "use_locking": True, "use_fused_step": False, "param_idx2name": {0: "dense.weight"}}
    weights, grads = problem()
    for name, preset in PRESETS.items():
        assert set(preset.ignored) <= set(preset.arguments), name
        if not preset.ignored:
            continue
        base = {"learning_rate": 0.05} if "learning_rate" in preset.arguments else {}
        plain = run_named(RMSProp.like(name, **base), weights, grads, False)
        given = run_named(RMSProp.like(name, **base, **{arg: values[arg] for arg in preset.ignored}), weights, grads,
                          False)
        for var in NAMES:
            np.testing.assert_array_equal(given[var], plain[var], err_msg=f"{name}: {var}")
