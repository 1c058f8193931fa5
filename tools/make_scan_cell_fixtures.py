#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's scan cells (nn/scan_cells.hpp).

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_scan_cell_fixtures.py

writes ``tests/fixtures/scan_cells.json``.  Each reference is written from the
paper's equations (Feng et al. 2024, "Were RNNs All We Needed?") as a plain
sequential loop over time -- not a scan -- so the tests check that unroll's
one-node scan computes the recurrence the paper defines:

    minGRU   z = sigmoid(W_z x + b_z), h~ = W_h x + b_h,
             h_t = (1 - z_t) h_{t-1} + z_t h~_t
    minLSTM  f = sigmoid(W_f x + b_f), i = sigmoid(W_i x + b_i),
             f' = f / (f + i), i' = i / (f + i), h_t = f'_t h_{t-1} + i'_t h~_t

and in log-space mode the candidate is g(h~) (g(x) = x + 0.5 for x >= 0,
sigmoid(x) below) with a positive h0.  "lengths" holds a row's state past its
end and zeroes its output there.  Float64 throughout, fixed seed, floats
written with repr.

File format::

    {"torch_version": "...", "cases": [
      {"name": "...", "module": "MinGRU" | "MinLSTM",
       "config": {"input_size": I, "hidden_size": H, "log_space": bool},
       "state_dict": {"linear_z.weight": T, ...},
       "inputs": {"x": T, "h0": T (optional), "lengths": [...] (optional)},
       "output": T, "grad_output": T,
       "grads": {"x": T, "h0": T, "linear_z.weight": T, ...}}]}

grads = d sum(output * grad_output) / d (x, h0, each parameter).
"""

import json
import os
import sys

import torch

SEED = 20261202
DEFAULT_OUT = os.path.join("tests", "fixtures", "scan_cells.json")


def g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def encode(t):
    # json writes a float with repr, which reads back to the same double
    return {"shape": list(t.shape), "dtype": "float64", "data": [float(v) for v in t.reshape(-1).tolist()]}


def run_reference(module, params, x, h0, lengths, log_space):
    T, B, _ = x.shape
    H = params["linear_h.weight"].shape[0]

    def lin(name, xt):
        return xt @ params[name + ".weight"].T + params[name + ".bias"]

    h = h0 if h0 is not None else torch.zeros(B, H, dtype=torch.float64)
    outs = []
    for t in range(T):
        cand = lin("linear_h", x[t])
        if log_space:
            cand = g(cand)
        if module == "MinGRU":
            z = torch.sigmoid(lin("linear_z", x[t]))
            hn = (1 - z) * h + z * cand
        else:
            f, i = torch.sigmoid(lin("linear_f", x[t])), torch.sigmoid(lin("linear_i", x[t]))
            hn = f / (f + i) * h + i / (f + i) * cand
        if lengths is not None:
            valid = torch.tensor([t < n for n in lengths]).unsqueeze(1)
            hn = torch.where(valid, hn, h)
            outs.append(torch.where(valid, hn, torch.zeros_like(hn)))
        else:
            outs.append(hn)
        h = hn
    return torch.stack(outs)


def make_case(name, module, I, H, T, B, log_space, with_h0, lengths):
    names = ["linear_z", "linear_h"] if module == "MinGRU" else ["linear_f", "linear_i", "linear_h"]
    params = {}
    for n in names:
        lin = torch.nn.Linear(I, H).double()  # PyTorch's default initialisation
        params[n + ".weight"] = lin.weight.detach().clone().requires_grad_()
        params[n + ".bias"] = lin.bias.detach().clone().requires_grad_()
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = None
    if with_h0:
        h0 = (torch.rand(B, H, dtype=torch.float64) + 0.5) if log_space else torch.randn(B, H, dtype=torch.float64)
        h0.requires_grad_()
    out = run_reference(module, params, x, h0, lengths, log_space)
    grad_output = torch.randn_like(out)
    (out * grad_output).sum().backward()
    inputs = {"x": encode(x)}
    grads = {"x": encode(x.grad)}
    if h0 is not None:
        inputs["h0"] = encode(h0)
        grads["h0"] = encode(h0.grad)
    if lengths is not None:
        inputs["lengths"] = lengths
    for k, v in params.items():
        grads[k] = encode(v.grad)
    return {"name": name, "module": module,
            "config": {"input_size": I, "hidden_size": H, "log_space": log_space},
            "state_dict": {k: encode(v.detach()) for k, v in params.items()},
            "inputs": inputs, "output": encode(out.detach()), "grad_output": encode(grad_output),
            "grads": grads}


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    cases = [
        make_case("mingru/plain_h0", "MinGRU", 3, 4, 6, 2, False, True, None),
        make_case("mingru/plain_zero_h0", "MinGRU", 3, 4, 5, 3, False, False, None),
        make_case("mingru/log_h0", "MinGRU", 3, 4, 6, 2, True, True, None),
        make_case("mingru/log_lengths", "MinGRU", 2, 3, 7, 3, True, True, [7, 2, 5]),
        make_case("minlstm/plain_h0", "MinLSTM", 3, 4, 6, 2, False, True, None),
        make_case("minlstm/plain_lengths", "MinLSTM", 2, 3, 5, 2, False, True, [3, 5]),
        make_case("minlstm/log_h0", "MinLSTM", 3, 4, 6, 2, True, True, None),
        make_case("minlstm/log_zero_h0", "MinLSTM", 3, 2, 4, 2, True, False, None),
    ]
    with open(out_path, "w") as f:
        f.write(json.dumps({"torch_version": torch.__version__, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {out_path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
