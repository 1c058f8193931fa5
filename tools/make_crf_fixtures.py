#!/usr/bin/python3
"""Generate PyTorch reference fixtures for unroll's linear-chain CRF (nn/crf.hpp).

Usage (from the repository root; needs Debian's python3-torch):

    /usr/bin/python3 tools/make_crf_fixtures.py

writes ``tests/fixtures/crf.json``.  The reference is written here from the
CRF's definition, with the parameter names and layout of the pytorch-crf
package (torchcrf.CRF: start_transitions [K], end_transitions [K],
transitions [K, K] indexed from -> to; time-major emissions [T, B, K]):

    score(y) = start[y_0] + sum_t emissions[t, y_t]
               + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{n-1}]
    nll      = log Z - score(gold),  log Z = logsumexp over all K^n sequences

log Z is computed by the forward algorithm with torch.logsumexp (so autograd
gives the reference gradients), and cross-checked here against a brute-force
enumeration; the Viterbi path is the enumeration's argmax.  Each row uses its
first lengths[b] steps.  Float64, fixed seed, floats written with repr.

File format::

    {"torch_version": "...", "cases": [
      {"name": "...", "num_tags": K,
       "state_dict": {"start_transitions": T, "end_transitions": T, "transitions": T},
       "emissions": T, "tags": T (int64), "lengths": [...],
       "nll": T ([B]), "grads": {"emissions": T, "start_transitions": T, ...},
       "viterbi": [[tag, ...], ...]}]}

grads = d sum(nll) / d (emissions, each parameter).
"""

import itertools
import json
import math
import os
import sys

import torch

SEED = 20261204
DEFAULT_OUT = os.path.join("tests", "fixtures", "crf.json")


def as_json(t):
    t = t.detach()
    if t.dtype == torch.int64:
        return {"shape": list(t.shape), "dtype": "int64", "data": [int(v) for v in t.flatten().tolist()]}
    return {"shape": list(t.shape), "dtype": "float64", "data": [float(repr(float(v))) for v in t.flatten().tolist()]}


def log_partition(start, end, trans, em, lengths):
    T, B, K = em.shape
    out = []
    for b in range(B):
        alpha = start + em[0, b]
        for t in range(1, lengths[b]):
            alpha = torch.logsumexp(alpha.unsqueeze(1) + trans + em[t, b].unsqueeze(0), dim=0)
        out.append(torch.logsumexp(alpha + end, dim=0))
    return torch.stack(out)


def gold_score(start, end, trans, em, tags, lengths):
    out = []
    for b in range(em.shape[1]):
        n = lengths[b]
        s = start[tags[0, b]] + end[tags[n - 1, b]]
        for t in range(n):
            s = s + em[t, b, tags[t, b]]
            if t > 0:
                s = s + trans[tags[t - 1, b], tags[t, b]]
        out.append(s)
    return torch.stack(out)


def enumerate_paths(start, end, trans, em, b, n):
    K = em.shape[2]
    best, best_score, total = None, -math.inf, 0.0
    for y in itertools.product(range(K), repeat=n):
        s = float(start[y[0]] + end[y[-1]])
        for t in range(n):
            s += float(em[t, b, y[t]])
            if t > 0:
                s += float(trans[y[t - 1], y[t]])
        total += math.exp(s)
        if s > best_score:  # strictly greater: ties keep the first (lowest) sequence, as Viterbi does
            best, best_score = list(y), s
    return math.log(total), best


def make_case(name, K, T, B, lengths, gen):
    start = (torch.randn(K, generator=gen, dtype=torch.float64)).requires_grad_()
    end = (torch.randn(K, generator=gen, dtype=torch.float64)).requires_grad_()
    trans = (torch.randn(K, K, generator=gen, dtype=torch.float64)).requires_grad_()
    em = torch.randn(T, B, K, generator=gen, dtype=torch.float64).requires_grad_()
    tags = torch.randint(0, K, (T, B), generator=gen, dtype=torch.int64)
    nll = log_partition(start, end, trans, em, lengths) - gold_score(start, end, trans, em, tags, lengths)
    nll.sum().backward()
    viterbi = []
    with torch.no_grad():
        log_z = log_partition(start, end, trans, em, lengths)
        for b in range(B):
            z, best = enumerate_paths(start, end, trans, em, b, lengths[b])
            assert abs(z - float(log_z[b])) < 1e-9, (name, b, z, float(log_z[b]))
            viterbi.append(best)
    return {
        "name": name,
        "num_tags": K,
        "state_dict": {"start_transitions": as_json(start), "end_transitions": as_json(end),
                       "transitions": as_json(trans)},
        "emissions": as_json(em),
        "tags": as_json(tags),
        "lengths": lengths,
        "nll": as_json(nll),
        # A parameter no score reached (transitions when every row has one step) has gradient zero.
        "grads": {name: as_json(p.grad if p.grad is not None else torch.zeros_like(p))
                  for name, p in [("emissions", em), ("start_transitions", start), ("end_transitions", end),
                                  ("transitions", trans)]},
        "viterbi": viterbi,
    }


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    gen = torch.Generator().manual_seed(SEED)
    cases = [
        make_case("K3 T4 B3 lengths 4,1,3", 3, 4, 3, [4, 1, 3], gen),
        make_case("K5 T6 B2 lengths 6,4", 5, 6, 2, [6, 4], gen),
        make_case("K2 T1 B2", 2, 1, 2, [1, 1], gen),
        make_case("K4 T5 B4 full", 4, 5, 4, [5, 5, 5, 5], gen),
    ]
    with open(out, "w") as f:
        json.dump({"torch_version": torch.__version__, "cases": cases}, f, indent=None)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
