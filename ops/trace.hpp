#pragma once
// Internal: tracing one step of a user's cell into a graph, for fusion (ops/fused_step.hpp, nn/fuse.hpp).
//
// The step runs once, eagerly, on placeholder tensors that require grad, on a tape of its own, while
// `tls_tracer` is set. Every op that can be fused reports itself here after computing its result
// (trace_hook: one thread-local load and a branch when nothing is traced); the tracer maps each tensor to a
// graph node by its autograd identity — a placeholder or parameter by its leaf record, an op's result by its
// slot on the trace's tape. A tensor that requires grad but that no hooked op produced came from an op that
// cannot be fused: the tape names that op, and the trace gives up with that name (why_not). A tensor that
// does not require grad is a constant, captured by value.
//
// A trace records one path through the step's code. The step is traced twice on different placeholder
// values, and the two graphs must agree (ops, shapes, constants' values): a step that branches on the
// values of its inputs, or computes a "constant" from them out of sight of autograd (a detach), is refused
// instead of being frozen to one path. item()/to_vector() on a traced tensor is refused too.
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll::detail {

/// The ops a step may be made of. Values are [batch, features] (or [features] / a scalar, broadcast
/// over the rows, or [batch, 1], broadcast over the features).
enum class TraceOp : std::uint8_t {
  input,     ///< a step input (x, then each state tensor); i0 = its position
  external,  ///< a tensor from outside the step: a parameter (requires grad) or a constant; i0 = index
  add, sub, mul, div,                            // tensor ⊕ tensor
  add_s, sub_s, rsub_s, mul_s, div_s, rdiv_s,    // tensor ⊕ scalar a (rsub: a - x, rdiv: a / x)
  neg, pow_s,                                    // -x, x^a
  exp, log, sqrt, abs, tanh, sigmoid, relu, logsigmoid, silu,
  softplus,    ///< a = beta, b = threshold
  narrow,      ///< along the last dim: i0 = start, i1 = length
  cat,         ///< along the last dim
  sum_last,    ///< sum over the last dim, keepdim
  mean_last,   ///< mean over the last dim, keepdim
  linear,      ///< x Wᵀ (x [rows, k], W [n, k]); linear's bias is a separate add
  matmul,      ///< x W (x [rows, k], W [k, n])
  transpose,   ///< of a 2-D tensor; only of parameters (it would mix the rows of a step value)
};
/// The op's name as users write it ("sigmoid", "linear", ...).
const char* trace_op_name(TraceOp op);

struct TraceNode {
  TraceOp op;
  std::vector<int> args;  ///< nodes this one reads
  double a = 0, b = 0;    ///< scalar attributes (see TraceOp)
  std::int64_t i0 = 0, i1 = 0;
  Shape shape;  ///< the traced value's shape
  bool operator==(const TraceNode&) const = default;
};

/// One traced step: nodes in the order the ops ran (so every node comes after the nodes it reads).
struct TraceGraph {
  std::vector<TraceNode> nodes;
  std::vector<int> inputs;        ///< node of each step input (x first, then the state tensors)
  std::vector<int> outputs;       ///< node of each returned state tensor
  std::vector<Tensor> externals;  ///< parameters (leaves that require grad) and constants
  std::int64_t batch = 0;
  Dtype dtype = Dtype::float32;
};

/// A trace, or the one-line reason the step cannot be fused (then `graph` is incomplete).
struct TraceResult {
  TraceGraph graph;
  std::string why_not;
};

/// Traces `step`, called with placeholders shaped like `examples` (x_t [B, I] first, then the state
/// tensors) and returning the new state tensors. Errors the step itself throws propagate unchanged.
TraceResult trace_step(const std::function<std::vector<Tensor>(std::span<const Tensor>)>& step,
                       std::span<const Tensor> examples);

class Tracer;
inline constinit thread_local Tracer* tls_tracer = nullptr;  ///< set only while trace_step runs the step

/// Called by fusable ops after computing `out` (see trace_hook).
void trace_record(TraceOp op, std::span<const Tensor* const> in, const Tensor& out, double a, double b,
                  std::int64_t i0, std::int64_t i1);
// An op variant that cannot be fused (a narrow along the batch, a sum over all dims) simply does not call
// the hook: its result is then an unknown tensor, and the trace gives up naming the op.

/// What a fusable op calls after computing `out` from `in`: records it when a step is being traced.
inline void trace_hook(TraceOp op, std::initializer_list<const Tensor*> in, const Tensor& out, double a = 0,
                       double b = 0, std::int64_t i0 = 0, std::int64_t i1 = 0) {
  if (tls_tracer != nullptr) [[unlikely]]
    trace_record(op, std::span<const Tensor* const>(in.begin(), in.size()), out, a, b, i0, i1);
}

}  // namespace unroll::detail
