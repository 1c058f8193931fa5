#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's xLSTM cells (nn/xlstm.hpp).

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_xlstm_fixtures.py

writes ``tests/fixtures/xlstm.json``.  Each reference is written from the
equations of Beck et al. 2024 ("xLSTM: Extended Long Short-Term Memory") in
their stabilised form, as a plain sequential loop over time and over heads --
no parallel form, no batched head matmuls -- so the tests check that unroll's
cells (sLSTM on run_cell; mLSTM in both its recurrent and its parallel form)
compute the recurrence the paper defines.  With lf = logsigmoid(f~):

    m_t = max(lf_t + m_{t-1}, i~_t),  i' = exp(i~_t - m_t),  f' = exp(lf_t + m_{t-1} - m_t)

    sLSTM (per unit; r = h_{t-1} times the head's block of recurrent_kernel,
           gate order i, f, z, o)
        g~ = W_g x_t + b_g + r_g
        c_t = f' c_{t-1} + i' tanh(z~),  n_t = f' n_{t-1} + i',  h_t = sigmoid(o~) c_t / n_t

    mLSTM (per head, D = H / heads; i~, f~ one scalar per head)
        q = W_q x + b_q,  k = (W_k x + b_k) / sqrt(D),  v = W_v x + b_v,  o = sigmoid(W_o x + b_o)
        C_t = f' C_{t-1} + i' v k^T,  n_t = f' n_{t-1} + i' k
        h_t = o * C_t q / max(|n_t . q|, exp(-m_t))

The default initial state is all zeros (m included).  Float64 throughout,
fixed seed, parameters from torch.nn.Linear's default initialisation (and
U(+-1/sqrt(D)) for recurrent_kernel), floats written with repr.

File format::

    {"torch_version": "...", "cases": [
      {"name": "...", "module": "SLSTM" | "MLSTM",
       "config": {"input_size": I, "hidden_size": H, "heads": NH},
       "state_dict": {"igate.weight": T, ...},
       "inputs": {"x": T, "state": {"h": T, "c": T, ...} (optional)},
       "output": T, "state": {...final state...},
       "grad_output": T, "grad_state": {...},
       "grads": {"x": T, "state.c": T, ..., "igate.weight": T, ...}}]}

States: SLSTM {h, c, n, m} each [B, H]; MLSTM {C [B, NH, D, D], n [B, NH, D],
m [B, NH]} (its h is the last output, not part of the recurrence).
grads = d L / d (x, each initial-state tensor, each parameter) with
L = sum(output * grad_output) + sum over final-state tensors s of sum(s * grad_state[s]).
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

SEED = 20261203
DEFAULT_OUT = os.path.join("tests", "fixtures", "xlstm.json")

SLSTM_STATE = ["h", "c", "n", "m"]
MLSTM_STATE = ["C", "n", "m"]


def encode(t):
    # json writes a float with repr, which reads back to the same double
    return {"shape": list(t.shape), "dtype": "float64", "data": [float(v) for v in t.reshape(-1).tolist()]}


def lin(params, name, x):
    return x @ params[name + ".weight"].T + params[name + ".bias"]


def slstm_reference(params, x, state, heads):
    T, B, _ = x.shape
    H = params["igate.weight"].shape[0]
    D = H // heads
    R = params["recurrent_kernel"]  # [heads, D, 4 D]
    h, c, n, m = (state[k] for k in SLSTM_STATE)
    outs = []
    for t in range(T):
        pre = {g: lin(params, g + "gate", x[t]) for g in "ifzo"}
        rec = [h[:, k * D:(k + 1) * D] @ R[k] for k in range(heads)]  # each [B, 4 D]
        for gi, g in enumerate("ifzo"):
            pre[g] = pre[g] + torch.cat([r[:, gi * D:(gi + 1) * D] for r in rec], dim=1)
        log_f = F.logsigmoid(pre["f"])
        m_new = torch.maximum(log_f + m, pre["i"])
        i_p = torch.exp(pre["i"] - m_new)
        f_p = torch.exp(log_f + m - m_new)
        c = f_p * c + i_p * torch.tanh(pre["z"])
        n = f_p * n + i_p
        h = torch.sigmoid(pre["o"]) * c / n
        m = m_new
        outs.append(h)
    return torch.stack(outs), {"h": h, "c": c, "n": n, "m": m}


def mlstm_reference(params, x, state, heads):
    T, B, _ = x.shape
    H = params["q_proj.weight"].shape[0]
    D = H // heads
    Cs = [state["C"][:, k] for k in range(heads)]  # each [B, D, D]
    ns = [state["n"][:, k] for k in range(heads)]  # each [B, D]
    ms = [state["m"][:, k] for k in range(heads)]  # each [B]
    outs = []
    for t in range(T):
        q = lin(params, "q_proj", x[t])
        k = lin(params, "k_proj", x[t]) / math.sqrt(D)
        v = lin(params, "v_proj", x[t])
        o = torch.sigmoid(lin(params, "ogate", x[t]))
        i_raw = lin(params, "igate", x[t])  # [B, heads]
        log_f = F.logsigmoid(lin(params, "fgate", x[t]))
        h_heads = []
        for hd in range(heads):
            sl = slice(hd * D, (hd + 1) * D)
            qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
            m_new = torch.maximum(log_f[:, hd] + ms[hd], i_raw[:, hd])
            i_p = torch.exp(i_raw[:, hd] - m_new)
            f_p = torch.exp(log_f[:, hd] + ms[hd] - m_new)
            Cs[hd] = f_p[:, None, None] * Cs[hd] + i_p[:, None, None] * (vh[:, :, None] * kh[:, None, :])
            ns[hd] = f_p[:, None] * ns[hd] + i_p[:, None] * kh
            ms[hd] = m_new
            num = (Cs[hd] @ qh[:, :, None])[:, :, 0]
            den = torch.maximum((ns[hd] * qh).sum(1).abs(), torch.exp(-m_new))
            h_heads.append(num / den[:, None])
        outs.append(o * torch.cat(h_heads, dim=1))
    final = {"C": torch.stack(Cs, 1), "n": torch.stack(ns, 1), "m": torch.stack(ms, 1)}
    return torch.stack(outs), final


def linear_params(names, I, out_sizes):
    params = {}
    for name, out in zip(names, out_sizes):
        layer = torch.nn.Linear(I, out).double()  # PyTorch's default initialisation
        params[name + ".weight"] = layer.weight.detach().clone()
        params[name + ".bias"] = layer.bias.detach().clone()
    return params


def make_case(name, module, I, H, heads, T, B, with_state, x_scale=1.0):
    D = H // heads
    if module == "SLSTM":
        params = linear_params(["igate", "fgate", "zgate", "ogate"], I, [H] * 4)
        bound = 1.0 / math.sqrt(D)
        params["recurrent_kernel"] = torch.empty(heads, D, 4 * D, dtype=torch.float64).uniform_(-bound, bound)
        shapes = {k: (B, H) for k in SLSTM_STATE}
        names, reference = SLSTM_STATE, slstm_reference
    else:
        params = linear_params(["q_proj", "k_proj", "v_proj", "igate", "fgate", "ogate"], I,
                               [H, H, H, heads, heads, H])
        shapes = {"C": (B, heads, D, D), "n": (B, heads, D), "m": (B, heads)}
        names, reference = MLSTM_STATE, mlstm_reference
    for p in params.values():
        p.requires_grad_()
    x = (x_scale * torch.randn(T, B, I, dtype=torch.float64)).requires_grad_()
    if with_state:
        state = {k: torch.randn(*shapes[k], dtype=torch.float64) for k in names}
        if module == "SLSTM":
            state["n"] = torch.rand(B, H, dtype=torch.float64) + 0.5  # a normaliser is a sum of positive terms
        for v in state.values():
            v.requires_grad_()
    else:
        state = {k: torch.zeros(*shapes[k], dtype=torch.float64) for k in names}
    out, final = reference(params, x, state, heads)
    grad_output = torch.randn_like(out)
    grad_state = {k: torch.randn_like(final[k]) for k in names}
    loss = (out * grad_output).sum() + sum((final[k] * grad_state[k]).sum() for k in names)
    loss.backward()
    inputs = {"x": encode(x)}
    grads = {"x": encode(x.grad)}
    if with_state:
        inputs["state"] = {k: encode(state[k].detach()) for k in names}
        for k in names:
            grads["state." + k] = encode(state[k].grad)
    for k, v in params.items():
        grads[k] = encode(v.grad)
    return {"name": name, "module": module,
            "config": {"input_size": I, "hidden_size": H, "heads": heads},
            "state_dict": {k: encode(v.detach()) for k, v in params.items()},
            "inputs": inputs, "output": encode(out.detach()),
            "state": {k: encode(final[k].detach()) for k in names},
            "grad_output": encode(grad_output), "grad_state": {k: encode(v) for k, v in grad_state.items()},
            "grads": grads}


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    cases = [
        make_case("slstm/one_head_zero_state", "SLSTM", 3, 4, 1, 6, 2, False),
        make_case("slstm/one_head_state", "SLSTM", 3, 4, 1, 5, 3, True),
        make_case("slstm/two_heads_state", "SLSTM", 3, 6, 2, 7, 2, True, x_scale=2.0),
        make_case("slstm/three_heads_zero_state", "SLSTM", 2, 6, 3, 5, 3, False),
        make_case("mlstm/one_head_zero_state", "MLSTM", 3, 4, 1, 6, 2, False),
        make_case("mlstm/two_heads_state", "MLSTM", 3, 6, 2, 5, 3, True),
        make_case("mlstm/two_heads_zero_state", "MLSTM", 4, 8, 2, 7, 2, False, x_scale=2.0),
        make_case("mlstm/three_heads_state", "MLSTM", 2, 6, 3, 6, 2, True, x_scale=2.0),
    ]
    with open(out_path, "w") as f:
        f.write(json.dumps({"torch_version": torch.__version__, "cases": cases}, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {out_path} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
