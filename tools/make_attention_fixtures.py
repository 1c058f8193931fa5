#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's attention layers.

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_attention_fixtures.py

writes ``tests/fixtures/attention.json``.  An optional argument overrides the
output path.  The output is deterministic (fixed torch.manual_seed, one
thread, float64 everywhere, every float written with repr so it round-trips
exactly).

Sections and what produces them:

* "sdpa": scaled dot-product attention with PyTorch 2.x semantics
  (torch.nn.functional.scaled_dot_product_attention, dropout_p=0):

      weights = softmax(q @ k^T * scale + bias),  out = weights @ v
      scale   = 1 / sqrt(q.size(-1)) unless given
      bias    = 0; -inf where is_causal and key > query (top-left tril);
                for a bool attn_mask -inf where the mask is False
                (True = may attend); a float attn_mask is added as is.
      attn_mask broadcasts against [..., Tq, Tk].

  When this torch has F.scaled_dot_product_attention (>= 2.0) "out" comes
  from it; otherwise (Debian bookworm ships 1.13) from the formula above,
  cross-checked against 1.13's prototype F._scaled_dot_product_attention
  where that supports the case (no float mask, default scale).  "weights" is
  always the formula's softmax.
* "mha": torch.nn.MultiheadAttention in train() mode (PyTorch's reference
  path), cross-checked against a hand-written per-head implementation.
* "encoder_layer": torch.nn.TransformerEncoderLayer in train() mode
  (dropout 0), cross-checked against a hand-written implementation.
* "additive" (Bahdanau) and "multiplicative" (Luong): no PyTorch module; the
  formulas are written here in torch:

      additive:  score[b,t] = v.weight @ tanh(query_proj(q[b]) + key_proj(keys[b,t]))
                 query_proj: Linear(Dq, H, bias=False), key_proj: Linear(Dk, H),
                 v: Linear(H, 1, bias=False)
      multiplicative "dot":        score[b,t] = q[b] . keys[b,t]          (Dq == Dk)
                     "scaled_dot": score[b,t] = q[b] . keys[b,t] / sqrt(Dk)
                     "general":    score[b,t] = q[b] . (W keys[b,t]),
                                   W = key_proj.weight [Dq, Dk], no bias
      score[b,t] = -inf where key_padding_mask[b,t] == 1
      weights = softmax over t,  context[b] = sum_t weights[b,t] * values[b,t]

Masks are written as int64 tensors (1 = True in PyTorch's bool mask) unless
their dtype says float64.  Every case has a random normal upstream gradient
and grads = d sum(out * grad_out) / d (each input and parameter).  Module
parameters keep PyTorch's default initialisation (drawn in float64) except
that the MHA biases (in_proj_bias, out_proj.bias, default zeros) and the
LayerNorm weights/biases (default ones/zeros) are set to random values so a
missing or misapplied affine step shows up.  Additive/multiplicative
parameters are random normal * 0.5.

File format (T is {"shape": [...], "dtype": "float64" | "int64", "data":
[...]}, flattened row-major; M is a mask T or null)::

    {"torch_version": "...",
     "sdpa": [{"name", "q": T, "k": T, "v": T, "attn_mask": M,
               "is_causal": bool, "scale": number | null,
               "out": T, "weights": T ([..., Tq, Tk]), "grad_out": T,
               "grads": {"q", "k", "v"}}, ...],
     "mha": [{"name", "embed_dim", "num_heads", "bias", "batch_first",
              "self_attention": bool, "state_dict": {name: T},
              "query": T, "key": T, "value": T,
              "key_padding_mask": M (1 = ignore that key),
              "attn_mask": M (int64: 1 = NOT allowed; float64: additive),
              "attn_mask_dtype": "int64" | "float64" | null,
              "is_causal": bool, "average_attn_weights": bool,
              "out": T, "weights": T ([B, Tq, Tk], or [B, H, Tq, Tk] when not
              averaged; batch first whatever batch_first is),
              "grad_out": T, "grads": {"query", "key", "value", state_dict names}}],
     "encoder_layer": [{"name", "d_model", "nhead", "dim_feedforward",
              "activation": "relu" | "gelu", "layer_norm_eps", "batch_first",
              "norm_first", "state_dict": {name: T}, "src": T,
              "src_mask": M (1 = not allowed), "src_key_padding_mask": M
              (1 = ignore), "out": T, "grad_out": T,
              "grads": {"src", state_dict names}}],
     "additive": [{"name", "query_dim", "key_dim", "hidden", "state_dict",
              "query": T [B, Dq], "keys": T [B, T, Dk], "values": T [B, T, Dv],
              "values_are_keys": bool, "key_padding_mask": M [B, T],
              "context": T [B, Dv], "weights": T [B, T], "grad_context": T,
              "grads": {"query", "keys", "values", state_dict names}}],
     "multiplicative": [same as additive but "score": "dot" | "general" |
              "scaled_dot" and no "hidden"; state_dict is {} unless "general"]}

For self-attention MHA cases the same tensor is passed as query, key and
value: "key"/"value" repeat "query" and grads has only "query" (the total).
When values_are_keys the same tensor is passed as keys and values: grads has
no "values" and "keys" holds the total over both uses.  Only the output is in
the loss (attention weights are not).
"""

import inspect
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

SEED = 20261215
DEFAULT_OUT = os.path.join("tests", "fixtures", "attention.json")
F64 = torch.float64
TOL = 1e-10


def as_json(t):
    if t is None:
        return None
    t = t.detach()
    if t.dtype == torch.int64:
        return {"shape": list(t.shape), "dtype": "int64", "data": [int(v) for v in t.flatten().tolist()]}
    return {"shape": list(t.shape), "dtype": "float64", "data": [float(repr(float(v))) for v in t.flatten().tolist()]}


def randn(*shape, grad=True):
    t = torch.randn(*shape, dtype=F64)
    return t.requires_grad_() if grad else t


def check_close(a, b, what):
    err = (a - b).abs().max().item()
    assert err < TOL, f"{what}: max abs diff {err}"


def grads_of(out, grad_out, named):
    """d sum(out * grad_out) / d each tensor in named (dict name -> tensor)."""
    names = list(named)
    gs = torch.autograd.grad(out, [named[n] for n in names], grad_out, allow_unused=True)
    return {n: as_json(g if g is not None else torch.zeros_like(named[n])) for n, g in zip(names, gs)}


def padding_mask(B, T, pads):
    """int64 [B, T] with the last pads[b] positions of row b set to 1."""
    m = torch.zeros(B, T, dtype=torch.int64)
    for b, p in enumerate(pads):
        if p:
            m[b, T - p:] = 1
    return m


# ---------------------------------------------------------------- sdpa

def sdpa_reference(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """PyTorch 2.x scaled_dot_product_attention (dropout 0); returns (out, weights)."""
    L, S = q.size(-2), k.size(-2)
    s = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    bias = torch.zeros(L, S, dtype=q.dtype)
    if is_causal:
        allowed = torch.ones(L, S, dtype=torch.bool).tril()
        bias = bias.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias.masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask
    w = torch.softmax(q @ k.transpose(-2, -1) * s + bias, dim=-1)
    return w @ v, w


def sdpa_case(name, qs, ks, vs, mask_kind=None, mask_shape=None, is_causal=False, scale=None):
    q, k, v = randn(*qs), randn(*ks), randn(*vs)
    mask_json, torch_mask = None, None
    if mask_kind == "bool":
        m = (torch.rand(*mask_shape) > 0.4).to(torch.int64)
        cols = torch.randint(0, mask_shape[-1], mask_shape[:-1])
        m.scatter_(-1, cols.unsqueeze(-1), 1)  # every row may attend somewhere
        assert (m == 0).any() and (m.sum(-1) > 0).all()
        mask_json, torch_mask = as_json(m), m.bool()
    elif mask_kind == "float":
        torch_mask = randn(*mask_shape, grad=False)
        mask_json = as_json(torch_mask)

    ref_out, weights = sdpa_reference(q, k, v, torch_mask, is_causal, scale)
    if hasattr(F, "scaled_dot_product_attention"):
        kw = {} if scale is None else {"scale": scale}
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=torch_mask, dropout_p=0.0,
                                             is_causal=is_causal, **kw)
        check_close(out, ref_out, f"sdpa/{name} vs reference")
    else:
        out = ref_out
        if hasattr(F, "_scaled_dot_product_attention") and scale is None and mask_kind != "float":
            o2, w2 = F._scaled_dot_product_attention(q, k, v, torch_mask, 0.0, True, is_causal)
            check_close(o2, out, f"sdpa/{name} vs 1.13 prototype out")
            check_close(w2, weights, f"sdpa/{name} vs 1.13 prototype weights")
    grad_out = randn(*out.shape, grad=False)
    return {
        "name": name, "q": as_json(q), "k": as_json(k), "v": as_json(v),
        "attn_mask": mask_json, "is_causal": is_causal, "scale": scale,
        "out": as_json(out), "weights": as_json(weights), "grad_out": as_json(grad_out),
        "grads": grads_of(out, grad_out, {"q": q, "k": k, "v": v}),
    }


def sdpa_cases():
    return [
        sdpa_case("plain", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 3)),
        sdpa_case("bool_mask", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 3), "bool", (5, 6)),
        sdpa_case("float_mask", (2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 3), "float", (2, 1, 5, 6)),
        sdpa_case("causal", (2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4), is_causal=True),
        sdpa_case("scale", (3, 4, 8), (3, 7, 8), (3, 7, 2), scale=0.3),
    ]


# ---------------------------------------------------------------- mha

def mha_reference(query, key, value, p, H, batch_first, kpm, attn_mask, average):
    """Per-head MHA from the definition; masks are torch bool (True = blocked) or float."""
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    B, L, E = query.shape
    S = key.shape[1]
    hd = E // H
    Wq, Wk, Wv = p["in_proj_weight"].chunk(3)
    bq, bk, bv = p["in_proj_bias"].chunk(3) if "in_proj_bias" in p else (None, None, None)
    heads = lambda x, n: x.reshape(B, n, H, hd).transpose(1, 2)  # [B, H, n, hd]
    Q = heads(F.linear(query, Wq, bq), L)
    K = heads(F.linear(key, Wk, bk), S)
    V = heads(F.linear(value, Wv, bv), S)
    scores = Q @ K.transpose(-2, -1) / math.sqrt(hd)
    if attn_mask is not None:
        scores = scores.masked_fill(attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    if kpm is not None:
        scores = scores.masked_fill(kpm.view(B, 1, 1, S), float("-inf"))
    w = torch.softmax(scores, dim=-1)
    out = (w @ V).transpose(1, 2).reshape(B, L, E)
    out = F.linear(out, p["out_proj.weight"], p.get("out_proj.bias"))
    if not batch_first:
        out = out.transpose(0, 1)
    return out, (w.mean(dim=1) if average else w)


def mha_case(name, E, H, bias, batch_first, qshape, kvshape=None, self_attention=False,
             kpm=None, attn_mask=None, average=True, is_causal=False):
    mod = torch.nn.MultiheadAttention(E, H, dropout=0.0, bias=bias, batch_first=batch_first, dtype=F64)
    mod.train()
    with torch.no_grad():
        for n, prm in mod.named_parameters():
            if n.endswith("bias"):
                prm.copy_(torch.randn(prm.shape, dtype=F64) * 0.5)
    params = dict(mod.named_parameters())
    assert list(params) == list(mod.state_dict()), name

    query = randn(*qshape)
    if self_attention:
        key = value = query
    else:
        key, value = randn(*kvshape), randn(*kvshape)

    kpm_t = kpm.bool() if kpm is not None else None
    if attn_mask is None:
        mask_t, mask_dtype = None, None
    elif attn_mask.dtype == torch.int64:
        mask_t, mask_dtype = attn_mask.bool(), "int64"
    else:
        mask_t, mask_dtype = attn_mask, "float64"
    kw = {}
    if is_causal:
        assert mask_t is not None, "PyTorch needs the causal mask passed as attn_mask too"
        if "is_causal" in inspect.signature(mod.forward).parameters:
            kw["is_causal"] = True
    out, weights = mod(query, key, value, key_padding_mask=kpm_t, need_weights=True, attn_mask=mask_t,
                       average_attn_weights=average, **kw)
    ref_out, ref_w = mha_reference(query, key, value, params, H, batch_first, kpm_t, mask_t, average)
    check_close(out, ref_out, f"mha/{name} out vs reference")
    check_close(weights, ref_w, f"mha/{name} weights vs reference")

    grad_out = randn(*out.shape, grad=False)
    inputs = {"query": query} if self_attention else {"query": query, "key": key, "value": value}
    return {
        "name": name, "embed_dim": E, "num_heads": H, "bias": bias, "batch_first": batch_first,
        "self_attention": self_attention,
        "state_dict": {n: as_json(t) for n, t in mod.state_dict().items()},
        "query": as_json(query), "key": as_json(key), "value": as_json(value),
        "key_padding_mask": as_json(kpm), "attn_mask": as_json(attn_mask), "attn_mask_dtype": mask_dtype,
        "is_causal": is_causal, "average_attn_weights": average,
        "out": as_json(out), "weights": as_json(weights), "grad_out": as_json(grad_out),
        "grads": grads_of(out, grad_out, {**inputs, **params}),
    }


def mha_cases():
    cross_kpm = torch.tensor([[0, 0, 1, 0, 0, 1], [0, 0, 0, 1, 1, 1]], dtype=torch.int64)
    causal5 = torch.ones(5, 5, dtype=torch.int64).triu(1)
    return [
        mha_case("self_batch_first", 8, 2, True, True, (3, 5, 8), self_attention=True),
        mha_case("cross_seq_first", 8, 4, True, False, (4, 2, 8), (6, 2, 8), kpm=cross_kpm, average=False),
        mha_case("causal_padded", 6, 3, True, True, (2, 5, 6), self_attention=True,
                 kpm=padding_mask(2, 5, [0, 2]), attn_mask=causal5),
        mha_case("float_mask_nobias", 4, 1, False, True, (2, 3, 4), (2, 4, 4),
                 attn_mask=torch.randn(3, 4, dtype=F64)),
    ]


# ---------------------------------------------------------------- encoder layer

def encoder_reference(src, p, nhead, act, eps, batch_first, norm_first, src_mask, kpm):
    d = src.shape[-1]
    mha_p = {k[len("self_attn."):]: v for k, v in p.items() if k.startswith("self_attn.")}
    ln = lambda x, i: F.layer_norm(x, (d,), p[f"norm{i}.weight"], p[f"norm{i}.bias"], eps)
    sa = lambda x: mha_reference(x, x, x, mha_p, nhead, batch_first, kpm, src_mask, True)[0]
    ff = lambda x: F.linear(act(F.linear(x, p["linear1.weight"], p["linear1.bias"])),
                            p["linear2.weight"], p["linear2.bias"])
    x = src
    if norm_first:
        x = x + sa(ln(x, 1))
        x = x + ff(ln(x, 2))
    else:
        x = ln(x + sa(x), 1)
        x = ln(x + ff(x), 2)
    return x


def encoder_case(name, d, nhead, ff, activation, batch_first, norm_first, src_shape, src_mask=None, kpm=None):
    eps = 1e-5
    mod = torch.nn.TransformerEncoderLayer(d, nhead, dim_feedforward=ff, dropout=0.0, activation=activation,
                                           layer_norm_eps=eps, batch_first=batch_first, norm_first=norm_first,
                                           dtype=F64)
    mod.train()
    with torch.no_grad():
        for n, prm in mod.named_parameters():
            if n.startswith("norm") and n.endswith("weight"):
                prm.copy_(1.0 + 0.3 * torch.randn(prm.shape, dtype=F64))
            elif n.startswith("norm") or n in ("self_attn.in_proj_bias", "self_attn.out_proj.bias"):
                prm.copy_(0.3 * torch.randn(prm.shape, dtype=F64))
    params = dict(mod.named_parameters())
    assert list(params) == list(mod.state_dict()), name

    src = randn(*src_shape)
    mask_t = src_mask.bool() if src_mask is not None else None
    kpm_t = kpm.bool() if kpm is not None else None
    out = mod(src, src_mask=mask_t, src_key_padding_mask=kpm_t)
    act = {"relu": F.relu, "gelu": F.gelu}[activation]
    ref = encoder_reference(src, params, nhead, act, eps, batch_first, norm_first, mask_t, kpm_t)
    check_close(out, ref, f"encoder_layer/{name} vs reference")

    grad_out = randn(*out.shape, grad=False)
    return {
        "name": name, "d_model": d, "nhead": nhead, "dim_feedforward": ff, "activation": activation,
        "layer_norm_eps": eps, "batch_first": batch_first, "norm_first": norm_first,
        "state_dict": {n: as_json(t) for n, t in params.items()},
        "src": as_json(src), "src_mask": as_json(src_mask), "src_key_padding_mask": as_json(kpm),
        "out": as_json(out), "grad_out": as_json(grad_out),
        "grads": grads_of(out, grad_out, {"src": src, **params}),
    }


def encoder_cases():
    return [
        encoder_case("post_norm_relu", 8, 2, 16, "relu", True, False, (2, 4, 8)),
        encoder_case("pre_norm_gelu", 8, 4, 12, "gelu", False, True, (5, 2, 8),
                     src_mask=torch.ones(5, 5, dtype=torch.int64).triu(1), kpm=padding_mask(2, 5, [1, 0])),
    ]


# ---------------------------------------------------------------- additive / multiplicative

def attend(scores, values, kpm):
    if kpm is not None:
        scores = scores.masked_fill(kpm.bool(), float("-inf"))
    w = torch.softmax(scores, dim=-1)  # [B, T]
    return torch.bmm(w.unsqueeze(1), values).squeeze(1), w


def pooled_case(kind, name, B, T, Dq, Dk, Dv, values_are_keys, kpm, H=None):
    if kind == "additive":
        p = {"query_proj.weight": 0.5 * randn(H, Dq, grad=False), "key_proj.weight": 0.5 * randn(H, Dk, grad=False),
             "key_proj.bias": 0.5 * randn(H, grad=False), "v.weight": 0.5 * randn(1, H, grad=False)}
    elif kind == "general":
        p = {"key_proj.weight": 0.5 * randn(Dq, Dk, grad=False)}
    else:
        assert Dq == Dk, (kind, Dq, Dk)
        p = {}
    p = {n: t.requires_grad_() for n, t in p.items()}

    query, keys = randn(B, Dq), randn(B, T, Dk)
    values = keys if values_are_keys else randn(B, T, Dv)
    if kind == "additive":
        h = torch.tanh(F.linear(query, p["query_proj.weight"]).unsqueeze(1)
                       + F.linear(keys, p["key_proj.weight"], p["key_proj.bias"]))  # [B, T, H]
        scores = F.linear(h, p["v.weight"]).squeeze(-1)
    elif kind == "general":
        scores = torch.einsum("bq,btq->bt", query, F.linear(keys, p["key_proj.weight"]))
    else:
        scores = torch.einsum("bd,btd->bt", query, keys)
        if kind == "scaled_dot":
            scores = scores / math.sqrt(Dk)
    context, weights = attend(scores, values, kpm)

    grad_context = randn(*context.shape, grad=False)
    inputs = {"query": query, "keys": keys} if values_are_keys else {"query": query, "keys": keys, "values": values}
    case = {"name": name}
    if kind == "additive":
        case.update({"query_dim": Dq, "key_dim": Dk, "hidden": H})
    else:
        case.update({"score": kind, "query_dim": Dq, "key_dim": Dk})
    case.update({
        "state_dict": {n: as_json(t) for n, t in p.items()},
        "query": as_json(query), "keys": as_json(keys), "values": as_json(values),
        "values_are_keys": values_are_keys, "key_padding_mask": as_json(kpm),
        "context": as_json(context), "weights": as_json(weights), "grad_context": as_json(grad_context),
        "grads": grads_of(context, grad_context, {**inputs, **p}),
    })
    return case


def additive_cases():
    return [
        pooled_case("additive", "masked_values_are_keys", 3, 5, 4, 6, 6, True, padding_mask(3, 5, [0, 0, 2]), H=7),
        pooled_case("additive", "unmasked_separate_values", 3, 5, 4, 6, 2, False, None, H=7),
    ]


def multiplicative_cases():
    return [
        pooled_case("general", "general", 3, 5, 4, 6, 6, True, padding_mask(3, 5, [0, 0, 2])),
        pooled_case("dot", "dot", 3, 5, 5, 5, 2, False, None),
        pooled_case("scaled_dot", "scaled_dot", 3, 5, 5, 5, 3, False, padding_mask(3, 5, [0, 0, 2])),
    ]


# ---------------------------------------------------------------- main

def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    doc = {"torch_version": torch.__version__}
    doc["sdpa"] = sdpa_cases()
    doc["mha"] = mha_cases()
    doc["encoder_layer"] = encoder_cases()
    doc["additive"] = additive_cases()
    doc["multiplicative"] = multiplicative_cases()
    sections = [k for k in doc if k != "torch_version"]
    for s in sections:
        names = [c["name"] for c in doc[s]]
        assert len(names) == len(set(names)), f"duplicate case names in {s}"

    dumps = lambda o: json.dumps(o, separators=(",", ":"), allow_nan=False)
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    with open(out_path, "w") as f:
        f.write(dumps(doc))
        f.write("\n")

    # Verify the file loads back unchanged and every tensor's data matches its shape.
    with open(out_path) as f:
        loaded = json.load(f)
    assert loaded == json.loads(dumps(doc))

    def walk(o):
        if isinstance(o, dict):
            if "shape" in o and "data" in o:
                assert len(o["data"]) == math.prod(o["shape"]), o["shape"]
            else:
                for v in o.values():
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(loaded)

    summary = ", ".join(f"{len(doc[s])} {s}" for s in sections)
    print(f"wrote {out_path}: {summary} cases ({os.path.getsize(out_path)} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    main()
