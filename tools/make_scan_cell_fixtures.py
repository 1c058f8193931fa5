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
    MinRNNBlock  u_t = x_t + cell(LayerNorm_1(x))_t,
                 y_t = u_t + ff_out(gelu(ff_in(LayerNorm_2(u_t))))
    RGLRU    (De et al. 2024, Griffin) r = sigmoid(a_gate(x)), i = sigmoid(input_gate(x))
             (block-diagonal linears), log a = -8 r softplus(a_param),
             h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t), the sqrt's derivative
             clipped at 1000; at a reset h_t = i_t x_t
    RGLRUBlock  y = gelu_tanh(linear_y(x)), u = causal conv (width K, carried
                tail of K-1 inputs) of linear_x(x), out = linear_out(rg_lru(u) y)

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

grads = d sum(output * grad_output) / d (x, h0, each parameter).  The blocks also
return their last state ("final": {"h": T, "conv": T}) and add sum(final_h * grad_final_h)
to that loss, so the state's gradient path is checked too; RGLRUBlock's inputs and
grads may hold "conv0", the carried conv tail.
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


class SqrtBoundDerivative(torch.autograd.Function):
    """sqrt with the gradient g / sqrt(max(4x, 1/1000^2)) (Griffin's clipped derivative)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / torch.sqrt(torch.clamp(4.0 * x, min=1e-6))


def block_diagonal(x, w, b):
    # x [B, W] split into nb groups; group h -> x_h w[h] + b[h]
    nb, bw, _ = w.shape
    return (torch.einsum("bhi,hij->bhj", x.reshape(x.shape[0], nb, bw), w) + b).reshape(x.shape[0], nb * bw)


def rglru_step(p, prefix, x_t, h, reset):
    gx = torch.sigmoid(block_diagonal(x_t, p[prefix + "input_gate.w"], p[prefix + "input_gate.b"]))
    ga = torch.sigmoid(block_diagonal(x_t, p[prefix + "a_gate.w"], p[prefix + "a_gate.b"]))
    log_a = -8.0 * ga * torch.nn.functional.softplus(p[prefix + "a_param"])
    a = torch.exp(log_a)
    mult = SqrtBoundDerivative.apply(1 - a * a)
    if reset is not None:
        r = reset.unsqueeze(1)
        a = torch.where(r, torch.zeros_like(a), a)
        mult = torch.where(r, torch.ones_like(mult), mult)
    return a * h + mult * (gx * x_t)


def rglru_params(W, nb, prefix=""):
    bw = W // nb
    u = torch.empty(W, dtype=torch.float64).uniform_(0.9 ** 2, 0.999 ** 2)
    return {prefix + "a_param": torch.log(torch.exp(-0.5 * torch.log(u)) - 1),
            prefix + "input_gate.w": torch.randn(nb, bw, bw, dtype=torch.float64) / bw ** 0.5,
            prefix + "input_gate.b": 0.1 * torch.randn(nb, bw, dtype=torch.float64),
            prefix + "a_gate.w": torch.randn(nb, bw, bw, dtype=torch.float64) / bw ** 0.5,
            prefix + "a_gate.b": 0.1 * torch.randn(nb, bw, dtype=torch.float64)}


def linear_params(name, n_in, n_out):
    lin = torch.nn.Linear(n_in, n_out).double()  # PyTorch's default initialisation
    return {name + ".weight": lin.weight.detach().clone(), name + ".bias": lin.bias.detach().clone()}


def finish_case(name, module, config, params, inputs, out, final=None):
    """Backward of sum(out * go) (+ sum(final_h * gh)); encodes everything."""
    grad_output = torch.randn_like(out)
    loss = (out * grad_output).sum()
    case = {"name": name, "module": module, "config": config,
            "state_dict": {k: encode(v.detach()) for k, v in params.items()}}
    if final is not None:
        grad_final = torch.randn_like(final["h"])
        loss = loss + (final["h"] * grad_final).sum()
        case["final"] = {k: encode(v.detach()) for k, v in final.items()}
        case["grad_final_h"] = encode(grad_final)
    loss.backward()
    case["inputs"] = {k: (encode(v.detach()) if torch.is_tensor(v) else v) for k, v in inputs.items()}
    case["output"] = encode(out.detach())
    case["grad_output"] = encode(grad_output)
    grads = {k: encode(v.grad) for k, v in inputs.items() if torch.is_tensor(v) and v.requires_grad}
    grads.update({k: encode(v.grad) for k, v in params.items()})
    case["grads"] = grads
    return case


def make_rglru_case(name, W, nb, T, B, with_h0, resets):
    p = {k: v.requires_grad_() for k, v in rglru_params(W, nb).items()}
    x = torch.randn(T, B, W, dtype=torch.float64, requires_grad=True)
    inputs = {"x": x}
    h = torch.zeros(B, W, dtype=torch.float64)
    if with_h0:
        h = torch.randn(B, W, dtype=torch.float64, requires_grad=True)
        inputs["h0"] = h
    if resets is not None:
        inputs["resets"] = resets
    outs = []
    for t in range(T):
        r = torch.tensor([bool(v) for v in resets[t]]) if resets is not None else None
        h = rglru_step(p, "", x[t], h, r)
        outs.append(h)
    return finish_case(name, "RGLRU", {"width": W, "num_heads": nb}, p, inputs, torch.stack(outs))


def make_rglru_block_case(name, width, lru_width, nb, K, T, B, with_state):
    p = {}
    p.update(linear_params("linear_y", width, lru_width))
    p.update(linear_params("linear_x", width, lru_width))
    p.update(linear_params("linear_out", lru_width, width))
    p["conv_1d.w"] = torch.randn(K, lru_width, dtype=torch.float64) / K ** 0.5
    p["conv_1d.b"] = 0.1 * torch.randn(lru_width, dtype=torch.float64)
    p.update(rglru_params(lru_width, nb, "rg_lru."))
    p = {k: v.requires_grad_() for k, v in p.items()}
    x = torch.randn(T, B, width, dtype=torch.float64, requires_grad=True)
    inputs = {"x": x}
    h = torch.zeros(B, lru_width, dtype=torch.float64)
    tail = torch.zeros(K - 1, B, lru_width, dtype=torch.float64)
    if with_state:
        h = torch.randn(B, lru_width, dtype=torch.float64, requires_grad=True)
        tail = torch.randn(K - 1, B, lru_width, dtype=torch.float64, requires_grad=True)
        inputs["h0"], inputs["conv0"] = h, tail

    def lin(n, v):
        return v @ p[n + ".weight"].T + p[n + ".bias"]

    past = [tail[k] for k in range(K - 1)]  # oldest first
    outs = []
    for t in range(T):
        gate = torch.nn.functional.gelu(lin("linear_y", x[t]), approximate="tanh")
        past.append(lin("linear_x", x[t]))
        window = past[-K:]  # window[K-1] is the current step
        u = p["conv_1d.b"] + sum(p["conv_1d.w"][k] * window[k] for k in range(K))
        h = rglru_step(p, "rg_lru.", u, h, None)
        outs.append(lin("linear_out", h * gate))
    final = {"h": h, "conv": torch.stack(past[-(K - 1):])}
    config = {"width": width, "lru_width": lru_width, "num_heads": nb, "conv_width": K}
    return finish_case(name, "RGLRUBlock", config, p, inputs, torch.stack(outs), final)


def make_min_block_case(name, kind, D, T, B, log_space, with_h0):
    p = {}
    for n in ("norm1", "norm2"):
        p[n + ".weight"] = 1 + 0.1 * torch.randn(D, dtype=torch.float64)
        p[n + ".bias"] = 0.1 * torch.randn(D, dtype=torch.float64)
    cells = ["linear_z", "linear_h"] if kind == "gru" else ["linear_f", "linear_i", "linear_h"]
    for n in cells:
        p.update(linear_params("cell." + n, D, D))
    p.update(linear_params("ff_in", D, 4 * D))
    p.update(linear_params("ff_out", 4 * D, D))
    p = {k: v.requires_grad_() for k, v in p.items()}
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    inputs = {"x": x}
    h = torch.zeros(B, D, dtype=torch.float64)
    if with_h0:
        h = ((torch.rand(B, D, dtype=torch.float64) + 0.5) if log_space
             else torch.randn(B, D, dtype=torch.float64)).requires_grad_()
        inputs["h0"] = h

    def lin(n, v):
        return v @ p[n + ".weight"].T + p[n + ".bias"]

    def norm(n, v):
        return torch.nn.functional.layer_norm(v, (D,), p[n + ".weight"], p[n + ".bias"], 1e-5)

    outs = []
    for t in range(T):
        xt = norm("norm1", x[t])
        cand = lin("cell.linear_h", xt)
        if log_space:
            cand = g(cand)
        if kind == "gru":
            z = torch.sigmoid(lin("cell.linear_z", xt))
            h = (1 - z) * h + z * cand
        else:
            f, i = torch.sigmoid(lin("cell.linear_f", xt)), torch.sigmoid(lin("cell.linear_i", xt))
            h = f / (f + i) * h + i / (f + i) * cand
        u = x[t] + h
        outs.append(u + lin("ff_out", torch.nn.functional.gelu(lin("ff_in", norm("norm2", u)))))
    config = {"dim": D, "kind": kind, "log_space": log_space}
    return finish_case(name, "MinRNNBlock", config, p, inputs, torch.stack(outs), {"h": h})


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
        make_min_block_case("minrnnblock/gru_h0", "gru", 4, 5, 2, False, True),
        make_min_block_case("minrnnblock/lstm_log", "lstm", 3, 4, 3, True, False),
        make_rglru_case("rglru/one_head_h0", 4, 1, 6, 2, True, None),
        make_rglru_case("rglru/two_heads_resets", 6, 2, 7, 3, False,
                        [[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]]),
        make_rglru_block_case("rglru_block/fresh", 3, 4, 2, 4, 6, 2, False),
        make_rglru_block_case("rglru_block/carried_state", 4, 6, 3, 3, 5, 2, True),
    ]
    with open(out_path, "w") as f:
        f.write(json.dumps({"torch_version": torch.__version__, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {out_path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
