"""Golden trajectories of ``tf.compat.v1.train.RMSPropOptimizer`` and TF's raw RMSProp ops
-> ``tests/goldens/tensorflow.json``.

Run inside a venv that has TensorFlow (never imports puzzle_rms)::

    python -m venv /work/venvs/fw-tensorflow && \\
        /work/venvs/fw-tensorflow/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    /work/venvs/fw-tensorflow/bin/python tools/goldens/gen_tensorflow.py

The optimizer runs eagerly on resource variables (row-sparse gradients as ``tf.IndexedSlices``); the
raw ops ``ApplyRMSProp``, ``ApplyCenteredRMSProp``, ``SparseApplyRMSProp`` and
``SparseApplyCenteredRMSProp`` take reference variables, so they run in a v1 graph and session.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from golden_io import case, op_case, problem, write  # noqa: E402

SHAPES = {"w": (3, 4), "b": (4,)}
SPARSE_SHAPES = {"w": (3, 4), "emb": (5, 3)}
UNIQUE = [[0, 2, 4], [1, 3], [4, 0, 2], [2]]
REPEATED = [[1, 3, 1], [0, 0, 2, 0], [4, 2, 4], [3, 3]]


def gradient(grad: dict, shape: tuple):
    if "dense" in grad:
        return tf.constant(grad["dense"])
    return tf.IndexedSlices(tf.constant(grad["values"]), tf.constant(grad["indices"], tf.int64),
                            tf.constant(shape, tf.int64))


def framework_lr(value, globalStep):
    if isinstance(value, dict):  # tf.compat.v1.train.exponential_decay: a callable in eager mode
        args = {k: v for k, v in value.items() if k != "schedule"}
        return tf.compat.v1.train.exponential_decay(global_step=globalStep, **args)
    return value


def run_optimizer(kwargs: dict, params: dict, steps: list) -> list:
    variables = {name: tf.Variable(value) for name, value in params.items()}
    globalStep = tf.Variable(0, dtype=tf.int64, trainable=False)
    optimizer = tf.compat.v1.train.RMSPropOptimizer(
        **{k: framework_lr(v, globalStep) if k == "learning_rate" else v for k, v in kwargs.items()})
    trajectory = []
    for step in steps:
        pairs = [(gradient(step[name], params[name].shape), variables[name]) for name in params]
        optimizer.apply_gradients(pairs, global_step=globalStep)
        trajectory.append({name: v.numpy().copy() for name, v in variables.items()})
    return trajectory


OP_STATE = {"ApplyRMSProp": ("ms", "mom"), "ApplyCenteredRMSProp": ("mg", "ms", "mom"),
            "SparseApplyRMSProp": ("ms", "mom"), "SparseApplyCenteredRMSProp": ("mg", "ms", "mom")}
OP_NAMES = {"ApplyRMSProp": "applyRMSProp", "ApplyCenteredRMSProp": "applyCenteredRMSProp",
            "SparseApplyRMSProp": "sparseApplyRMSProp", "SparseApplyCenteredRMSProp": "sparseApplyCenteredRMSProp"}


def run_op(op: str, scalars: dict, var: np.ndarray, state: dict, steps: list) -> list:
    """The raw op in a v1 graph on reference variables, once per step; per-step scalars are lists."""
    trajectory = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        v = tf.compat.v1.Variable(var, use_resource=False)
        s = {name: tf.compat.v1.Variable(value, use_resource=False) for name, value in state.items()}
        session.run(tf.compat.v1.global_variables_initializer())
        for t, step in enumerate(steps):
            values = {k: np.float32(x[t] if isinstance(x, list) else x) for k, x in scalars.items()}
            args = dict(var=v, **s, lr=values["learningRate"], rho=values["decay"], momentum=values["momentum"],
                        epsilon=values["epsilon"])
            grad = step["var"]
            if "dense" in grad:
                args["grad"] = grad["dense"]
            else:
                args["grad"], args["indices"] = grad["values"], np.array(grad["indices"], np.int64)
            session.run(getattr(tf.raw_ops, op)(**args))
            trajectory.append({"var": session.run(v), "state": {k: session.run(x) for k, x in s.items()}})
    return trajectory


def call_text(kwargs: dict) -> str:
    return "tf.compat.v1.train.RMSPropOptimizer(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + \
        ").apply_gradients(zip(grads, variables), global_step=global_step)"


OPTIMIZER_CASES = [  # (id, kwargs, sparse indices of "emb" or None)
    ("lr-only", dict(learning_rate=0.01), None),
    ("decay", dict(learning_rate=0.02, decay=0.5), None),
    ("large-eps", dict(learning_rate=0.05, epsilon=0.5), None),
    ("eps-zero", dict(learning_rate=0.01, epsilon=0.0), None),
    ("momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), None),
    ("centered", dict(learning_rate=0.02, centered=True, epsilon=0.1), None),
    ("centered-momentum", dict(learning_rate=0.02, decay=0.8, momentum=0.5, centered=True, epsilon=0.1), None),
    ("use-locking", dict(learning_rate=0.02, momentum=0.5, use_locking=True, name="rms"), None),
    ("schedule-exponential", dict(learning_rate={"schedule": "tf1.exponential_decay", "learning_rate": 0.05,
                                                 "decay_steps": 2, "decay_rate": 0.5}, epsilon=0.1,
                                  momentum=0.5), None),
    ("schedule-exponential-staircase", dict(learning_rate={"schedule": "tf1.exponential_decay",
                                                           "learning_rate": 0.05, "decay_steps": 2,
                                                           "decay_rate": 0.5, "staircase": True}, epsilon=0.1),
     None),
    ("sparse-unique", dict(learning_rate=0.02, epsilon=0.1), UNIQUE),
    ("sparse-repeated", dict(learning_rate=0.02, epsilon=0.1), REPEATED),
    ("sparse-repeated-momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), REPEATED),
    ("sparse-repeated-centered", dict(learning_rate=0.02, momentum=0.5, centered=True, epsilon=0.1), REPEATED),
    ("sparse-unique-centered", dict(learning_rate=0.02, centered=True, epsilon=0.1), UNIQUE),
]

OP_CASES = [  # (id, op, scalars, sparse indices or None, initial state override)
    ("op-apply", "ApplyRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5, epsilon=0.1), None, None),
    ("op-apply-per-step-lr", "ApplyRMSProp", dict(learningRate=[0.05, 0.01, 0.08, 0.03], decay=0.8, momentum=0.9,
                                                  epsilon=1e-3), None, None),
    ("op-apply-no-momentum", "ApplyRMSProp", dict(learningRate=0.02, decay=0.5, momentum=0.0, epsilon=0.5),
     None, None),
    ("op-apply-centered", "ApplyCenteredRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5, epsilon=0.1),
     None, None),
    ("op-apply-centered-no-momentum", "ApplyCenteredRMSProp", dict(learningRate=0.03, decay=0.7, momentum=0.0,
                                                                   epsilon=1e-3), None, None),
    ("op-apply-centered-negative-variance", "ApplyCenteredRMSProp",
     dict(learningRate=0.02, decay=0.9, momentum=0.5, epsilon=1e-6), None, "inconsistent"),
    ("op-sparse-unique", "SparseApplyRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5, epsilon=0.1),
     UNIQUE, None),
    ("op-sparse-repeated", "SparseApplyRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5, epsilon=0.1),
     REPEATED, None),
    ("op-sparse-repeated-no-momentum", "SparseApplyRMSProp", dict(learningRate=0.05, decay=0.5, momentum=0.0,
                                                                  epsilon=0.01), REPEATED, None),
    ("op-sparse-centered-unique", "SparseApplyCenteredRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5,
                                                                     epsilon=0.1), UNIQUE, None),
    ("op-sparse-centered-repeated", "SparseApplyCenteredRMSProp", dict(learningRate=0.02, decay=0.9, momentum=0.5,
                                                                       epsilon=0.1), REPEATED, None),
]


def initial_state(op: str, shape: tuple, gen: np.random.Generator, kind) -> dict:
    mg = 0.3 * gen.standard_normal(shape)
    state = {"ms": (mg * mg + gen.uniform(0.0, 1.0, shape)).astype(np.float32),  # ms >= mg**2: a real variance
             "mom": (0.1 * gen.standard_normal(shape)).astype(np.float32), "mg": mg.astype(np.float32)}
    if kind == "inconsistent":  # mg**2 above ms: the centered variance is negative from the start in some elements
        state["ms"] = (0.01 * gen.uniform(0.0, 1.0, shape)).astype(np.float32)
        state["mg"] = gen.standard_normal(shape).astype(np.float32)
    return {name: state[name] for name in OP_STATE[op]}


def main() -> None:
    tf.random.set_seed(0)
    cases = []
    for i, (cid, kwargs, indices) in enumerate(OPTIMIZER_CASES):
        shapes = SPARSE_SHAPES if indices else SHAPES
        params, steps = problem(500 + i, shapes, steps=5 if "schedule" in cid else 4,
                                sparse={"emb": indices} if indices else None)
        cases.append(case(cid, call_text(kwargs), "tf1", kwargs, params, steps, run_optimizer(kwargs, params, steps)))
    for i, (cid, op, scalars, indices, kind) in enumerate(OP_CASES):
        shape = (5, 3)
        params, steps = problem(600 + i, {"var": shape}, sparse={"var": indices} if indices else None)
        state = initial_state(op, shape, np.random.default_rng(700 + i), kind)
        expected = run_op(op, scalars, params["var"], state, steps)
        order = ", ".join(("var",) + OP_STATE[op]) + ", lr, rho, momentum, epsilon, grad" + \
            (", indices" if indices else "")
        call = f"tf.raw_ops.{op}({order}) on tf.compat.v1 reference variables"
        options = {"duplicates": "apply"} if indices and any(len(set(i)) < len(i) for i in indices) else {}
        nan = any(np.isnan(after["var"]).any() for after in expected)
        cases.append(op_case(cid, call, OP_NAMES[op], scalars, params, state, steps, expected,
                             options=options, deliberate="centered-clamp" if nan else None,
                             note="TF applies the update once per occurrence of an index, in order"
                             if options else ""))
    write("tensorflow", "tensorflow-cpu", tf.__version__, "tools/goldens/gen_tensorflow.py", cases)


if __name__ == "__main__":
    main()
