"""Golden trajectories of ``optax.rmsprop`` -> ``tests/goldens/optax.json``.

Run inside a venv that has optax (never imports puzzle_rms)::

    python -m venv /work/venvs/fw-optax && /work/venvs/fw-optax/bin/pip install optax==0.2.8
    /work/venvs/fw-optax/bin/python tools/goldens/gen_optax.py
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from golden_io import case, problem, write

SHAPES = {"w": (3, 4), "b": (4,)}
SCHEDULES = {
    "optax.exponential_decay": lambda a: optax.exponential_decay(**a),
    "optax.cosine_decay_schedule": lambda a: optax.cosine_decay_schedule(**a),
    "optax.piecewise_constant_schedule": lambda a: optax.piecewise_constant_schedule(
        a["init_value"], {int(b): s for b, s in a["boundaries_and_scales"]}),
}


def framework_value(value):
    if isinstance(value, dict) and "schedule" in value:
        return SCHEDULES[value["schedule"]]({k: v for k, v in value.items() if k != "schedule"})
    return value


def run(kwargs: dict, params: dict, steps: list) -> list:
    transform = optax.rmsprop(**{k: framework_value(v) for k, v in kwargs.items()})
    tree = {name: jnp.asarray(value) for name, value in params.items()}
    state = transform.init(tree)
    trajectory = []
    for step in steps:
        grads = {name: jnp.asarray(step[name]["dense"]) for name in params}
        updates, state = transform.update(grads, state, tree)
        tree = optax.apply_updates(tree, updates)
        trajectory.append({name: np.asarray(tree[name]) for name in params})
    return trajectory


def call_text(kwargs: dict) -> str:
    return "optax.rmsprop(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + \
        "); updates, state = tx.update(grads, state, params); params = optax.apply_updates(params, updates)"


CASES = [
    ("defaults", dict(learning_rate=0.01)),
    ("decay", dict(learning_rate=0.02, decay=0.5)),
    ("large-eps", dict(learning_rate=0.05, eps=0.5)),
    ("large-eps-outside", dict(learning_rate=0.05, eps=0.5, eps_in_sqrt=False)),
    ("eps-zero", dict(learning_rate=0.01, eps=0.0)),
    ("initial-scale", dict(learning_rate=0.05, eps=0.1, initial_scale=1.0)),
    ("initial-scale-outside", dict(learning_rate=0.05, eps=0.1, initial_scale=0.5, eps_in_sqrt=False)),
    ("centered", dict(learning_rate=0.02, eps=0.1, centered=True)),
    ("centered-outside", dict(learning_rate=0.02, eps=0.1, centered=True, eps_in_sqrt=False)),
    ("momentum", dict(learning_rate=0.02, eps=0.1, momentum=0.9)),
    ("momentum-zero", dict(learning_rate=0.02, eps=0.1, momentum=0.0)),
    ("momentum-one", dict(learning_rate=0.01, eps=0.1, momentum=1.0)),
    ("nesterov", dict(learning_rate=0.02, eps=0.1, momentum=0.9, nesterov=True)),
    ("nesterov-no-momentum", dict(learning_rate=0.02, eps=0.1, nesterov=True)),
    ("nesterov-momentum-zero", dict(learning_rate=0.02, eps=0.1, momentum=0.0, nesterov=True)),
    ("centered-momentum", dict(learning_rate=0.02, eps=0.1, centered=True, momentum=0.5)),
    ("centered-nesterov", dict(learning_rate=0.02, eps=0.1, centered=True, momentum=0.5, nesterov=True)),
    ("bias-correction", dict(learning_rate=0.02, eps=0.1, bias_correction=True)),
    ("bias-correction-centered", dict(learning_rate=0.02, eps=0.1, bias_correction=True, centered=True)),
    ("bias-correction-initial-scale", dict(learning_rate=0.02, eps=0.1, bias_correction=True, initial_scale=0.5,
                                            centered=True)),
    ("bias-correction-outside-momentum", dict(learning_rate=0.02, eps=0.1, bias_correction=True,
                                               eps_in_sqrt=False, momentum=0.7, nesterov=True)),
    ("all-options", dict(learning_rate=0.03, decay=0.8, eps=0.2, initial_scale=0.3, eps_in_sqrt=False,
                         centered=True, momentum=0.6, nesterov=True, bias_correction=True)),
    ("schedule-exponential", dict(learning_rate={"schedule": "optax.exponential_decay", "init_value": 0.05,
                                                 "transition_steps": 2, "decay_rate": 0.5}, eps=0.1)),
    ("schedule-exponential-staircase", dict(learning_rate={"schedule": "optax.exponential_decay", "init_value": 0.05,
                                                           "transition_steps": 2, "decay_rate": 0.5,
                                                           "staircase": True}, eps=0.1, momentum=0.5)),
    ("schedule-cosine", dict(learning_rate={"schedule": "optax.cosine_decay_schedule", "init_value": 0.05,
                                            "decay_steps": 4, "alpha": 0.1}, eps=0.1, momentum=0.9)),
    ("schedule-piecewise", dict(learning_rate={"schedule": "optax.piecewise_constant_schedule", "init_value": 0.05,
                                               "boundaries_and_scales": [[1, 0.5], [3, 0.1]]}, eps=0.1,
                                momentum=0.5, nesterov=True)),
]


def main() -> None:
    jax.config.update("jax_platforms", "cpu")
    cases = []
    for i, (cid, kwargs) in enumerate(CASES):
        params, steps = problem(400 + i, SHAPES, steps=5 if "schedule" in cid else 4)
        cases.append(case(cid, call_text(kwargs), "optax", kwargs, params, steps, run(kwargs, params, steps)))
    write("optax", "optax", optax.__version__, "tools/goldens/gen_optax.py", cases)


if __name__ == "__main__":
    main()
