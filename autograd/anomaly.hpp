#pragma once
// Anomaly detection (like torch.autograd.detect_anomaly): while on, every recorded op's outputs are checked in
// forward and every node's input gradients in backward, and the first non-finite value is a NonFiniteError
// naming the op, the input, the shape and how many elements are bad — instead of a loss that turns into nan
// steps later with no trace of where. Inside nn::run_cell and the recurrent layers an error, forward or
// backward, also names the time step (AnomalyWhere). Process-wide (batch shards run on other threads), off by
// default; off, it costs one relaxed load per op.
#include <atomic>
#include <cstddef>
#include <memory>
#include <span>
#include <string>

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

/// Where the ops now being recorded on this thread run (e.g. "LSTM: step t=3 of 12"), or null.
inline constinit thread_local const std::shared_ptr<const std::string>* tls_anomaly_where = nullptr;

/// Names where the ops recorded during its lifetime run, for anomaly detection: each node recorded meanwhile
/// keeps the text, and an error in its backward starts with it ("LSTM: step t=3 of 12: backward of ..."), as
/// a forward error inside a time loop does. The loops set it only while detection is on:
///   detail::AnomalyWhere where;
///   if (detail::anomaly_checks()) [[unlikely]] where.set(fmt::format("run_cell: step t={} of {}", t, T));
/// Off, it is a null pointer and a flag.
class AnomalyWhere {
 public:
  AnomalyWhere() = default;
  ~AnomalyWhere() {
    if (set_) tls_anomaly_where = prev_;
  }
  AnomalyWhere(const AnomalyWhere&) = delete;
  AnomalyWhere& operator=(const AnomalyWhere&) = delete;
  void set(std::string where);

 private:
  std::shared_ptr<const std::string> where_;
  const std::shared_ptr<const std::string>* prev_ = nullptr;
  bool set_ = false;
};
}  // namespace unroll::detail
