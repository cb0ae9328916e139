"""Golden trajectories of ``torch.optim.RMSprop`` -> ``tests/goldens/torch.json``.

Run inside a venv that has torch (never imports puzzle_rms)::

    python -m venv /work/venvs/fw-torch && /work/venvs/fw-torch/bin/pip install torch==2.13.0 numpy
    /work/venvs/fw-torch/bin/python tools/goldens/gen_torch.py
"""
from __future__ import annotations

import torch

from golden_io import case, problem, write

SHAPES = {"w": (3, 4), "b": (4,)}


def scheduler_of(spec: dict):
    """A function(optimizer) -> the ``torch.optim.lr_scheduler`` that the schedule spec names."""
    kind = spec["schedule"]
    args = {k: v for k, v in spec.items() if k not in ("schedule", "lr")}
    return lambda optimizer: getattr(torch.optim.lr_scheduler, kind.split(".")[1])(optimizer, **args)


def run(kwargs: dict, params: dict, steps: list, groups=None, schedule=None) -> list:
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    if groups is None:
        target = list(tensors.values())
    else:
        target = [{**{k: v for k, v in g.items() if k != "params"}, "params": [tensors[n] for n in g["params"]]}
                  for g in groups]
    optimizer = torch.optim.RMSprop(target, **kwargs)
    scheduler = schedule(optimizer) if schedule else None
    trajectory = []
    for step in steps:
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(step[name]["dense"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append({name: tensor.detach().numpy().copy() for name, tensor in tensors.items()})
    return trajectory


def call_text(kwargs: dict, groups=None) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    target = "params" if groups is None else repr(groups)
    return f"torch.optim.RMSprop({target}{', ' if args else ''}{args})"


CASES = [  # (id, kwargs)
    ("defaults", {}),
    ("lr-alpha", dict(lr=0.05, alpha=0.9)),
    ("large-eps", dict(lr=0.05, alpha=0.9, eps=0.5)),
    ("eps-zero", dict(lr=0.01, alpha=0.9, eps=0.0)),
    ("eps-zero-centered", dict(lr=0.01, alpha=0.9, eps=0.0, centered=True)),
    ("alpha-zero", dict(lr=0.01, alpha=0.0, eps=0.01)),
    ("alpha-one", dict(lr=0.01, alpha=1.0, eps=0.5)),
    ("momentum", dict(lr=0.02, alpha=0.9, eps=0.1, momentum=0.9)),
    ("momentum-half", dict(lr=0.02, momentum=0.5)),
    ("momentum-one", dict(lr=0.01, alpha=0.9, eps=0.1, momentum=1.0)),
    ("momentum-above-one", dict(lr=0.01, alpha=0.9, eps=0.1, momentum=1.2)),
    ("centered", dict(lr=0.02, alpha=0.9, eps=0.1, centered=True)),
    ("centered-momentum", dict(lr=0.02, alpha=0.9, eps=0.1, centered=True, momentum=0.8)),
    ("weight-decay", dict(lr=0.02, alpha=0.9, eps=0.1, weight_decay=0.3)),
    ("weight-decay-momentum", dict(lr=0.02, eps=0.01, weight_decay=0.1, momentum=0.9)),
    ("maximize", dict(lr=0.02, alpha=0.9, eps=0.1, maximize=True)),
    ("maximize-weight-decay-momentum", dict(lr=0.02, alpha=0.9, eps=0.1, maximize=True, weight_decay=0.2,
                                            momentum=0.5)),
    ("all-options", dict(lr=0.03, alpha=0.8, eps=0.2, centered=True, momentum=0.7, weight_decay=0.1,
                         maximize=True)),
    ("foreach-off", dict(lr=0.02, alpha=0.9, eps=0.1, momentum=0.5, centered=True, foreach=False)),
    ("foreach-on", dict(lr=0.02, alpha=0.9, eps=0.1, momentum=0.5, centered=True, foreach=True)),
    ("differentiable", dict(lr=0.02, alpha=0.9, eps=0.1, momentum=0.5, differentiable=False, capturable=False)),
    ("lr-zero", dict(lr=0.0, momentum=0.5)),
]

GROUP_CASES = [  # (id, kwargs, groups)
    ("groups-lr", dict(lr=0.01, alpha=0.9, eps=0.1), [{"params": ["w"], "lr": 0.05}, {"params": ["b"]}]),
    ("groups-weight-decay", dict(lr=0.02, alpha=0.9, eps=0.1, momentum=0.5),
     [{"params": ["w"], "weight_decay": 0.3}, {"params": ["b"], "lr": 0.04}]),
    ("groups-weight-decay-default", dict(lr=0.02, eps=0.1, weight_decay=0.2, centered=True),
     [{"params": ["b"], "weight_decay": 0.0}, {"params": ["w"]}]),
]

SCHEDULE_CASES = [  # (id, kwargs, schedule spec as written in the golden file)
    ("exponential-lr", dict(lr=0.05, alpha=0.9, eps=0.1, momentum=0.5),
     {"schedule": "torch.ExponentialLR", "gamma": 0.5}),
    ("step-lr", dict(lr=0.05, alpha=0.9, eps=0.1), {"schedule": "torch.StepLR", "step_size": 2, "gamma": 0.3}),
]


def main() -> None:
    torch.manual_seed(0)
    cases = []
    for i, (cid, kwargs) in enumerate(CASES):
        params, steps = problem(100 + i, SHAPES)
        cases.append(case(cid, call_text(kwargs), "torch", kwargs, params, steps, run(kwargs, params, steps)))
    for i, (cid, kwargs, groups) in enumerate(GROUP_CASES):
        params, steps = problem(200 + i, SHAPES)
        cases.append(case(cid, call_text(kwargs, groups), "torch", kwargs, params, steps,
                          run(kwargs, params, steps, groups), groups=groups))
    for i, (cid, kwargs, spec) in enumerate(SCHEDULE_CASES):
        params, steps = problem(300 + i, SHAPES, steps=5)
        args = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k != "schedule")
        scheduler = spec["schedule"].split(".")[1]
        call = f"{call_text(kwargs)}; lr_scheduler.{scheduler}(optimizer, {args}), stepped after each step"
        written = {**kwargs, "lr": {**spec, "lr": kwargs["lr"]}}
        cases.append(case(cid, call, "torch", written, params, steps,
                          run(kwargs, params, steps, schedule=scheduler_of(spec))))
    write("torch", "torch", torch.__version__, "tools/goldens/gen_torch.py", cases)


if __name__ == "__main__":
    main()
