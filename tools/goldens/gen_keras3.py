"""Golden trajectories of Keras 3's ``keras.optimizers.RMSprop`` -> ``tests/goldens/keras3_<backend>.json``.

Run inside a venv that has Keras 3 with JAX and TensorFlow, once per backend (never imports puzzle_rms)::

    python -m venv /work/venvs/fw-keras3 && \\
        /work/venvs/fw-keras3/bin/pip install keras==3.15.1 jax tensorflow-cpu==2.21.0
    KERAS_BACKEND=jax /work/venvs/fw-keras3/bin/python tools/goldens/gen_keras3.py
    KERAS_BACKEND=tensorflow /work/venvs/fw-keras3/bin/python tools/goldens/gen_keras3.py

Row-sparse gradients (``tf.IndexedSlices``) exist on the TensorFlow backend only.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from golden_io import case, problem, write  # noqa: E402

BACKEND = keras.backend.backend()
SHAPES = {"w": (3, 4), "b": (4,)}
SPARSE_SHAPES = {"w": (3, 4), "emb": (5, 3)}
UNIQUE = [[0, 2, 4], [1, 3], [4, 0, 2], [2]]
REPEATED = [[1, 3, 1], [0, 0, 2, 0], [4, 2, 4], [3, 3]]
SCHEDULES = {"ExponentialDecay", "CosineDecay", "PiecewiseConstantDecay"}


def gradient(grad: dict, shape: tuple):
    if "dense" in grad:
        return keras.ops.convert_to_tensor(grad["dense"])
    import tensorflow as tf
    return tf.IndexedSlices(tf.constant(grad["values"]), tf.constant(grad["indices"], tf.int64),
                            tf.constant(shape, tf.int64))


def framework_value(value):
    if isinstance(value, dict) and value.get("schedule") in SCHEDULES:
        return getattr(keras.optimizers.schedules, value["schedule"])(
            **{k: v for k, v in value.items() if k != "schedule"})
    return value


def run(kwargs: dict, params: dict, steps: list) -> list:
    variables = {name: keras.Variable(value, name=name) for name, value in params.items()}
    optimizer = keras.optimizers.RMSprop(**{k: framework_value(v) for k, v in kwargs.items()})
    trajectory = []
    for step in steps:
        optimizer.apply([gradient(step[name], params[name].shape) for name in params], list(variables.values()))
        trajectory.append({name: keras.ops.convert_to_numpy(v.value).copy() for name, v in variables.items()})
    return trajectory


def call_text(kwargs: dict) -> str:
    return "keras.optimizers.RMSprop(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + \
        f").apply(grads, variables)  # KERAS_BACKEND={BACKEND}"


EXP = {"schedule": "ExponentialDecay", "initial_learning_rate": 0.05, "decay_steps": 2, "decay_rate": 0.5}
COS = {"schedule": "CosineDecay", "initial_learning_rate": 0.05, "decay_steps": 4, "alpha": 0.1}
PIECE = {"schedule": "PiecewiseConstantDecay", "boundaries": [1, 3], "values": [0.05, 0.02, 0.01]}
CASES = [  # (id, kwargs, sparse indices of "emb" or None, gradient scale)
    ("defaults", {}, None, 1.0),
    ("rho", dict(learning_rate=0.02, rho=0.5), None, 1.0),
    ("large-eps", dict(learning_rate=0.05, epsilon=0.5), None, 1.0),
    ("eps-zero", dict(learning_rate=0.01, epsilon=0.0), None, 1.0),
    ("momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), None, 1.0),
    ("centered", dict(learning_rate=0.02, centered=True, epsilon=0.1), None, 1.0),
    ("centered-momentum", dict(learning_rate=0.02, rho=0.8, momentum=0.5, centered=True, epsilon=0.1), None, 1.0),
    ("weight-decay", dict(learning_rate=0.05, weight_decay=0.2, epsilon=0.1), None, 1.0),
    ("clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), None, 1.0),
    ("global-clipnorm", dict(learning_rate=0.05, global_clipnorm=0.5, epsilon=0.1), None, 1.0),
    ("clipvalue", dict(learning_rate=0.05, clipvalue=0.2, momentum=0.5, epsilon=0.1), None, 1.0),
    ("loss-scale-factor", dict(learning_rate=0.05, loss_scale_factor=256.0, epsilon=0.1), None, 256.0),
    ("loss-scale-factor-clipnorm", dict(learning_rate=0.05, loss_scale_factor=128.0, clipnorm=0.5, epsilon=0.1),
     None, 128.0),
    ("schedule-exponential", dict(learning_rate=EXP, momentum=0.5, epsilon=0.1), None, 1.0),
    ("schedule-cosine", dict(learning_rate=COS, epsilon=0.1), None, 1.0),
    ("schedule-piecewise-weight-decay", dict(learning_rate=PIECE, weight_decay=0.1, momentum=0.9, epsilon=0.1),
     None, 1.0),
    ("accumulation-2", dict(learning_rate=0.05, gradient_accumulation_steps=2, epsilon=0.1), None, 1.0),
    ("accumulation-3-momentum-clipnorm", dict(learning_rate=0.05, gradient_accumulation_steps=3, momentum=0.5,
                                              clipnorm=0.5, epsilon=0.1), None, 1.0),
    ("accumulation-2-schedule-weight-decay", dict(learning_rate=EXP, gradient_accumulation_steps=2,
                                                  weight_decay=0.1, epsilon=0.1), None, 1.0),
    ("ema-no-overwrite", dict(learning_rate=0.05, use_ema=True, epsilon=0.1), None, 1.0),
    ("ema-overwrite-2", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2,
                             epsilon=0.1), None, 1.0),
    ("ema-overwrite-3-momentum", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
                                      momentum=0.5, epsilon=0.1), None, 1.0),
    ("ema-accumulation", dict(learning_rate=0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2,
                              gradient_accumulation_steps=2, epsilon=0.1), None, 1.0),
    ("name", dict(learning_rate=0.02, name="rms"), None, 1.0),
]
SPARSE_CASES = [
    ("sparse-unique", dict(learning_rate=0.02, epsilon=0.1), UNIQUE, 1.0),
    ("sparse-repeated", dict(learning_rate=0.02, epsilon=0.1), REPEATED, 1.0),
    ("sparse-repeated-momentum", dict(learning_rate=0.02, momentum=0.9, epsilon=0.1), REPEATED, 1.0),
    ("sparse-repeated-centered", dict(learning_rate=0.02, centered=True, momentum=0.5, epsilon=0.1), REPEATED, 1.0),
    ("sparse-unique-clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), UNIQUE, 1.0),
    ("sparse-repeated-clipnorm", dict(learning_rate=0.05, clipnorm=0.5, epsilon=0.1), REPEATED, 1.0),
    ("sparse-repeated-global-clipnorm", dict(learning_rate=0.05, global_clipnorm=0.5, epsilon=0.1), REPEATED, 1.0),
    ("sparse-repeated-clipvalue", dict(learning_rate=0.05, clipvalue=0.3, epsilon=0.1), REPEATED, 1.0),
    ("sparse-repeated-weight-decay", dict(learning_rate=0.05, weight_decay=0.2, epsilon=0.1), REPEATED, 1.0),
]


def main() -> None:
    keras.utils.set_random_seed(0)
    cases = []
    for i, (cid, kwargs, indices, scale) in enumerate(CASES + (SPARSE_CASES if BACKEND == "tensorflow" else [])):
        shapes = SPARSE_SHAPES if indices else SHAPES
        params, steps = problem(900 + i, shapes, steps=6 if "accumulation" in cid else (
            5 if "schedule" in cid or "ema" in cid else 4), sparse={"emb": indices} if indices else None, scale=scale)
        cases.append(case(cid, call_text(kwargs), "keras3", kwargs, params, steps, run(kwargs, params, steps)))
    write(f"keras3_{BACKEND}", "keras", keras.__version__, "tools/goldens/gen_keras3.py", cases)


if __name__ == "__main__":
    main()
