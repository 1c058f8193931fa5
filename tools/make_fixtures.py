#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's op tests.

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_fixtures.py

writes ``tests/fixtures/ops.json``.  An optional argument overrides the
output path.  The output is deterministic (fixed torch.manual_seed, float64
everywhere, every float written with repr so it round-trips exactly).

File format::

    {"torch_version": "...", "cases": [
      {"name": "add/same", "op": "add", "params": {...},
       "inputs": [{"shape": [2,3], "dtype": "float64", "data": [...]}, ...],
       "output": {...}, "grad_output": {...},
       "grads": [{...} or null, ...]},          # one per input
      ...]}

Tensors are flattened row-major; a 0-d tensor has "shape": [] and one
element.  grads[i] = d sum(output * grad_output) / d inputs[i]; it is null for
int64 inputs (indices, targets) and for masks/conditions, which are stored as
float64 0.0/1.0 (nonzero = true) and converted to bool before calling torch.

Every differentiable case is also checked with torch.autograd.gradcheck, so
inputs sitting on a kink (abs/relu/clamp), a tie (max) or outside a domain
(log/sqrt/pow) make the script fail instead of producing a bad fixture.
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

SEED = 20240611
DEFAULT_OUT = os.path.join("tests", "fixtures", "ops.json")

# ---------------------------------------------------------------------------
# Input specs.  Each helper returns a lazy spec; make_input() materialises it
# in table order from the single seeded RNG stream.
# ---------------------------------------------------------------------------


def R(*shape):
    """Standard normal."""
    return ("randn", shape)


def P(*shape):
    """Positive: uniform in [0.5, 2] (log / sqrt / fractional pow)."""
    return ("pos", shape)


def NZ(*shape):
    """Away from zero: +-uniform[0.5, 2] (denominators)."""
    return ("nonzero", shape)


def A(shape, kinks=(0.0,), lo=-2.0, hi=2.0):
    """Uniform in [lo, hi] with every element > 0.1 away from each kink."""
    return ("away", tuple(shape), tuple(kinks), lo, hi)


def D(*shape):
    """All elements distinct (no ties for max), gaps >= 2/numel."""
    return ("distinct", shape)


def LP(*shape):
    """Log-probabilities along the last dim: log_softmax(randn), detached."""
    return ("logprob", shape)


def X(data):
    """Explicit float64 data (nested list or scalar)."""
    return ("explicit", data)


def I(data):
    """Explicit int64 data (indices / targets); gradient is null."""
    return ("int", data)


def M(data):
    """Explicit 0/1 mask stored as float64; gradient is null."""
    return ("mask", data)


def make_input(spec):
    """Return (tensor, differentiable) for a spec."""
    kind = spec[0]
    if kind == "randn":
        return torch.randn(spec[1]), True
    if kind == "pos":
        return torch.rand(spec[1]) * 1.5 + 0.5, True
    if kind == "nonzero":
        mag = torch.rand(spec[1]) * 1.5 + 0.5
        sign = torch.where(torch.rand(spec[1]) < 0.5, -1.0, 1.0)
        return mag * sign, True
    if kind == "away":
        _, shape, kinks, lo, hi = spec
        x = torch.rand(shape) * (hi - lo) + lo
        while True:
            bad = torch.zeros(shape, dtype=torch.bool)
            for k in kinks:
                bad |= (x - k).abs() < 0.1
            if not bad.any():
                return x, True
            x = torch.where(bad, torch.rand(shape) * (hi - lo) + lo, x)
    if kind == "distinct":
        shape = spec[1]
        n = math.prod(shape)
        perm = torch.randperm(n).double()
        x = (perm + 0.5 * torch.rand(n)) * (4.0 / n) - 2.0
        return x.reshape(shape), True
    if kind == "logprob":
        return torch.log_softmax(torch.randn(spec[1]), dim=-1).detach(), True
    if kind == "explicit":
        return torch.tensor(spec[1], dtype=torch.float64), True
    if kind == "int":
        return torch.tensor(spec[1], dtype=torch.int64), False
    if kind == "mask":
        return torch.tensor(spec[1], dtype=torch.float64), False
    raise ValueError(f"unknown input spec {spec!r}")


# ---------------------------------------------------------------------------
# Op implementations: f(inputs, params) -> output tensor.
# ---------------------------------------------------------------------------


def _slice(x, p):
    idx = [slice(None)] * x.dim()
    idx[p["dim"]] = slice(p["start"], p["end"], p["step"])
    return x[tuple(idx)]


def _sum_mean(fn):
    def f(x, p):
        if p["dims"] is None:
            return fn(x[0])
        return fn(x[0], dim=p["dims"], keepdim=p["keepdim"])
    return f


def _max(x, p):
    if p["dim"] is None:
        return torch.max(x[0])
    return torch.max(x[0], p["dim"], keepdim=p["keepdim"]).values



def _layer_norm(x, p):
    shape = x[0].shape[x[0].dim() - p["norm_dims"]:]
    w, b = (x[1], x[2]) if p["affine"] else (None, None)
    return F.layer_norm(x[0], shape, w, b, p["eps"])


# The fused recurrent steps (ops/recurrent.hpp) through PyTorch's own cell functions, so gate order and
# formulas are PyTorch's: a step takes the input projection gx precomputed, which is the cell with an
# identity weight_ih and no bias_ih.  Inputs: gx, h, [c,] w_hh, then b_hh if params["bias"], then a [B]
# 0/1 mask if params["mask"] (0 = the row holds its state).
def _step(cell, n_state):
    def f(x, p):
        gx, state, w = x[0], x[1:1 + n_state], x[1 + n_state]
        rest = x[2 + n_state:]
        b = rest[0] if p["bias"] else None
        new = cell(gx, tuple(state) if n_state == 2 else state[0], torch.eye(gx.shape[1]), w, None, b)
        i = 0
        if n_state == 2:  # lstm_cell returns (h', c'): a case checks one of them
            i = {"h": 0, "c": 1}[p["output"]]
            new = new[i]
        if not p["mask"]:
            return new
        return torch.where((rest[-1] != 0).unsqueeze(1), new, state[i])
    return f


# Depthwise causal conv1d over time as unroll lays it out: x [T, B, C], weight [C, K], optional bias [C];
# PyTorch's conv1d on [B, C, T] with K - 1 zeros of padding on both sides, keeping the first T outputs.
def _conv1d(x, p):
    inp, w = x[0], x[1]
    T, K = inp.shape[0], w.shape[1]
    b = x[2] if p["bias"] else None
    y = F.conv1d(inp.permute(1, 2, 0), w.unsqueeze(1), b, padding=K - 1, groups=inp.shape[2])
    return y[..., :T].permute(2, 0, 1)


# linear_scan / log_linear_scan written from their definition as a plain loop over time (the reference the
# one-node scan must match): h_t = a_t h_{t-1} + b_t, or log h_t = logaddexp(log a_t + log h_{t-1}, log b_t).
# params: "h0" (a third input is the initial state), "reverse", "resets" ([T][B] 0/1 or null: restart at t,
# h_t = b_t), "lengths" ([B] or null: rows past their end hold their state and output 0).
def _scan(log_space):
    def run(x, p):
        a, b = x[0], x[1]
        T, B, H = b.shape
        if p["h0"]:
            h = x[2]
        else:
            h = torch.full((B, H), -math.inf if log_space else 0.0, dtype=b.dtype)
        resets, lengths = p["resets"], p["lengths"]
        outs = [None] * T
        for i in range(T):
            t = T - 1 - i if p["reverse"] else i
            at = a if a.dim() == 1 else a[0 if a.shape[0] == 1 else t]
            hn = torch.logaddexp(at + h, b[t]) if log_space else at * h + b[t]
            if resets is not None:
                hn = torch.where(torch.tensor(resets[t], dtype=torch.bool).unsqueeze(1), b[t], hn)
            if lengths is not None:
                valid = torch.tensor([t < n for n in lengths]).unsqueeze(1)
                hn = torch.where(valid, hn, h)
                outs[t] = torch.where(valid, hn, torch.zeros_like(hn))
            else:
                outs[t] = hn
            h = hn
        return torch.stack(outs)
    return run


def _rnn_step(x, p):
    cell = torch.rnn_tanh_cell if p["nonlinearity"] == "tanh" else torch.rnn_relu_cell
    return _step(cell, 1)(x, p)


OPS = {
    "add": lambda x, p: x[0] + x[1],
    "sub": lambda x, p: x[0] - x[1],
    "mul": lambda x, p: x[0] * x[1],
    "div": lambda x, p: x[0] / x[1],
    "add_scalar": lambda x, p: x[0] + p["scalar"],
    "sub_scalar": lambda x, p: x[0] - p["scalar"],
    "rsub_scalar": lambda x, p: p["scalar"] - x[0],
    "mul_scalar": lambda x, p: x[0] * p["scalar"],
    "div_scalar": lambda x, p: x[0] / p["scalar"],
    "rdiv_scalar": lambda x, p: p["scalar"] / x[0],
    "neg": lambda x, p: torch.neg(x[0]),
    "exp": lambda x, p: torch.exp(x[0]),
    "log": lambda x, p: torch.log(x[0]),
    "sqrt": lambda x, p: torch.sqrt(x[0]),
    "abs": lambda x, p: torch.abs(x[0]),
    "tanh": lambda x, p: torch.tanh(x[0]),
    "sigmoid": lambda x, p: torch.sigmoid(x[0]),
    "relu": lambda x, p: torch.relu(x[0]),
    "pow": lambda x, p: torch.pow(x[0], p["exponent"]),
    "softplus": lambda x, p: F.softplus(x[0], beta=p["beta"], threshold=p["threshold"]),
    "clamp": lambda x, p: torch.clamp(x[0], min=p["min"], max=p["max"]),
    "matmul": lambda x, p: torch.matmul(x[0], x[1]),
    "transpose": lambda x, p: torch.transpose(x[0], p["dim0"], p["dim1"]),
    "permute": lambda x, p: x[0].permute(*p["dims"]),
    "reshape": lambda x, p: x[0].reshape(p["shape"]),
    "narrow": lambda x, p: x[0].narrow(p["dim"], p["start"], p["length"]),
    "select": lambda x, p: x[0].select(p["dim"], p["index"]),
    "slice": lambda x, p: _slice(x[0], p),
    "chunk": lambda x, p: torch.chunk(x[0], p["chunks"], p["dim"])[p["index"]],
    "split": lambda x, p: torch.split(x[0], p["split_size"], p["dim"])[p["index"]],
    "cat": lambda x, p: torch.cat(x, dim=p["dim"]),
    "stack": lambda x, p: torch.stack(x, dim=p["dim"]),
    "index_select": lambda x, p: torch.index_select(x[0], p["dim"], x[1]),
    "embedding": lambda x, p: F.embedding(x[1], x[0], padding_idx=p["padding_idx"]),
    "where": lambda x, p: torch.where(x[0] != 0, x[1], x[2]),
    "masked_fill": lambda x, p: x[0].masked_fill(x[1] != 0, p["value"]),
    "sum": _sum_mean(torch.sum),
    "mean": _sum_mean(torch.mean),
    "max": _max,
    "softmax": lambda x, p: torch.softmax(x[0], dim=p["dim"]),
    "log_softmax": lambda x, p: torch.log_softmax(x[0], dim=p["dim"]),
    "cross_entropy": lambda x, p: F.cross_entropy(
        x[0], x[1], reduction=p["reduction"], ignore_index=p["ignore_index"]),
    "nll_loss": lambda x, p: F.nll_loss(
        x[0], x[1], reduction=p["reduction"], ignore_index=p["ignore_index"]),
    "mse_loss": lambda x, p: F.mse_loss(x[0], x[1], reduction=p["reduction"]),
    "unsqueeze": lambda x, p: torch.unsqueeze(x[0], p["dim"]),
    "squeeze": lambda x, p: torch.squeeze(x[0], p["dim"]),
    "linear": lambda x, p: F.linear(x[0], x[1], x[2] if p["bias"] else None),
    "layer_norm": _layer_norm,
    "rnn_step": _rnn_step,
    "lstm_step": _step(torch.lstm_cell, 2),
    "gru_step": _step(torch.gru_cell, 1),
    "logsigmoid": lambda x, p: F.logsigmoid(x[0]),
    "silu": lambda x, p: F.silu(x[0]),
    "gelu": lambda x, p: F.gelu(x[0], approximate=p["approximate"]),
    "logaddexp": lambda x, p: torch.logaddexp(x[0], x[1]),
    "cumsum": lambda x, p: torch.cumsum(x[0], dim=p["dim"]),
    "logcumsumexp": lambda x, p: torch.logcumsumexp(x[0], dim=p["dim"]),
    "conv1d": _conv1d,
    "linear_scan": _scan(False),
    "log_linear_scan": _scan(True),
    "scaled_dot_product_attention": lambda x, p: _sdpa(x, p),
}

# ---------------------------------------------------------------------------
# Case table: (name, op, params, [input specs]).
# ---------------------------------------------------------------------------

BINARY_SHAPES = [
    # suffix,                lhs shape,   rhs shape
    ("same",                 (2, 3),      (2, 3)),
    ("same_3d",              (2, 3, 4),   (2, 3, 4)),
    ("broadcast_row",        (4, 3),      (3,)),
    ("broadcast_row_lhs",    (3,),        (4, 3)),
    ("broadcast_3d",         (2, 1, 3),   (1, 4, 1)),
    ("broadcast_outer",      (3, 1),      (1, 3)),
    ("scalar_rhs_0d",        (2, 3),      ()),
    ("scalar_lhs_0d",        (),          (2, 3)),
]

UNARY_SHAPES = [("2d", (2, 3)), ("3d", (2, 3, 4)), ("0d", ())]

CASES = []


def case(name, op, params, inputs):
    CASES.append((name, op, params, inputs))


# binary
for op in ("add", "sub", "mul", "div"):
    for suffix, a, b in BINARY_SHAPES:
        case(f"{op}/{suffix}", op, {}, [R(*a), NZ(*b) if op == "div" else R(*b)])

# tensor-scalar
for op, s1, s2, s3 in [("add_scalar", 2.5, -1.25, 0.75),
                       ("sub_scalar", 2.5, -1.25, 0.75),
                       ("rsub_scalar", 2.5, -1.25, 0.75),
                       ("mul_scalar", 2.5, -1.25, 0.75),
                       ("div_scalar", 2.5, -1.25, 0.75),
                       ("rdiv_scalar", 2.5, -1.25, 0.75)]:
    gen = NZ if op == "rdiv_scalar" else R
    case(f"{op}/2d", op, {"scalar": s1}, [gen(2, 3)])
    case(f"{op}/0d", op, {"scalar": s2}, [gen()])
    case(f"{op}/3d", op, {"scalar": s3}, [gen(2, 3, 4)])

# unary
for op, gen in [("neg", R), ("exp", R), ("log", P), ("sqrt", P),
                ("abs", lambda *s: A(s)), ("tanh", R), ("sigmoid", R),
                ("relu", lambda *s: A(s))]:
    for suffix, shape in UNARY_SHAPES:
        case(f"{op}/{suffix}", op, {}, [gen(*shape)])

case("pow/sq_2d", "pow", {"exponent": 2.0}, [R(2, 3)])
case("pow/sq_0d", "pow", {"exponent": 2.0}, [R()])
case("pow/cube_3d", "pow", {"exponent": 3.0}, [R(2, 3, 4)])
case("pow/sqrt_2d", "pow", {"exponent": 0.5}, [P(2, 3)])
case("pow/neg_1p5_2d", "pow", {"exponent": -1.5}, [P(3, 4)])

case("softplus/default_2d", "softplus", {"beta": 1.0, "threshold": 20.0}, [R(3, 4)])
case("softplus/default_large", "softplus", {"beta": 1.0, "threshold": 20.0},
     [X([[-3.0, -0.5, 0.3], [2.0, 21.5, 25.0]])])
case("softplus/beta2_thr1", "softplus", {"beta": 2.0, "threshold": 1.0},
     [A((3, 4), kinks=(0.5,))])
case("softplus/beta2_thr1_3d", "softplus", {"beta": 2.0, "threshold": 1.0},
     [A((2, 3, 4), kinks=(0.5,))])

case("clamp/both", "clamp", {"min": -0.5, "max": 0.7}, [A((3, 4), kinks=(-0.5, 0.7))])
case("clamp/both_3d", "clamp", {"min": -1.0, "max": 1.0}, [A((2, 3, 4), kinks=(-1.0, 1.0))])
case("clamp/min_only", "clamp", {"min": 0.25, "max": None}, [A((3, 4), kinks=(0.25,))])
case("clamp/max_only", "clamp", {"min": None, "max": -0.3}, [A((3, 4), kinks=(-0.3,))])

# matmul
case("matmul/2d_2d", "matmul", {}, [R(3, 4), R(4, 5)])
case("matmul/row", "matmul", {}, [R(1, 16), R(16, 8)])
case("matmul/batched_3d", "matmul", {}, [R(2, 3, 4), R(2, 4, 5)])
case("matmul/3d_2d", "matmul", {}, [R(2, 3, 4), R(4, 5)])

# shape ops
case("transpose/2d", "transpose", {"dim0": 0, "dim1": 1}, [R(3, 4)])
case("transpose/3d_01", "transpose", {"dim0": 0, "dim1": 1}, [R(2, 3, 4)])
case("transpose/3d_12", "transpose", {"dim0": 1, "dim1": 2}, [R(2, 3, 4)])
case("transpose/3d_02", "transpose", {"dim0": 0, "dim1": 2}, [R(2, 3, 4)])

case("permute/2d", "permute", {"dims": [1, 0]}, [R(3, 4)])
case("permute/3d_201", "permute", {"dims": [2, 0, 1]}, [R(2, 3, 4)])
case("permute/3d_021", "permute", {"dims": [0, 2, 1]}, [R(2, 3, 4)])
case("permute/3d_120", "permute", {"dims": [1, 2, 0]}, [R(2, 3, 4)])

case("reshape/3d_to_2d", "reshape", {"shape": [6, 4]}, [R(2, 3, 4)])
case("reshape/2d_to_3d", "reshape", {"shape": [2, 2, 3]}, [R(3, 4)])
case("reshape/infer", "reshape", {"shape": [4, -1, 2]}, [R(2, 3, 4)])
case("reshape/flatten", "reshape", {"shape": [12]}, [R(3, 4)])

case("narrow/dim0", "narrow", {"dim": 0, "start": 1, "length": 2}, [R(3, 4, 5)])
case("narrow/dim1", "narrow", {"dim": 1, "start": 1, "length": 2}, [R(3, 4, 5)])
case("narrow/dim2", "narrow", {"dim": 2, "start": 2, "length": 3}, [R(3, 4, 5)])

case("select/dim0", "select", {"dim": 0, "index": 1}, [R(3, 4, 5)])
case("select/dim1_neg", "select", {"dim": 1, "index": -1}, [R(3, 4, 5)])
case("select/dim2", "select", {"dim": 2, "index": 2}, [R(3, 4, 5)])
case("select/1d", "select", {"dim": 0, "index": 2}, [R(4)])

case("slice/dim0", "slice", {"dim": 0, "start": 1, "end": 3, "step": 1}, [R(4, 3)])
case("slice/dim1_step2", "slice", {"dim": 1, "start": 0, "end": 5, "step": 2}, [R(3, 5)])
case("slice/dim2_step2", "slice", {"dim": 2, "start": 1, "end": 5, "step": 2}, [R(2, 3, 5)])
case("slice/dim1_3d", "slice", {"dim": 1, "start": 1, "end": 3, "step": 1}, [R(2, 4, 3)])

case("chunk/uneven_first", "chunk", {"chunks": 2, "dim": 0, "index": 0}, [R(5, 3)])
case("chunk/uneven_last", "chunk", {"chunks": 2, "dim": 0, "index": 1}, [R(5, 3)])
case("chunk/dim1", "chunk", {"chunks": 3, "dim": 1, "index": 2}, [R(2, 6)])
case("chunk/dim2_3d", "chunk", {"chunks": 2, "dim": 2, "index": 1}, [R(2, 3, 4)])

case("split/first", "split", {"split_size": 2, "dim": 0, "index": 0}, [R(5, 3)])
case("split/uneven_last", "split", {"split_size": 2, "dim": 0, "index": 2}, [R(5, 3)])
case("split/dim1_mid", "split", {"split_size": 3, "dim": 1, "index": 1}, [R(3, 7)])
case("split/dim1_last", "split", {"split_size": 3, "dim": 1, "index": 2}, [R(3, 7)])

case("cat/dim0_two", "cat", {"dim": 0}, [R(2, 3), R(1, 3)])
case("cat/dim0_three", "cat", {"dim": 0}, [R(2, 3), R(1, 3), R(3, 3)])
case("cat/dim1_two", "cat", {"dim": 1}, [R(2, 3), R(2, 1)])
case("cat/dim1_three_3d", "cat", {"dim": 1}, [R(2, 1, 3), R(2, 2, 3), R(2, 3, 3)])

case("stack/dim0", "stack", {"dim": 0}, [R(2, 3), R(2, 3), R(2, 3)])
case("stack/dim1", "stack", {"dim": 1}, [R(2, 3), R(2, 3), R(2, 3)])
case("stack/dim2_trailing", "stack", {"dim": 2}, [R(2, 3), R(2, 3), R(2, 3)])

# index ops
case("index_select/dim0", "index_select", {"dim": 0}, [R(4, 3), I([3, 0, 3, 1])])
case("index_select/dim1", "index_select", {"dim": 1}, [R(3, 5), I([4, 4, 0, 2])])
case("index_select/dim1_3d", "index_select", {"dim": 1}, [R(2, 4, 3), I([2, 0, 2])])

case("embedding/1d", "embedding", {"padding_idx": None}, [R(6, 4), I([1, 3, 1, 0, 5])])
case("embedding/2d", "embedding", {"padding_idx": None},
     [R(6, 4), I([[2, 0, 2], [5, 5, 1]])])
case("embedding/padding_1d", "embedding", {"padding_idx": 2},
     [R(6, 4), I([2, 3, 2, 0, 3])])
case("embedding/padding_2d", "embedding", {"padding_idx": 0},
     [R(5, 3), I([[0, 4, 1], [1, 0, 4]])])

# where / masked_fill
case("where/broadcast_b", "where", {},
     [M([[1, 0, 1], [0, 0, 1]]), R(2, 3), R(3)])
case("where/same", "where", {},
     [M([[0, 1, 1], [1, 0, 0]]), R(2, 3), R(2, 3)])
case("where/cond_col_b_0d", "where", {},
     [M([[1], [0]]), R(2, 3), R()])
case("where/cond_row_3d", "where", {},
     [M([1, 0, 1, 0]), R(2, 1, 4), R(2, 3, 1)])

case("masked_fill/col_mask", "masked_fill", {"value": -1.5},
     [R(2, 3), M([[0], [1]])])
case("masked_fill/same", "masked_fill", {"value": 0.0},
     [R(2, 3), M([[1, 0, 0], [0, 1, 1]])])
case("masked_fill/3d_bcast", "masked_fill", {"value": 2.5},
     [R(2, 3, 4), M([[1], [0], [1]])])

# reductions
for op in ("sum", "mean"):
    case(f"{op}/all_2d", op, {"dims": None, "keepdim": False}, [R(3, 4)])
    case(f"{op}/all_3d", op, {"dims": None, "keepdim": False}, [R(2, 3, 4)])
    case(f"{op}/dim1", op, {"dims": [1], "keepdim": False}, [R(3, 4)])
    case(f"{op}/dim0_keep", op, {"dims": [0], "keepdim": True}, [R(3, 4)])
    case(f"{op}/dims02_keep_3d", op, {"dims": [0, 2], "keepdim": True}, [R(2, 3, 4)])
    case(f"{op}/dims02_3d", op, {"dims": [0, 2], "keepdim": False}, [R(2, 3, 4)])
    case(f"{op}/neg_dim", op, {"dims": [-1], "keepdim": False}, [R(2, 3, 4)])

case("max/all_2d", "max", {"dim": None, "keepdim": False}, [D(3, 4)])
case("max/all_3d", "max", {"dim": None, "keepdim": False}, [D(2, 3, 4)])
case("max/dim1", "max", {"dim": 1, "keepdim": False}, [D(3, 4)])
case("max/dim0_keep", "max", {"dim": 0, "keepdim": True}, [D(3, 4)])
case("max/dim1_3d_keep", "max", {"dim": 1, "keepdim": True}, [D(2, 3, 4)])
case("max/neg_dim_3d", "max", {"dim": -1, "keepdim": False}, [D(2, 3, 4)])

# softmax family
for op in ("softmax", "log_softmax"):
    case(f"{op}/2d_dim1", op, {"dim": 1}, [R(3, 4)])
    case(f"{op}/2d_dim0", op, {"dim": 0}, [R(3, 4)])
    case(f"{op}/3d_last", op, {"dim": -1}, [R(2, 3, 4)])

# losses
for op, gen in (("cross_entropy", R), ("nll_loss", LP)):
    case(f"{op}/mean", op, {"reduction": "mean", "ignore_index": -100},
         [gen(4, 5), I([1, 0, 4, 2])])
    case(f"{op}/sum", op, {"reduction": "sum", "ignore_index": -100},
         [gen(4, 5), I([3, 3, 0, 1])])
    case(f"{op}/none", op, {"reduction": "none", "ignore_index": -100},
         [gen(3, 4), I([2, 0, 3])])
    case(f"{op}/mean_ignore_default", op, {"reduction": "mean", "ignore_index": -100},
         [gen(5, 3), I([0, -100, 2, 1, 2])])
    case(f"{op}/mean_ignore_1", op, {"reduction": "mean", "ignore_index": 1},
         [gen(5, 4), I([1, 0, 3, 1, 2])])
    case(f"{op}/sum_ignore_1", op, {"reduction": "sum", "ignore_index": 1},
         [gen(4, 3), I([1, 2, 0, 1])])
    case(f"{op}/none_ignore_1", op, {"reduction": "none", "ignore_index": 1},
         [gen(4, 3), I([0, 1, 2, 1])])

case("mse_loss/mean", "mse_loss", {"reduction": "mean"}, [R(3, 4), R(3, 4)])
case("mse_loss/sum", "mse_loss", {"reduction": "sum"}, [R(3, 4), R(3, 4)])
case("mse_loss/none", "mse_loss", {"reduction": "none"}, [R(2, 3), R(2, 3)])
case("mse_loss/mean_3d", "mse_loss", {"reduction": "mean"}, [R(2, 3, 4), R(2, 3, 4)])

# Cases added later go below, after every earlier one: inputs and grad_outputs come from one seeded
# stream in table order, so appending leaves the existing cases' values unchanged.

case("unsqueeze/front", "unsqueeze", {"dim": 0}, [R(3, 4)])
case("unsqueeze/middle", "unsqueeze", {"dim": 1}, [R(3, 4)])
case("unsqueeze/neg_end", "unsqueeze", {"dim": -1}, [R(2, 3)])
case("unsqueeze/0d", "unsqueeze", {"dim": 0}, [R()])

case("squeeze/middle", "squeeze", {"dim": 1}, [R(3, 1, 4)])
case("squeeze/front", "squeeze", {"dim": 0}, [R(1, 3)])
case("squeeze/neg_end", "squeeze", {"dim": -1}, [R(2, 3, 1)])

# linear: x [..., in], weight [out, in], bias [out]
case("linear/2d", "linear", {"bias": True}, [R(4, 3), R(5, 3), R(5)])
case("linear/3d", "linear", {"bias": True}, [R(2, 3, 4), R(2, 4), R(2)])
case("linear/2d_nobias", "linear", {"bias": False}, [R(4, 3), R(5, 3)])
case("linear/row_nobias", "linear", {"bias": False}, [R(1, 6), R(3, 6)])

# layer_norm over the last norm_dims dims; weight and bias shaped like those dims when "affine"
case("layer_norm/last", "layer_norm", {"norm_dims": 1, "eps": 1e-5, "affine": True}, [R(2, 3, 5), R(5), R(5)])
case("layer_norm/last2", "layer_norm", {"norm_dims": 2, "eps": 1e-5, "affine": True},
     [R(2, 3, 5), R(3, 5), R(3, 5)])
case("layer_norm/last_noaffine", "layer_norm", {"norm_dims": 1, "eps": 1e-5, "affine": False}, [R(4, 6)])
case("layer_norm/last2_noaffine_eps", "layer_norm", {"norm_dims": 2, "eps": 1e-3, "affine": False},
     [R(2, 3, 4)])

# fused recurrent steps: B = 3, H = 4; masks hold row 1
STEP_MASK = M([1, 0, 1])
for act in ("tanh", "relu"):
    case(f"rnn_step/{act}", "rnn_step", {"nonlinearity": act, "bias": True, "mask": False},
         [R(3, 4), R(3, 4), R(4, 4), R(4)])
    case(f"rnn_step/{act}_nobias_mask", "rnn_step", {"nonlinearity": act, "bias": False, "mask": True},
         [R(3, 4), R(3, 4), R(4, 4), STEP_MASK])
case("rnn_step/tanh_mask", "rnn_step", {"nonlinearity": "tanh", "bias": True, "mask": True},
     [R(3, 4), R(3, 4), R(4, 4), R(4), STEP_MASK])

for out in ("h", "c"):
    case(f"lstm_step/{out}", "lstm_step", {"output": out, "bias": True, "mask": False},
         [R(3, 16), R(3, 4), R(3, 4), R(16, 4), R(16)])
    case(f"lstm_step/{out}_nobias", "lstm_step", {"output": out, "bias": False, "mask": False},
         [R(3, 16), R(3, 4), R(3, 4), R(16, 4)])
    case(f"lstm_step/{out}_mask", "lstm_step", {"output": out, "bias": True, "mask": True},
         [R(3, 16), R(3, 4), R(3, 4), R(16, 4), R(16), STEP_MASK])

case("gru_step/bias", "gru_step", {"bias": True, "mask": False}, [R(3, 12), R(3, 4), R(12, 4), R(12)])
case("gru_step/nobias", "gru_step", {"bias": False, "mask": False}, [R(3, 12), R(3, 4), R(12, 4)])
case("gru_step/mask", "gru_step", {"bias": True, "mask": True},
     [R(3, 12), R(3, 4), R(12, 4), R(12), STEP_MASK])

# helpers for the linear-recurrence cells (issue 13): activations, logaddexp, running sums, causal conv1d
for op in ("logsigmoid", "silu"):
    for suffix, shape in UNARY_SHAPES:
        case(f"{op}/{suffix}", op, {}, [R(*shape)])
case("logsigmoid/large", "logsigmoid", {}, [X([[-40.0, -5.0, 0.5], [5.0, 30.0, 40.0]])])
case("silu/large", "silu", {}, [X([[-40.0, -5.0, 0.5], [5.0, 30.0, 40.0]])])
for approx in ("none", "tanh"):
    for suffix, shape in UNARY_SHAPES:
        case(f"gelu/{approx}_{suffix}", "gelu", {"approximate": approx}, [R(*shape)])
    case(f"gelu/{approx}_wide", "gelu", {"approximate": approx}, [X([[-6.0, -2.5, -0.7], [0.3, 1.5, 6.0]])])

for suffix, a, b in BINARY_SHAPES:
    case(f"logaddexp/{suffix}", "logaddexp", {}, [R(*a), R(*b)])
case("logaddexp/large", "logaddexp", {},
     [X([[1000.0, -1000.0, 5.0], [-998.0, 0.5, 30.0]]), X([[999.0, -1001.5, -5.0], [-999.5, 0.5, -30.0]])])

for op in ("cumsum", "logcumsumexp"):
    case(f"{op}/1d", op, {"dim": 0}, [R(5)])
    case(f"{op}/2d_dim0", op, {"dim": 0}, [R(4, 3)])
    case(f"{op}/2d_dim1", op, {"dim": 1}, [R(3, 5)])
    case(f"{op}/3d_dim0", op, {"dim": 0}, [R(4, 2, 3)])
    case(f"{op}/3d_dim1", op, {"dim": 1}, [R(2, 4, 3)])
    case(f"{op}/3d_neg1", op, {"dim": -1}, [R(2, 3, 4)])
    case(f"{op}/0d", op, {"dim": 0}, [R()])
case("logcumsumexp/large", "logcumsumexp", {"dim": 1},
     [X([[1000.0, -1000.0, 999.0, 1001.0], [-1000.0, -999.0, -1001.0, 2.0]])])

# conv1d: x [T, B, C], weight [C, K], bias [C] when "bias"
case("conv1d/k3_bias", "conv1d", {"bias": True}, [R(5, 2, 3), R(3, 3), R(3)])
case("conv1d/k3_nobias", "conv1d", {"bias": False}, [R(5, 2, 3), R(3, 3)])
case("conv1d/k1_bias", "conv1d", {"bias": True}, [R(4, 2, 3), R(3, 1), R(3)])
case("conv1d/k1_nobias", "conv1d", {"bias": False}, [R(3, 1, 2), R(2, 1)])
case("conv1d/k_gt_t_bias", "conv1d", {"bias": True}, [R(2, 2, 3), R(3, 4), R(3)])
case("conv1d/k_gt_t_nobias", "conv1d", {"bias": False}, [R(3, 1, 2), R(2, 5)])
case("conv1d/k2_b1", "conv1d", {"bias": True}, [R(6, 1, 4), R(4, 2), R(4)])

# linear recurrences as one op (ops/scan): a [T, B, H], [T, 1, H], [1, 1, H] or [H]; b [T, B, H]; h0 [B, H]
def _scan_params(h0=False, reverse=False, resets=None, lengths=None):
    return {"h0": h0, "reverse": reverse, "resets": resets, "lengths": lengths}


_RESETS_6x2 = [[0, 0], [0, 1], [1, 0], [0, 0], [0, 0], [0, 1]]
for _op in ("linear_scan", "log_linear_scan"):
    case(f"{_op}/full", _op, _scan_params(), [R(5, 2, 3), R(5, 2, 3)])
    case(f"{_op}/h0", _op, _scan_params(h0=True), [R(5, 2, 3), R(5, 2, 3), R(2, 3)])
    case(f"{_op}/per_step_a", _op, _scan_params(h0=True), [R(5, 1, 3), R(5, 2, 3), R(2, 3)])
    case(f"{_op}/const_a", _op, _scan_params(h0=True), [R(1, 1, 3), R(4, 2, 3), R(2, 3)])
    case(f"{_op}/vector_a", _op, _scan_params(), [R(3), R(4, 2, 3)])
    case(f"{_op}/reverse", _op, _scan_params(h0=True, reverse=True), [R(5, 2, 3), R(5, 2, 3), R(2, 3)])
    case(f"{_op}/resets_lengths", _op, _scan_params(h0=True, resets=_RESETS_6x2, lengths=[6, 4]),
         [R(6, 2, 3), R(6, 2, 3), R(2, 3)])
    case(f"{_op}/reverse_resets_lengths", _op,
         _scan_params(h0=True, reverse=True, resets=_RESETS_6x2, lengths=[3, 6]), [R(6, 1, 3), R(6, 2, 3), R(2, 3)])

# scaled dot-product attention (ops/attention): q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev]; PyTorch 2's
# F.scaled_dot_product_attention written out (Debian's torch 1.13 lacks it): softmax(q k^T * scale) v, with
# is_causal's top-left mask. Masks and key padding are checked in tests/ops/test_attention.cpp
# (tools/make_attention_fixtures.py).
def _sdpa(x, p):
    q, k, v = x
    scale = p["scale"] if p["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    if p["causal"]:
        Tq, Tk = s.shape[-2], s.shape[-1]
        s = s.masked_fill(~torch.ones(Tq, Tk, dtype=torch.bool).tril(), float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


case("scaled_dot_product_attention/4d", "scaled_dot_product_attention", {"causal": False, "scale": None},
     [R(2, 2, 3, 4), R(2, 2, 5, 4), R(2, 2, 5, 3)])
case("scaled_dot_product_attention/3d_causal", "scaled_dot_product_attention", {"causal": True, "scale": None},
     [R(2, 4, 3), R(2, 4, 3), R(2, 4, 2)])
case("scaled_dot_product_attention/2d_scale", "scaled_dot_product_attention", {"causal": False, "scale": 0.4},
     [R(3, 4), R(6, 4), R(6, 5)])

# ---------------------------------------------------------------------------
# Evaluation and output.
# ---------------------------------------------------------------------------


def encode(t):
    if t is None:
        return None
    t = t.detach().contiguous()
    if t.dtype == torch.int64:
        dtype, data = "int64", [int(v) for v in t.reshape(-1).tolist()]
    else:
        assert t.dtype == torch.float64, t.dtype
        data = [float(v) for v in t.reshape(-1).tolist()]
        assert all(math.isfinite(v) for v in data), "non-finite value"
        dtype = "float64"
    return {"shape": list(t.shape), "dtype": dtype, "data": data}


def run_case(name, op, params, specs):
    fn = OPS[op]
    made = [make_input(s) for s in specs]
    inputs = [t.clone().requires_grad_(diff) for t, diff in made]
    diff_idx = [i for i, (_, diff) in enumerate(made) if diff]

    out = fn(inputs, params)
    grad_output = torch.randn(out.shape)
    grads = torch.autograd.grad(out, [inputs[i] for i in diff_idx], grad_output)

    # Independent check that the chosen inputs are at differentiable points.
    # (Skipped for embedding with padding_idx: its padding-row gradient is
    # zero by definition, so it disagrees with finite differences.)
    def partial(*diff_inputs):
        xs = list(inputs)
        for i, d in zip(diff_idx, diff_inputs):
            xs[i] = d
        return fn(xs, params)

    probe = tuple(inputs[i].detach().clone().requires_grad_(True) for i in diff_idx)
    skip = op == "embedding" and params["padding_idx"] is not None
    if not skip and not torch.autograd.gradcheck(partial, probe, eps=1e-6, atol=1e-5, rtol=1e-4,
                                    raise_exception=False):
        raise SystemExit(f"gradcheck failed for case {name}")

    grad_list = [None] * len(inputs)
    for i, g in zip(diff_idx, grads):
        grad_list[i] = g
    return {
        "name": name,
        "op": op,
        "params": params,
        "inputs": [encode(t) for t in inputs],
        "output": encode(out),
        "grad_output": encode(grad_output),
        "grads": [encode(g) for g in grad_list],
    }


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(SEED)

    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"

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
        assert len(c["grads"]) == len(c["inputs"]), c["name"]
        for t in c["inputs"] + [c["output"], c["grad_output"]] + c["grads"]:
            if t is not None:
                assert len(t["data"]) == math.prod(t["shape"]), c["name"]
        assert c == json.loads(dumps(r)), c["name"]

    print(f"wrote {len(loaded['cases'])} cases to {out_path} "
          f"({os.path.getsize(out_path)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
