#pragma once
// Linear recurrences as one op: h_t = a_t ⊙ h_{t-1} + b_t over [T, B, H], every h_t returned, recorded as ONE
// tape node whose backward is itself a linear scan run the other way. The cells whose state update is linear
// in the state (minGRU, minLSTM, LRU, RG-LRU, Mamba's selective scan) compute (a_t, b_t) for all steps at once
// from their inputs and hand them to the scan: no per-step tape node, no per-step kernel launch.
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll {

/// How the scan's loop over time runs. Both give the same values (up to float summation order).
enum class ScanMode {
  automatic,   ///< chosen per shape from measurements (bench/RESULTS.md, "Linear scan"): sequential so far
  sequential,  ///< one pass over time, vectorised over the H channels, batch rows split across threads
  chunked,     ///< time split into chunks scanned in parallel, then a carry pass (two passes over the data)
};

struct ScanOptions {
  /// Run from t = T-1 down to 0: h_t = a_t ⊙ h_{t+1} + b_t (the backward half of a bidirectional layer).
  bool reverse = false;
  /// [T, B] (any dtype; nonzero = restart) or undefined: where resets[t, b] is nonzero the recurrence restarts,
  /// h_t = b_t as if the state before step t were zero (documents packed into one sequence).
  Tensor resets;
  /// One per batch row, 1 <= length <= T (empty: all T): outputs past a row's end are zero, and with `reverse`
  /// the row starts at its own last step from h0, as the sequence layers do.
  std::vector<std::int64_t> lengths;
  ScanMode mode = ScanMode::automatic;
};

/// h_t = a_t ⊙ h_{t-1} + b_t, h_{-1} = h0.  a [T, B, H], [T, 1, H], [1, 1, H] or [H] (broadcast over b's
/// [T, B, H]); b [T, B, H]; h0 [B, H] or undefined (zeros) -> every h_t [T, B, H].
Tensor linear_scan(const Tensor& a, const Tensor& b, const Tensor& h0 = {}, const ScanOptions& options = {});

/// The same recurrence in log space, stable where a and b span many orders of magnitude (the minGRU paper,
/// Heinsen's scan): log h_t = logaddexp(log_a_t + log h_{t-1}, log_b_t), log h_{-1} = log_h0 (undefined: -inf,
/// h0 = 0). Shapes as linear_scan; returns every log h_t.
Tensor log_linear_scan(const Tensor& log_a, const Tensor& log_b, const Tensor& log_h0 = {},
                       const ScanOptions& options = {});

}  // namespace unroll
