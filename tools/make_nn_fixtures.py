#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's nn layers.

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_nn_fixtures.py

writes ``tests/fixtures/nn.json``.  An optional argument overrides the output
path.  The output is deterministic (fixed torch.manual_seed, one thread,
float64 everywhere, every float written with repr so it round-trips exactly).

The tests load each case's state dict into the matching unroll module, run the
inputs through it (in float64, and in float32 with looser tolerances) and
compare outputs, final states and gradients with PyTorch's.

File format::

    {"torch_version": "...", "cases": [
      {"name": "lstm/l2_bidir_bf", "module": "LSTM",
       "config": {"input_size": 3, "hidden_size": 4, "num_layers": 2,
                  "bias": true, "batch_first": true, "bidirectional": true,
                  "nonlinearity": "tanh", "dropout": 0.0},
       "state_dict_order": ["weight_ih_l0", ...],
       "state_dict": {"weight_ih_l0": T, ...},
       "inputs": {"x": T, "h0": T, "c0": T, "lengths": [5, 2, 4]},
       "outputs": {"output": T, "h_n": T, "c_n": T},
       "grad_outputs": {"output": T, "h_n": T, "c_n": T},
       "grads": {"x": T, "h0": T, "c0": T, "weight_ih_l0": T, ...}},
      ...]}

A tensor T is {"shape": [...], "dtype": "float64" | "int64", "data": [...]},
flattened row-major.  "state_dict" holds every entry of module.state_dict()
(JSON objects are unordered, so "state_dict_order" lists the names in
PyTorch's order).  grads = d L / d (x, each given initial state, each
parameter by state-dict name) with

    L = sum over k in outputs of sum(outputs[k] * grad_outputs[k])

and random normal grad_outputs.  Parameters keep PyTorch's default
initialisation (drawn in float32, then .double()), so the fixture also
documents it -- except "layernorm/*_set_affine", whose weight and bias are
set to random values because the defaults (ones, zeros) cannot reveal a
missing or misapplied affine step.

Modules and their fields:

* "RNN", "LSTM", "GRU": config as above ("nonlinearity" is "tanh" or "relu"
  for RNN and always "tanh" for LSTM/GRU; dropout is always 0).  x is [T, B, I]
  ([B, T, I] with batch_first); "h0" ("c0" for LSTM) is
  [layers * directions, B, H], absent means zeros and then has no grad.
  "lengths" (absent = every sequence has length T) gives variable-length
  batches: the reference runs through pack_padded_sequence(...,
  enforce_sorted=False) and pad_packed_sequence(..., total_length=T), so
  outputs past a sequence's end are zero, the forward direction's h_n/c_n are
  taken at each sequence's own last step, the reverse direction starts at that
  step (so its h_n/c_n are at step 0), and the grad of x at padded positions
  is zero (grad_outputs there are arbitrary).
  Outputs: "output", "h_n" and, for LSTM, "c_n", exactly as PyTorch returns
  them.
* "RNNCell", "LSTMCell", "GRUCell": config {input_size, hidden_size, bias,
  nonlinearity}; inputs x [B, I], h0 [B, H] (and c0 for LSTMCell; both
  absent = zeros); outputs {"h"} ({"h", "c"} for LSTMCell).
* "Linear": config {in_features, out_features, bias}; inputs {"x"};
  outputs {"y"}.
* "Embedding": config {num_embeddings, embedding_dim, padding_idx (int or
  null)}; inputs {"indices": int64}; outputs {"y"}; grads only "weight" (the
  padding row's grad is zero).
* "LayerNorm": config {normalized_shape: [...], eps, elementwise_affine};
  inputs {"x"}; outputs {"y"}; grads x (and weight, bias when affine).

Every case's gradients are also checked against float64 central differences
of L (every element of x, the initial states and the parameters), so an input
sitting on a relu kink makes the script fail instead of writing a bad fixture.
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

SEED = 20240612
DEFAULT_OUT = os.path.join("tests", "fixtures", "nn.json")
I, H = 3, 4  # input and hidden sizes of every recurrent case

# ---------------------------------------------------------------------------
# Case table.  Each entry: (name, module, config, input spec).  Modules and
# inputs are created in table order from the single seeded RNG stream.
# ---------------------------------------------------------------------------


def seq(num_layers=1, bias=True, batch_first=False, bidirectional=False,
        nonlinearity="tanh"):
    return {"input_size": I, "hidden_size": H, "num_layers": num_layers, "bias": bias,
            "batch_first": batch_first, "bidirectional": bidirectional,
            "nonlinearity": nonlinearity, "dropout": 0.0}


def seq_cases(prefix, module, nonlinearity="tanh"):
    """The recurrent-layer matrix for one of RNN-tanh, RNN-relu, LSTM, GRU."""
    def c(name, T, B, h0=True, lengths=None, **cfg):
        config = seq(nonlinearity=nonlinearity, **cfg)
        return (f"{prefix}/{name}", module, config,
                {"T": T, "B": B, "h0": h0, "lengths": lengths})
    return [
        c("l1", 5, 3),
        c("l1_noh0", 5, 3, h0=False),
        c("l2", 5, 3, num_layers=2),
        c("l3", 5, 3, num_layers=3),
        c("l3_noh0", 5, 3, h0=False, num_layers=3),
        c("l1_bidir", 5, 3, bidirectional=True),
        c("l2_bidir", 5, 3, num_layers=2, bidirectional=True),
        c("l1_bf", 5, 3, batch_first=True),
        c("l2_bidir_bf", 5, 3, num_layers=2, bidirectional=True, batch_first=True),
        c("l1_nobias", 5, 3, bias=False),
        c("l2_bidir_nobias", 5, 3, num_layers=2, bidirectional=True, bias=False),
        c("t1", 1, 3),
        c("t1_l2_bidir", 1, 3, num_layers=2, bidirectional=True),
        c("t50", 50, 2),
        c("t50_l2_bidir_noh0", 50, 2, h0=False, num_layers=2, bidirectional=True),
        c("len", 5, 3, lengths=[5, 2, 4]),
        c("len_noh0", 5, 3, h0=False, lengths=[5, 2, 4]),
        c("len_bidir", 5, 3, lengths=[5, 2, 4], bidirectional=True),
        c("len_l2_bidir_bf", 5, 3, lengths=[5, 2, 4], num_layers=2, bidirectional=True,
          batch_first=True),
        c("len_l2_bf", 5, 3, lengths=[2, 5, 1], num_layers=2, batch_first=True),
        # No sequence reaches T: the last time steps are padding for everyone.
        c("len_short_bidir", 5, 3, lengths=[3, 1, 2], bidirectional=True),
    ]


def cell(prefix, module, name, B=3, h0=True, bias=True, nonlinearity="tanh"):
    config = {"input_size": I, "hidden_size": H, "bias": bias, "nonlinearity": nonlinearity}
    return (f"{prefix}/{name}", module, config, {"B": B, "h0": h0})


def cell_cases(prefix, module, nonlinearity="tanh"):
    return [
        cell(prefix, module, "b3", nonlinearity=nonlinearity),
        cell(prefix, module, "b3_noh0", h0=False, nonlinearity=nonlinearity),
        cell(prefix, module, "b3_nobias", bias=False, nonlinearity=nonlinearity),
        cell(prefix, module, "b1", B=1, nonlinearity=nonlinearity),
    ]


CASES = (
    seq_cases("rnn_tanh", "RNN", "tanh")
    + seq_cases("rnn_relu", "RNN", "relu")
    + seq_cases("lstm", "LSTM")
    + seq_cases("gru", "GRU")
    + cell_cases("rnncell_tanh", "RNNCell", "tanh")
    + cell_cases("rnncell_relu", "RNNCell", "relu")
    + cell_cases("lstmcell", "LSTMCell")
    + cell_cases("grucell", "GRUCell")
    + [
        ("linear/x2d", "Linear", {"in_features": 3, "out_features": 5, "bias": True},
         {"x": [4, 3]}),
        ("linear/x3d", "Linear", {"in_features": 3, "out_features": 5, "bias": True},
         {"x": [2, 3, 3]}),
        ("linear/x2d_nobias", "Linear", {"in_features": 3, "out_features": 5, "bias": False},
         {"x": [4, 3]}),
        ("linear/x3d_nobias", "Linear", {"in_features": 4, "out_features": 2, "bias": False},
         {"x": [2, 3, 4]}),
        ("embedding/basic", "Embedding",
         {"num_embeddings": 7, "embedding_dim": 3, "padding_idx": None},
         {"indices": [[0, 3, 6, 3, 1], [5, 3, 0, 0, 2]]}),
        ("embedding/padding", "Embedding",
         {"num_embeddings": 7, "embedding_dim": 3, "padding_idx": 2},
         {"indices": [[2, 4, 1, 4, 2], [6, 2, 0, 4, 5]]}),
        ("layernorm/last", "LayerNorm",
         {"normalized_shape": [5], "eps": 1e-5, "elementwise_affine": True}, {"x": [2, 3, 5]}),
        ("layernorm/last2", "LayerNorm",
         {"normalized_shape": [3, 5], "eps": 1e-5, "elementwise_affine": True}, {"x": [2, 3, 5]}),
        ("layernorm/last_set_affine", "LayerNorm",
         {"normalized_shape": [5], "eps": 1e-5, "elementwise_affine": True},
         {"x": [2, 3, 5], "set_affine": True}),
        ("layernorm/last2_set_affine_eps", "LayerNorm",
         {"normalized_shape": [3, 5], "eps": 1e-3, "elementwise_affine": True},
         {"x": [2, 3, 5], "set_affine": True}),
        ("layernorm/last_noaffine", "LayerNorm",
         {"normalized_shape": [5], "eps": 1e-5, "elementwise_affine": False}, {"x": [2, 3, 5]}),
        ("layernorm/last2_noaffine", "LayerNorm",
         {"normalized_shape": [3, 5], "eps": 1e-5, "elementwise_affine": False},
         {"x": [2, 3, 5]}),
    ]
)

# ---------------------------------------------------------------------------
# Building modules and running them.
# ---------------------------------------------------------------------------


def build(module, config):
    """The torch module for a case, default-initialised, converted to float64."""
    if module in ("RNN", "LSTM", "GRU"):
        kw = {k: config[k] for k in ("input_size", "hidden_size", "num_layers", "bias",
                                     "batch_first", "bidirectional", "dropout")}
        if module == "RNN":
            kw["nonlinearity"] = config["nonlinearity"]
        m = getattr(nn, module)(**kw)
    elif module in ("RNNCell", "LSTMCell", "GRUCell"):
        kw = {k: config[k] for k in ("input_size", "hidden_size", "bias")}
        if module == "RNNCell":
            kw["nonlinearity"] = config["nonlinearity"]
        m = getattr(nn, module)(**kw)
    elif module == "Linear":
        m = nn.Linear(**config)
    elif module == "Embedding":
        m = nn.Embedding(**config)
    elif module == "LayerNorm":
        m = nn.LayerNorm(**config)
    else:
        raise ValueError(f"unknown module {module}")
    return m.double()


def make_inputs(module, config, spec):
    """Differentiable inputs (dict name -> float64 tensor) plus fixed ones."""
    f64 = torch.float64
    if module in ("RNN", "LSTM", "GRU"):
        T, B = spec["T"], spec["B"]
        shape = [B, T, I] if config["batch_first"] else [T, B, I]
        diff = {"x": torch.randn(shape, dtype=f64)}
        if spec["h0"]:
            layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
            diff["h0"] = torch.randn([layers, B, H], dtype=f64)
            if module == "LSTM":
                diff["c0"] = torch.randn([layers, B, H], dtype=f64)
        fixed = {}
        if spec["lengths"] is not None:
            assert len(spec["lengths"]) == B and max(spec["lengths"]) <= T
            fixed["lengths"] = list(spec["lengths"])
        return diff, fixed
    if module in ("RNNCell", "LSTMCell", "GRUCell"):
        B = spec["B"]
        diff = {"x": torch.randn([B, I], dtype=f64)}
        if spec["h0"]:
            diff["h0"] = torch.randn([B, H], dtype=f64)
            if module == "LSTMCell":
                diff["c0"] = torch.randn([B, H], dtype=f64)
        return diff, {}
    if module in ("Linear", "LayerNorm"):
        return {"x": torch.randn(spec["x"], dtype=f64)}, {}
    if module == "Embedding":
        return {}, {"indices": torch.tensor(spec["indices"], dtype=torch.int64)}
    raise ValueError(module)


def forward(m, module, config, diff, fixed):
    """Run the module; returns an ordered dict of output name -> tensor."""
    if module in ("RNN", "LSTM", "GRU"):
        x = diff["x"]
        hx = None
        if "h0" in diff:
            hx = (diff["h0"], diff["c0"]) if module == "LSTM" else diff["h0"]
        bf = config["batch_first"]
        if "lengths" in fixed:
            T = x.shape[1] if bf else x.shape[0]
            packed = pack_padded_sequence(x, torch.tensor(fixed["lengths"]),
                                          batch_first=bf, enforce_sorted=False)
            out_packed, state = m(packed, hx)
            out, _ = pad_packed_sequence(out_packed, batch_first=bf, total_length=T)
        else:
            out, state = m(x, hx)
        if module == "LSTM":
            return {"output": out, "h_n": state[0], "c_n": state[1]}
        return {"output": out, "h_n": state}
    if module in ("RNNCell", "GRUCell"):
        return {"h": m(diff["x"], diff.get("h0"))}
    if module == "LSTMCell":
        hx = (diff["h0"], diff["c0"]) if "h0" in diff else None
        h, c = m(diff["x"], hx)
        return {"h": h, "c": c}
    if module in ("Linear", "LayerNorm"):
        return {"y": m(diff["x"])}
    if module == "Embedding":
        return {"y": m(fixed["indices"])}
    raise ValueError(module)


def encode(t):
    t = t.detach()
    if t.dtype == torch.int64:
        data = [int(v) for v in t.reshape(-1).tolist()]
        dtype = "int64"
    else:
        assert t.dtype == torch.float64, t.dtype
        data = [float(v) for v in t.reshape(-1).tolist()]
        assert all(math.isfinite(v) for v in data), "non-finite value"
        dtype = "float64"
    return {"shape": list(t.shape), "dtype": dtype, "data": data}


def finite_difference_check(name, loss, named, analytic, skip=lambda n, i: False):
    """Compare autograd grads with central differences of loss() in float64.

    named: name -> tensor perturbed in place; analytic: name -> grad.
    """
    eps = 1e-6
    worst = 0.0
    with torch.no_grad():
        for key, t in named.items():
            flat = t.view(-1)
            g = analytic[key].reshape(-1)
            for i in range(flat.numel()):
                if skip(key, i):
                    continue
                orig = flat[i].item()
                flat[i] = orig + eps
                up = loss()
                flat[i] = orig - eps
                down = loss()
                flat[i] = orig
                num = (up - down) / (2 * eps)
                err = abs(num - g[i].item()) / (1e-6 + 1e-5 * abs(num))
                worst = max(worst, err)
                if err > 1:
                    raise SystemExit(f"finite-difference check failed for {name}: {key}[{i}] "
                                     f"autograd {g[i].item()!r} vs numeric {num!r}")
    return worst


def run_case(name, module, config, spec):
    m = build(module, config)
    if spec.get("set_affine"):
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, dtype=torch.float64))
            m.bias.copy_(torch.randn(m.bias.shape, dtype=torch.float64))
    diff, fixed = make_inputs(module, config, spec)
    for t in diff.values():
        t.requires_grad_(True)

    outputs = forward(m, module, config, diff, fixed)
    grad_outputs = {k: torch.randn(v.shape, dtype=torch.float64) for k, v in outputs.items()}

    params = dict(m.named_parameters())
    state = m.state_dict()
    assert list(params) == [k for k in state if k in params]
    assert set(params) == set(state), "buffers in state dict"
    wrt = dict(diff)
    wrt.update(params)
    loss = sum((outputs[k] * grad_outputs[k]).sum() for k in outputs)
    gs = torch.autograd.grad(loss, list(wrt.values()))
    grads = dict(zip(wrt.keys(), gs))

    if "lengths" in fixed:
        # Padded outputs are constant zero and padded inputs get no gradient.
        bf = config["batch_first"]
        for b, n in enumerate(fixed["lengths"]):
            pad_out = outputs["output"][b, n:] if bf else outputs["output"][n:, b]
            pad_gx = grads["x"][b, n:] if bf else grads["x"][n:, b]
            assert (pad_out == 0).all() and (pad_gx == 0).all(), name

    def eval_loss():
        with torch.no_grad():
            o = forward(m, module, config, diff, fixed)
            return float(sum((o[k] * grad_outputs[k]).sum() for k in o))

    pad = config.get("padding_idx") if module == "Embedding" else None
    skip = (lambda key, i: pad is not None and key == "weight"
            and i // config["embedding_dim"] == pad)
    finite_difference_check(name, eval_loss, wrt, grads, skip)

    enc_inputs = {k: encode(v) for k, v in diff.items()}
    if "indices" in fixed:
        enc_inputs["indices"] = encode(fixed["indices"])
    if "lengths" in fixed:
        enc_inputs["lengths"] = fixed["lengths"]
    return {
        "name": name,
        "module": module,
        "config": config,
        "state_dict_order": list(state),
        "state_dict": {k: encode(v) for k, v in state.items()},
        "inputs": enc_inputs,
        "outputs": {k: encode(v) for k, v in outputs.items()},
        "grad_outputs": {k: encode(v) for k, v in grad_outputs.items()},
        "grads": {k: encode(v) for k, v in grads.items()},
    }


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for name, module, _, _ in CASES:
        prefix = name.split("/")[0]
        assert prefix.split("_")[0] == module.lower(), name

    results = [run_case(*c) for c in CASES]

    dumps = lambda o: json.dumps(o, separators=(",", ":"), allow_nan=False)
    lines = ",\n".join(dumps(r) for r in results)
    text = f'{{"torch_version":{dumps(torch.__version__)},"cases":[\n{lines}\n]}}\n'
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)

    # Verify the file loads back and is self-consistent.
    with open(out_path) as f:
        loaded = json.load(f)
    for c, r in zip(loaded["cases"], results):
        assert c["state_dict_order"] == list(c["state_dict"]), c["name"]
        assert set(c["outputs"]) == set(c["grad_outputs"]), c["name"]
        tensors = (list(c["state_dict"].values()) + list(c["outputs"].values())
                   + list(c["grad_outputs"].values()) + list(c["grads"].values())
                   + [v for k, v in c["inputs"].items() if k != "lengths"])
        for t in tensors:
            assert len(t["data"]) == math.prod(t["shape"]), c["name"]
        for k, g in c["grads"].items():
            src = c["state_dict"].get(k) or c["inputs"].get(k)
            assert src is not None and src["shape"] == g["shape"], (c["name"], k)
        assert c == json.loads(dumps(r)), c["name"]

    print(f"wrote {len(loaded['cases'])} cases to {out_path} "
          f"({os.path.getsize(out_path)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
