#pragma once
// Internal: a traced step (ops/trace.hpp) compiled to run as ONE tape node per sequence or per step (nn/fuse.hpp is
// the user's side). The graph's nodes fall into three kinds by what they depend on:
//   parameters only  computed once per sequence with ordinary ops (a weight's transform, a constant's);
//   the input only   computed for all T steps at once with ordinary ops on [T*B, ...] rows — the input
//                    projections become one large GEMM, as in the built-in layers;
//   the state        the step program: products of step values by parameters (GEMMs on the whole batch),
//                    and between them every elementwise op, interpreted row by row in one pass (each row's
//                    values stay in L1 from one op to the next). All its values live in one buffer per
//                    step, which backward reads; backward is derived from the same program (reverse mode,
//                    row by row, each op's local derivative as the unfused op computes it) plus the
//                    products' GEMMs, their weight gradients deferred and batched like linear's.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "trace.hpp"

namespace unroll::detail {

class FusedProgram;

/// Elementwise stages of a step whose values are at most this many bytes wide per row run each op over all
/// rows before the next (short rows: fewer, longer loops); wider ones take each row through all ops (its
/// values stay in L1). Read when a step is compiled (programs already cached keep their order: set it before
/// the first step, from one thread); a variable so that tests and unroll-bench can set it (measured:
/// bench/RESULTS.md, "Fused custom cells").
inline std::int64_t kOpsFirstBytes = 512;

/// A whole fused sequence's backward (FusedSequence::run) gathers its weight-gradient rows and multiplies them
/// whenever a product's gathered rows (dY's and the operand's together) reach this many bytes (at least one
/// step's rows), so that their memory stays bounded however long the sequence is. A variable so that tests
/// can make it flush every step; read at each backward.
inline std::int64_t kWeightRowsBytes = std::int64_t{8} << 20;

/// A compiled step, or the one-line reason the graph cannot run fused.
struct CompiledStep {
  std::shared_ptr<const FusedProgram> program;
  std::string why_not;
};
CompiledStep compile_step(TraceGraph graph);

/// One sequence of a compiled step: the values that depend on the parameters only, and those that depend
/// on the input only (for all steps at once), computed on construction with ordinary recorded ops.
class FusedSequence {
 public:
  /// x [T, B, ...] as traced (x_t [B, ...] at every step).
  FusedSequence(std::shared_ptr<const FusedProgram> program, const Tensor& x);
  /// Step t (0 <= t < T) from the state tensors (in trace order): the new state tensors into `next` (its
  /// previous contents replaced; reused from step to step, so a step allocates no vector; it must not be the
  /// vector `state` views), recorded as one tape node when gradients are needed.
  void step(std::int64_t t, std::span<const Tensor> state, std::vector<Tensor>& next) const;

  struct Run {
    Tensor output;              ///< [T, B, w]: state tensor `output_state` after every step t (zero past a row's end)
    std::vector<Tensor> state;  ///< the final state tensors (each row's own last step)
  };
  /// All T steps from the state tensors (trace order) as ONE tape node, as nn::run_cell would run step() T
  /// times: from t = T-1 down when `reverse`; with `lengths` (one per row, 1 <= length <= T; empty: all T),
  /// a row's state holds from its step `length` on and its outputs there are zero. Backward runs the steps'
  /// backward in one loop, carrying the state's gradient from step to step in a buffer.
  Run run(std::span<const Tensor> state, std::size_t output_state, bool reverse,
          std::span<const std::int64_t> lengths) const;

  struct Data;  // ops/fused_step.cpp

 private:
  std::shared_ptr<const Data> data_;
};

}  // namespace unroll::detail
