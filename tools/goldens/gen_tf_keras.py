"""Golden trajectories of tf-keras' RMSprop, legacy and new -> ``tests/goldens/tf_keras.json``.

``tf_keras.optimizers.legacy.RMSprop`` is what ``tf.keras.optimizers.legacy.RMSprop`` (and, before TF 2.11,
``tf.keras.optimizers.RMSprop``) runs; ``tf_keras.optimizers.RMSprop`` is the Keras 2 optimizer that
``tf.keras.optimizers.RMSprop`` names since TF 2.11. Run inside a venv that has tf-keras (never imports
puzzle_rms)::

    python -m venv /work/venvs/fw-tensorflow && \\
        /work/venvs/fw-tensorflow/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    /work/venvs/fw-tensorflow/bin/python tools/goldens/gen_tf_keras.py
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from golden_io import case, problem, write  # noqa: E402

SHAPES = {"w": (3, 4), "b": (4,)}
SPARSE_SHAPES = {"w": (3, 4), "emb": (5, 3)}
UNIQUE = [[0, 2, 4], [1, 3], [4, 0, 2], [2]]
REPEATED = [[1, 3, 1], [0, 0, 2, 0], [4, 2, 4], [3, 3]]
SCHEDULES = {"ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay"}
CLASSES = {"keras2-legacy": ("tf_keras.optimizers.legacy.RMSprop", lambda: tf_keras.optimizers.legacy.RMSprop),
           "keras2": ("tf_keras.optimizers.RMSprop", lambda: tf_keras.optimizers.RMSprop)}


def gradient(grad: dict, shape: tuple):
    if "dense" in grad:
        return tf.constant(grad["dense"])
    return tf.IndexedSlices(tf.constant(grad["values"]), tf.constant(grad["indices"], tf.int64),
                            tf.constant(shape, tf.int64))


def framework_value(value):
    if isinstance(value, dict) and value.get("schedule") in SCHEDULES:
        return getattr(tf_keras.optimizers.schedules, value["schedule"])(
            **{k: v for k, v in value.items() if k != "schedule"})
    return value


def run(preset: str, kwargs: dict, params: dict, steps: list) -> list:
    variables = {name: tf.Variable(value, name=name) for name, value in params.items()}
    optimizer = CLASSES[preset][1]()(**{k: framework_value(v) for k, v in kwargs.items()})
    trajectory = []
    for step in steps:
        optimizer.apply_gradients([(gradient(step[name], params[name].shape), variables[name]) for name in params])
        trajectory.append({name: v.numpy().copy() for name, v in variables.items()})
    return trajectory


def call_text(preset: str, kwargs: dict) -> str:
    return CLASSES[preset][0] + "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + \
        ").apply_gradients(zip(grads, variables))"


EXP = {"schedule": "ExponentialDecay", "initial_learning_rate": 0.05, "decay_steps": 2, "decay_rate": 0.5}
COS = {"schedule": "CosineDecay", "initial_learning_rate": 0.05, "decay_steps": 4, "alpha": 0.1}
PIECE = {"schedule": "PiecewiseConstantDecay", "boundaries": [1, 3], "values": [0.05, 0.02, 0.01]}
COMMON = [  # (id, kwargs, sparse indices of "emb" or None): run on both optimizers
    ("defaults", {}, None),
    ("rho", dict(learning_rate=0.02, rho=0.5), None),
    ("large-eps", dict(learning_rate=0.05, epsilon=0.5), None),
    ("large-eps-momentum", dict(learning_rate=0.05, epsilon=0.5, momentum=0.5), None),
    ("momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), None),
    ("centered", dict(learning_rate=0.02, centered=True, epsilon=0.1), None),
    ("centered-momentum", dict(learning_rate=0.02, rho=0.8, momentum=0.5, centered=True, epsilon=0.1), None),
    ("clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), None),
    ("global-clipnorm", dict(learning_rate=0.05, global_clipnorm=0.5, epsilon=0.1), None),
    ("clipvalue", dict(learning_rate=0.05, clipvalue=0.2, momentum=0.5, epsilon=0.1), None),
    ("clipvalue-clipnorm", dict(learning_rate=0.05, clipvalue=0.3, clipnorm=0.8, epsilon=0.1), None),
    ("clipvalue-global-clipnorm", dict(learning_rate=0.05, clipvalue=0.3, global_clipnorm=0.8, epsilon=0.1), None),
    ("schedule-exponential", dict(learning_rate=EXP, momentum=0.5, epsilon=0.1), None),
    ("schedule-cosine", dict(learning_rate=COS, epsilon=0.1), None),
    ("schedule-piecewise", dict(learning_rate=PIECE, momentum=0.9, epsilon=0.1, centered=True), None),
    ("sparse-unique", dict(learning_rate=0.02, epsilon=0.1), UNIQUE),
    ("sparse-repeated", dict(learning_rate=0.02, epsilon=0.1), REPEATED),
    ("sparse-repeated-momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), REPEATED),
    ("sparse-repeated-centered", dict(learning_rate=0.02, centered=True, epsilon=0.1), REPEATED),
    ("sparse-repeated-centered-momentum", dict(learning_rate=0.02, centered=True, momentum=0.5, epsilon=0.1),
     REPEATED),
    ("sparse-unique-clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), UNIQUE),
    ("sparse-repeated-clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), REPEATED),
    ("sparse-repeated-global-clipnorm", dict(learning_rate=0.05, global_clipnorm=0.5, epsilon=0.1), REPEATED),
    ("sparse-repeated-clipvalue", dict(learning_rate=0.05, clipvalue=0.3, epsilon=0.1), REPEATED),
    ("sparse-unique-clipvalue-momentum", dict(learning_rate=0.05, clipvalue=0.3, momentum=0.5, epsilon=0.1), UNIQUE),
    ("sparse-repeated-clipvalue-momentum", dict(learning_rate=0.05, clipvalue=0.3, momentum=0.5, epsilon=0.1),
     REPEATED),
]
LEGACY = [
    ("decay", dict(learning_rate=0.05, decay=0.5, epsilon=0.1), None),
    ("decay-momentum-schedule", dict(learning_rate=EXP, decay=0.3, momentum=0.5, epsilon=0.1), None),
    ("eps-zero", dict(learning_rate=0.01, epsilon=0.0), None),
    ("name", dict(learning_rate=0.02, name="rms"), None),
]
NEW = [
    ("weight-decay", dict(learning_rate=0.05, weight_decay=0.2, epsilon=0.1), None),
    ("weight-decay-momentum-schedule", dict(learning_rate=EXP, weight_decay=0.1, momentum=0.5, epsilon=0.1), None),
    ("ema-no-overwrite", dict(learning_rate=0.05, use_ema=True, epsilon=0.1), None),
    ("ema-overwrite-2", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2,
                             epsilon=0.1), None),
    ("ema-overwrite-3-momentum", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
                                      momentum=0.5, epsilon=0.1), None),
    ("jit-off", dict(learning_rate=0.05, momentum=0.5, jit_compile=False, name="rms"), None),
    ("sparse-repeated-weight-decay", dict(learning_rate=0.05, weight_decay=0.2, epsilon=0.1), REPEATED),
]


def main() -> None:
    tf.random.set_seed(0)
    cases = []
    seed = 800
    for preset, extra in (("keras2-legacy", LEGACY), ("keras2", NEW)):
        for cid, kwargs, indices in COMMON + extra:
            seed += 1
            shapes = SPARSE_SHAPES if indices else SHAPES
            params, steps = problem(seed, shapes, steps=5 if "schedule" in cid or "ema" in cid else 4,
                                    sparse={"emb": indices} if indices else None)
            cases.append(case(f"{preset}-{cid}", call_text(preset, kwargs), preset, kwargs, params, steps,
                              run(preset, kwargs, params, steps)))
    write("tf_keras", "tf-keras", tf_keras.__version__, "tools/goldens/gen_tf_keras.py", cases)


if __name__ == "__main__":
    main()
