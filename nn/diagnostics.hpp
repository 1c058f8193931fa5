#pragma once
// Per-step diagnostics: a look inside the unrolled graph. While a RecordSteps scope is active on a thread, the
// sequences run on it (nn::run_cell, and the RNN/LSTM/GRU layers) report, per time step,
//   - the norm of the loss's gradient with respect to each state tensor, ||dL/dh_t|| (and ||dL/dc_t|| for an
//     LSTM), filled in when backward runs: which step's gradient vanished or exploded;
//   - per gate, the mean activation and the fraction saturated (sigmoid outside [0.01, 0.99], tanh beyond
//     +-0.99): which gate is stuck. The layers report their gates themselves; a cell of your own reports
//     its gates with nn::record_gate(name, activation, kind), a no-op when no recorder is active.
//
//   nn::StepRecorder rec;
//   {
//     nn::RecordSteps on(rec);
//     Tensor y = lstm(x).output;
//     mean(y).backward();
//   }
//   rec.grad_norm("h_l0");       // T values;  rec.gate("f_l0").saturated: T fractions
//
// Keys: a layer's are "h_l{k}" and "c_l{k}" (with "_reverse" for the backward direction) and its gates
// "i_l0", "f_l0", "g_l0", "o_l0" (LSTM), "r_l0", "z_l0", "n_l0" (GRU), "a_l0" (RNN); run_cell's states are
// "state0", "state1", ... in the order of the state's tensors (for (h, c): state0 is h). A key run again
// starts over. Recording adds one identity node per step and state tensor, and a pass over each gate; the
// values and gradients computed are unchanged. Off (no scope), the cost is one thread-local load per sequence.
// A fused cell runs one node per step while recording, and reports no gates (they are inside the node: call
// set_fused(false) to see them). Not recorded: batch shards (other threads) and checkpointed segments (their
// steps run again in backward, outside the scope).
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll::nn {

enum class GateActivation { sigmoid, tanh };

/// One gate's statistics per time step.
struct GateStats {
  GateActivation activation = GateActivation::sigmoid;
  std::vector<double> mean;       ///< mean activation over the batch and units
  std::vector<double> saturated;  ///< fraction of activations saturated
};

class StepRecorder {
 public:
  StepRecorder();
  /// ||dL/d state_t|| (Frobenius over [B, ...]) for each step t of `key`; 0 where no gradient reached that step
  /// (or before backward). ValueError naming the keys there are for an unknown key.
  std::vector<double> grad_norm(const std::string& key) const;
  /// A gate's statistics per step (a copy). ValueError naming the gates there are for an unknown one.
  GateStats gate(const std::string& key) const;
  /// The state and gate keys recorded.
  std::vector<std::string> state_keys() const;
  std::vector<std::string> gate_keys() const;
  void clear();

  /// Starts (or restarts) `key` with T steps.
  void begin_state(const std::string& key, std::int64_t T);
  void begin_gate(const std::string& key, std::int64_t T, GateActivation activation);
  /// An identity of `state` (no copy) whose backward stores the norm of its gradient at step t of `key`.
  Tensor watch(const Tensor& state, const std::string& key, std::int64_t t);
  /// Stores the statistics of `activation` [B, ...] (a gate's values after its sigmoid or tanh) at step t of
  /// `key`; with `rows` ([B], 1 = count the row), only over the rows still running.
  void gate_values(const std::string& key, std::int64_t t, const Tensor& activation, const Tensor& rows = {});

 private:
  friend void record_gate(const std::string& name, const Tensor& activation, GateActivation kind);
  // begin_gate unless `key` was begun in run_cell call `run` already.
  void begin_gate_in_run(const std::string& key, std::int64_t T, GateActivation activation, std::uint64_t run);
  struct Data;
  std::shared_ptr<Data> data_;  // shared with the watch nodes, which run after the recording scope
};

/// Makes `recorder` the calling thread's active recorder for its lifetime (restoring the previous one after).
class RecordSteps {
 public:
  explicit RecordSteps(StepRecorder& recorder);
  ~RecordSteps();
  RecordSteps(const RecordSteps&) = delete;
  RecordSteps& operator=(const RecordSteps&) = delete;

 private:
  StepRecorder* prev_;
};

/// In a cell run by run_cell: reports a gate's activation at the current step to the active recorder (key
/// `name`). No-op when no recorder is active.
void record_gate(const std::string& name, const Tensor& activation, GateActivation kind = GateActivation::sigmoid);

namespace detail {
/// The calling thread's active recorder, or null.
StepRecorder* active_recorder();
/// run_cell's current step for record_gate (set while it runs a step under a recorder; -1 otherwise), and the
/// sequence length.
struct RecordingStep {
  std::int64_t t = -1;
  std::int64_t T = 0;
  std::uint64_t run = 0;  ///< which run_cell call: a gate key first reported in a new run starts over
};
RecordingStep& recording_step();
}  // namespace detail

}  // namespace unroll::nn
