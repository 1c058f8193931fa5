#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's optim/ tests.

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_optim_fixtures.py

writes ``tests/fixtures/optim.json``.  An optional argument overrides the
output path.  The output is deterministic (fixed torch.manual_seed, float64
everywhere, every float written with repr so it round-trips exactly).

File format::

    {"torch_version": "...",
     "problem": {"init": [T, T], "c": [T, T], "d": [T, T]},
     "optimizers": [
       {"name": "adam/amsgrad", "optimizer": "Adam", "options": {...},
        "skip": [[1], [], ...],          # per step: params whose grad is None
        "steps": [{"params": [T, T],     # after each step
                   "state": {"state.0.step": 1, "state.0.exp_avg": T, ...}},
                  ...]}, ...],
     "schedules": [
       {"name": "...", "lr": 0.1,
        "schedulers": [{"type": "StepLR", "step_size": 3, "gamma": 0.5}, ...],
        "metrics": [...],                # ReduceLROnPlateau only
        "lrs": [...]}, ...],             # lrs[0] after construction, then after each step
     "clip": {"grads": [T, T],
              "norm": [{"norm_type": 2.0 or "inf", "max_norm": 1.0,
                        "total_norm": ..., "grads": [T, T]}, ...],
              "value": [{"clip_value": 0.5, "grads": [T, T]}, ...]}}

T is {"shape": [...], "dtype": "float64", "data": [...]} (row-major).

The optimizer problem: two parameters p0 [3, 4] and p1 [5] and the loss
sum_i sum(tanh(p_i) * c_i) + sum(p_i ** 2 * d_i), built only from ops unroll
has, so the C++ test recomputes the same gradients and each step's gradient
depends on the trajectory so far.  "state" holds the optimizer's state dict
flattened the way unroll names it: "state.<i>.<key>" (None entries, like
plain SGD's momentum_buffer, are left out; "step" is written as an integer).
"""

import json
import math
import os
import sys

import torch

SEED = 20240612
STEPS = 6
SCHEDULE_STEPS = 30
DEFAULT_OUT = os.path.join("tests", "fixtures", "optim.json")


def encode(t):
    t = t.detach().contiguous()
    assert t.dtype == torch.float64, t.dtype
    data = [float(v) for v in t.reshape(-1).tolist()]
    assert all(math.isfinite(v) for v in data), "non-finite value"
    return {"shape": list(t.shape), "dtype": "float64", "data": data}


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------

NONE = [[]] * STEPS
# p1 has no gradient in the first two steps: its state starts later (its own step count).
SKIP1 = [[1], [1], [], [], [], []]
# p0 misses a step in the middle.
SKIP0 = [[], [], [0], [], [], []]

OPT_CASES = [
    ("sgd/plain", "SGD", {"lr": 0.1}, NONE),
    ("sgd/momentum", "SGD", {"lr": 0.05, "momentum": 0.9}, NONE),
    ("sgd/dampening", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}, NONE),
    ("sgd/nesterov", "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}, NONE),
    ("sgd/weight_decay", "SGD", {"lr": 0.1, "weight_decay": 0.2}, NONE),
    ("sgd/nesterov_weight_decay_skip", "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "nesterov": True},
     SKIP1),
    ("adam/default", "Adam", {}, NONE),
    ("adam/betas", "Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6}, NONE),
    ("adam/amsgrad", "Adam", {"lr": 0.05, "betas": (0.9, 0.5), "amsgrad": True}, NONE),
    ("adam/weight_decay", "Adam", {"lr": 0.05, "weight_decay": 0.1}, NONE),
    ("adam/skip", "Adam", {"lr": 0.05}, SKIP1),
    ("adamw/default", "AdamW", {}, NONE),
    ("adamw/lr", "AdamW", {"lr": 0.05, "weight_decay": 0.1}, SKIP0),
    ("adamw/amsgrad", "AdamW", {"lr": 0.05, "betas": (0.9, 0.5), "weight_decay": 0.1, "amsgrad": True}, NONE),
    ("rmsprop/default", "RMSprop", {}, NONE),
    ("rmsprop/momentum", "RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.9}, NONE),
    ("rmsprop/centered", "RMSprop", {"lr": 0.01, "centered": True}, NONE),
    ("rmsprop/weight_decay", "RMSprop", {"lr": 0.01, "weight_decay": 0.1}, SKIP1),
    ("rmsprop/all", "RMSprop",
     {"lr": 0.02, "alpha": 0.95, "eps": 1e-6, "weight_decay": 0.1, "momentum": 0.5, "centered": True}, SKIP0),
    ("adagrad/default", "Adagrad", {}, NONE),
    ("adagrad/lr_decay", "Adagrad", {"lr": 0.1, "lr_decay": 0.1}, NONE),
    ("adagrad/initial_accumulator_value", "Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-8},
     SKIP1),
    ("adagrad/weight_decay", "Adagrad", {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1,
                                         "initial_accumulator_value": 0.2}, SKIP0),
]


def make_problem():
    init = [torch.randn(3, 4), torch.randn(5)]
    c = [torch.randn(3, 4), torch.randn(5)]
    d = [torch.rand(3, 4) * 0.5 + 0.1, torch.rand(5) * 0.5 + 0.1]
    return init, c, d


def loss_of(params, c, d):
    total = 0
    for p, ci, di in zip(params, c, d):
        total = total + torch.sum(torch.tanh(p) * ci) + torch.sum(torch.pow(p, 2) * di)
    return total


def flat_state(opt):
    out = {}
    for i, st in sorted(opt.state_dict()["state"].items()):
        for key, v in st.items():
            if v is None:
                continue
            name = f"state.{i}.{key}"
            if key == "step":
                out[name] = int(v.item()) if torch.is_tensor(v) else int(v)
            else:
                out[name] = encode(v)
    return out


def run_opt_case(name, kind, options, skip, problem):
    init, c, d = problem
    params = [p.clone().requires_grad_(True) for p in init]
    opt = getattr(torch.optim, kind)(params, **options)
    steps = []
    for k in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss_of(params, c, d).backward()
        for i in skip[k]:
            params[i].grad = None
        opt.step()
        steps.append({"params": [encode(p) for p in params], "state": flat_state(opt)})
    if options.get("amsgrad"):
        # The case only tests something if the running max differs from the average somewhere.
        sd = opt.state_dict()["state"]
        assert any(not torch.equal(s["max_exp_avg_sq"], s["exp_avg_sq"]) for s in sd.values()), name
    opts = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    return {"name": name, "optimizer": kind, "options": opts, "skip": skip, "steps": steps}


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------

PLATEAU_METRICS = [1.0, 0.9, 0.85, 0.86, 0.86, 0.849, 0.87, 0.8, 0.8, 0.8, 0.8, 0.8, 0.79995, 0.8, 0.7,
                   0.75, 0.75, 0.75, 0.75, 0.6, 0.61, 0.62, 0.63, 0.64, 0.65, 0.5, 0.5, 0.5, 0.5, 0.5]
# Long plateaus for the default patience of 10.
LONG_PLATEAU_METRICS = [1.0, 0.9] + [0.9] * 12 + [0.5] * 16
RISING_METRICS = [0.1, 0.2, 0.25, 0.24, 0.26, 0.3, 0.3, 0.3, 0.35, 0.34, 0.33, 0.32, 0.4, 0.4, 0.4,
                  0.41, 0.5, 0.5, 0.5, 0.5, 0.5, 0.55, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6]

SCHEDULE_CASES = [
    ("step/gamma", 0.1, [{"type": "StepLR", "step_size": 3, "gamma": 0.5}], None),
    ("step/default_gamma", 0.3, [{"type": "StepLR", "step_size": 7}], None),
    ("exponential", 0.1, [{"type": "ExponentialLR", "gamma": 0.9}], None),
    ("cosine/eta_min", 0.1, [{"type": "CosineAnnealingLR", "T_max": 10, "eta_min": 0.001}], None),
    ("cosine/default", 0.05, [{"type": "CosineAnnealingLR", "T_max": 7}], None),
    ("linear/default", 0.1, [{"type": "LinearLR"}], None),
    ("linear/warmup", 0.1, [{"type": "LinearLR", "start_factor": 0.25, "end_factor": 1.0, "total_iters": 8}], None),
    ("linear/decay", 0.1, [{"type": "LinearLR", "start_factor": 1.0, "end_factor": 0.5, "total_iters": 10}], None),
    ("chained/linear_cosine", 0.1,
     [{"type": "LinearLR", "start_factor": 0.1, "total_iters": 4},
      {"type": "CosineAnnealingLR", "T_max": 12, "eta_min": 0.002}], None),
    ("plateau/default", 0.1, [{"type": "ReduceLROnPlateau"}], LONG_PLATEAU_METRICS),
    ("plateau/min_rel", 0.1,
     [{"type": "ReduceLROnPlateau", "mode": "min", "factor": 0.5, "patience": 2, "threshold": 0.01,
       "cooldown": 2, "min_lr": 0.02}], PLATEAU_METRICS),
    ("plateau/min_abs", 0.1,
     [{"type": "ReduceLROnPlateau", "mode": "min", "factor": 0.3, "patience": 1, "threshold": 0.02,
       "threshold_mode": "abs"}], PLATEAU_METRICS),
    ("plateau/max_rel", 1.0,
     [{"type": "ReduceLROnPlateau", "mode": "max", "factor": 0.5, "patience": 2, "cooldown": 1}], RISING_METRICS),
    ("plateau/max_abs_eps", 1e-3,
     [{"type": "ReduceLROnPlateau", "mode": "max", "factor": 0.5, "patience": 1, "threshold": 0.01,
       "threshold_mode": "abs", "eps": 2e-4}], RISING_METRICS),
]


def run_schedule_case(name, lr, specs, metrics):
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    scheds = []
    for spec in specs:
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        scheds.append(getattr(torch.optim.lr_scheduler, spec["type"])(opt, **kwargs))
    lrs = [opt.param_groups[0]["lr"]]
    for k in range(SCHEDULE_STEPS):
        opt.step()  # no gradients: only keeps PyTorch's "scheduler before optimizer" warning quiet
        for s in scheds:
            if metrics is None:
                s.step()
            else:
                s.step(metrics[k])
        lrs.append(opt.param_groups[0]["lr"])
        for s in scheds:
            last = s._last_lr[0]
            assert last == lrs[-1] or len(scheds) > 1, name
    assert len(set(lrs)) > 2, f"{name}: the schedule never moves"
    case = {"name": name, "lr": lr, "schedulers": specs, "lrs": [float(v) for v in lrs]}
    if metrics is not None:
        case["metrics"] = metrics
    return case


# ---------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------

def run_clip():
    grads = [torch.randn(3, 4) * 2, torch.randn(5)]
    norm_cases = []
    for norm_type in [1.0, 2.0, 3.5, math.inf]:
        for max_norm in [0.75, 1e3]:
            params = [torch.zeros_like(g, requires_grad=True) for g in grads]
            for p, g in zip(params, grads):
                p.grad = g.clone()
            total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            clipped = max_norm < total.item()
            assert clipped == (max_norm != 1e3), (norm_type, max_norm)
            norm_cases.append({"norm_type": "inf" if norm_type == math.inf else norm_type, "max_norm": max_norm,
                               "total_norm": float(total.item()), "grads": [encode(p.grad) for p in params]})
    value_cases = []
    for clip_value in [0.5, 2.0]:
        params = [torch.zeros_like(g, requires_grad=True) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_value_(params, clip_value)
        value_cases.append({"clip_value": clip_value, "grads": [encode(p.grad) for p in params]})
    return {"grads": [encode(g) for g in grads], "norm": norm_cases, "value": value_cases}


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(SEED)

    for cases in (OPT_CASES, SCHEDULE_CASES):
        names = [c[0] for c in cases]
        assert len(names) == len(set(names)), "duplicate case names"

    problem = make_problem()
    optimizers = [run_opt_case(*c, problem) for c in OPT_CASES]
    schedules = [run_schedule_case(*c) for c in SCHEDULE_CASES]
    clip = run_clip()

    dumps = lambda o: json.dumps(o, separators=(",", ":"), allow_nan=False)
    init, c, d = problem
    prob = {"init": [encode(t) for t in init], "c": [encode(t) for t in c], "d": [encode(t) for t in d]}
    text = (f'{{"torch_version":{dumps(torch.__version__)},\n"problem":{dumps(prob)},\n"optimizers":[\n'
            + ",\n".join(dumps(r) for r in optimizers) + '\n],\n"schedules":[\n'
            + ",\n".join(dumps(r) for r in schedules) + f'\n],\n"clip":{dumps(clip)}}}\n')
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)

    # Verify the file loads back unchanged.
    with open(out_path) as f:
        loaded = json.load(f)
    assert loaded["optimizers"] == json.loads(dumps(optimizers))
    assert loaded["schedules"] == json.loads(dumps(schedules))
    assert loaded["clip"] == json.loads(dumps(clip))

    print(f"wrote {len(optimizers)} optimizer, {len(schedules)} schedule and {len(clip['norm']) + len(clip['value'])} "
          f"clip cases to {out_path} ({os.path.getsize(out_path)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
