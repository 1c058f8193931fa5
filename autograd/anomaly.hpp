#pragma once
// Anomaly detection (like torch.autograd.detect_anomaly): while on, every recorded op's outputs are checked in
// forward and every node's input gradients in backward, and the first non-finite value is a NonFiniteError
// naming the op, the input, the shape and how many elements are bad — instead of a loss that turns into nan
// steps later with no trace of where. Inside nn::run_cell a forward error also names the time step.
// Process-wide (batch shards run on other threads), off by default; off, it costs one relaxed load per op.
#include <atomic>
#include <cstddef>
#include <span>

#include "../core/tensor.hpp"

namespace unroll::autograd {

/// Turns anomaly detection on (or off) for its lifetime, then restores the previous setting.
class DetectAnomaly {
 public:
  explicit DetectAnomaly(bool on = true);
  ~DetectAnomaly();
  DetectAnomaly(const DetectAnomaly&) = delete;
  DetectAnomaly& operator=(const DetectAnomaly&) = delete;

 private:
  bool prev_;
};
void set_detect_anomaly(bool on);
bool detect_anomaly_enabled();
}  // namespace unroll::autograd

namespace unroll::detail {
inline std::atomic<bool> anomaly_on{false};
inline bool anomaly_checks() { return anomaly_on.load(std::memory_order_relaxed); }
/// NonFiniteError if an output of `op` holds a nan or an infinity (floating outputs only).
void check_outputs(const char* op, std::span<Tensor* const> outputs);
/// NonFiniteError if input `input`'s gradient, after `op`'s backward added to it, holds a nan or an infinity.
/// `what` says which gradient ("gradient", "rows product factor").
void check_gradient(const char* op, std::size_t input, const Tensor& g, const char* what = "gradient");
}  // namespace unroll::detail
