#include "diagnostics.hpp"

#include <cmath>
#include <mutex>

#include "../autograd/tape.hpp"
#include "../core/error.hpp"

namespace unroll::nn {

struct StepRecorder::Data {
  std::mutex mu;  // a watch node's backward may run on another thread than the forward that recorded it
  std::map<std::string, std::vector<double>> grads;
  std::map<std::string, GateStats> gates;
  std::map<std::string, std::uint64_t> gate_run;  // the run_cell call each gate key was begun in
};

namespace {
constinit thread_local StepRecorder* tls_recorder = nullptr;

template <class F>
void for_each_value(const Tensor& t, F&& f) {
  if (t.dtype() == Dtype::float32) {
    const float* p = t.data<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) f(static_cast<double>(p[i]), i);
  } else {
    const double* p = t.data<double>();
    for (std::int64_t i = 0; i < t.numel(); ++i) f(p[i], i);
  }
}

std::string keys_of(const auto& map) {
  std::string keys;
  for (const auto& [k, v] : map) keys += (keys.empty() ? "" : ", ") + k;
  return keys.empty() ? std::string("none") : keys;
}

void check_step(const char* what, const std::string& key, std::int64_t t, std::size_t T) {
  UNROLL_CHECK(t >= 0 && static_cast<std::size_t>(t) < T, IndexError,
               "StepRecorder: {} step out of range for '{}'; got t={}, expected 0 <= t < {}", what, key, t, T);
}
}  // namespace

StepRecorder::StepRecorder() : data_(std::make_shared<Data>()) {}

std::vector<double> StepRecorder::grad_norm(const std::string& key) const {
  const std::lock_guard lock(data_->mu);
  auto it = data_->grads.find(key);
  UNROLL_CHECK(it != data_->grads.end(), ValueError, "StepRecorder: no state '{}' recorded; got '{}', expected one of {}",
               key, key, keys_of(data_->grads));
  return it->second;
}

GateStats StepRecorder::gate(const std::string& key) const {
  const std::lock_guard lock(data_->mu);
  auto it = data_->gates.find(key);
  UNROLL_CHECK(it != data_->gates.end(), ValueError, "StepRecorder: no gate '{}' recorded; got '{}', expected one of {}",
               key, key, keys_of(data_->gates));
  return it->second;
}

std::vector<std::string> StepRecorder::state_keys() const {
  const std::lock_guard lock(data_->mu);
  std::vector<std::string> k;
  for (const auto& [key, v] : data_->grads) k.push_back(key);
  return k;
}

std::vector<std::string> StepRecorder::gate_keys() const {
  const std::lock_guard lock(data_->mu);
  std::vector<std::string> k;
  for (const auto& [key, v] : data_->gates) k.push_back(key);
  return k;
}

void StepRecorder::clear() {
  const std::lock_guard lock(data_->mu);
  data_->grads.clear();
  data_->gates.clear();
  data_->gate_run.clear();
}

void StepRecorder::begin_state(const std::string& key, std::int64_t T) {
  const std::lock_guard lock(data_->mu);
  data_->grads[key].assign(static_cast<std::size_t>(T), 0.0);
}

void StepRecorder::begin_gate(const std::string& key, std::int64_t T, GateActivation activation) {
  const std::lock_guard lock(data_->mu);
  GateStats& g = data_->gates[key];
  g.activation = activation;
  g.mean.assign(static_cast<std::size_t>(T), 0.0);
  g.saturated.assign(static_cast<std::size_t>(T), 0.0);
}

Tensor StepRecorder::watch(const Tensor& state, const std::string& key, std::int64_t t) {
  if (!autograd::needs_grad({&state})) return state;  // nothing will flow back through it
  {
    const std::lock_guard lock(data_->mu);
    auto it = data_->grads.find(key);
    UNROLL_CHECK(it != data_->grads.end(), StateError, "StepRecorder::watch: state '{}' was not begun; got '{}', "
                 "expected begin_state first", key, key);
    check_step("watch", key, t, it->second.size());
  }
  Tensor out = unroll::detail::view_range(state, 0, state.shape());  // the same values, a node of its own
  autograd::record("step recorder", out, {&state}, [data = data_, key, t](autograd::GradSink& sink) {
    const Tensor& g = sink.grad_output(0);
    double sq = 0;
    for_each_value(g, [&](double v, std::int64_t) { sq += v * v; });
    {
      const std::lock_guard lock(data->mu);
      std::vector<double>& norms = data->grads[key];
      if (static_cast<std::size_t>(t) < norms.size()) norms[static_cast<std::size_t>(t)] = std::sqrt(sq);
    }
    sink.add(0, g);
  });
  return out;
}

void StepRecorder::gate_values(const std::string& key, std::int64_t t, const Tensor& activation, const Tensor& rows) {
  UNROLL_CHECK(activation.defined() && is_floating(activation.dtype()) && activation.dim() >= 1, ValueError,
               "StepRecorder: gate '{}' needs a floating [B, ...] activation; got {}", key,
               activation.defined() ? fmt::format("{} {}", activation.shape(), activation.dtype())
                                    : std::string("an undefined tensor"));
  const std::lock_guard lock(data_->mu);
  auto it = data_->gates.find(key);
  UNROLL_CHECK(it != data_->gates.end(), StateError,
               "StepRecorder: gate '{}' was not begun; got '{}', expected begin_gate first", key, key);
  GateStats& g = it->second;
  check_step("gate", key, t, g.mean.size());
  const std::int64_t per_row = activation.numel() / std::max<std::int64_t>(activation.shape()[0], 1);
  std::vector<double> keep;
  if (rows.defined()) keep = rows.to_vector();
  const double lo = g.activation == GateActivation::sigmoid ? 0.01 : -0.99;
  const double hi = g.activation == GateActivation::sigmoid ? 0.99 : 0.99;
  double total = 0, saturated = 0, n = 0;
  for_each_value(activation, [&](double v, std::int64_t i) {
    if (!keep.empty() && keep[static_cast<std::size_t>(i / per_row)] == 0) return;
    total += v;
    saturated += (v < lo || v > hi) ? 1 : 0;
    n += 1;
  });
  g.mean[static_cast<std::size_t>(t)] = n > 0 ? total / n : 0.0;
  g.saturated[static_cast<std::size_t>(t)] = n > 0 ? saturated / n : 0.0;
}

RecordSteps::RecordSteps(StepRecorder& recorder) : prev_(tls_recorder) { tls_recorder = &recorder; }
RecordSteps::~RecordSteps() { tls_recorder = prev_; }

void record_gate(const std::string& name, const Tensor& activation, GateActivation kind) {
  StepRecorder* r = tls_recorder;
  if (r == nullptr) return;
  const detail::RecordingStep& step = detail::recording_step();
  if (step.t < 0 || unroll::detail::tls_value_reads != nullptr) return;  // not in run_cell, or being traced
  NoGradGuard no_grad;
  r->begin_gate_in_run(name, step.T, kind, step.run);
  r->gate_values(name, step.t, activation.detach());
}

void StepRecorder::begin_gate_in_run(const std::string& key, std::int64_t T, GateActivation activation,
                                     std::uint64_t run) {
  {
    const std::lock_guard lock(data_->mu);
    auto it = data_->gate_run.find(key);
    if (it != data_->gate_run.end() && it->second == run) return;
    data_->gate_run[key] = run;
  }
  begin_gate(key, T, activation);
}

namespace detail {
StepRecorder* active_recorder() { return tls_recorder; }
RecordingStep& recording_step() {
  thread_local RecordingStep s;
  return s;
}
}  // namespace detail

}  // namespace unroll::nn
