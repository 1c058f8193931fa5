#include "rnn.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "../autograd/checkpoint.hpp"
#include "../autograd/tape.hpp"
#include "../core/allocator.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/linear.hpp"
#include "../ops/recurrent_detail.hpp"
#include "../ops/shape_ops.hpp"
#include "diagnostics.hpp"
#include "regularize.hpp"

namespace unroll::nn {

namespace detail {
void check_lengths(const char* where, const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t B) {
  UNROLL_CHECK(static_cast<std::int64_t>(lengths.size()) == B, ShapeError,
               "{}: one length per batch row; got {} lengths, expected {}", where, lengths.size(), B);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = lengths[static_cast<std::size_t>(b)];
    UNROLL_CHECK(len >= 1 && len <= T, ValueError,
                 "{}: sequence length out of range; got lengths[{}]={}, expected 1 <= length <= {}", where, b, len, T);
  }
}

void check_checkpoint_options(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget) {
  UNROLL_CHECK(checkpoint_every >= 0, ValueError,
               "{}: checkpoint_every out of range; got {}, expected a segment length >= 1 (or 0: no checkpointing)",
               where, checkpoint_every);
  UNROLL_CHECK(memory_budget >= 0, ValueError,
               "{}: memory_budget out of range; got {}, expected a number of bytes >= 1 (or 0: no budget)", where,
               memory_budget);
  UNROLL_CHECK(checkpoint_every == 0 || memory_budget == 0, ValueError,
               "{}: checkpoint_every and memory_budget both given; got {} and {}, expected one of them (the budget "
               "chooses the segment length)",
               where, checkpoint_every, memory_budget);
}

std::int64_t checkpoint_segment(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget,
                                std::int64_t T, std::int64_t state, std::int64_t step) {
  check_checkpoint_options(where, checkpoint_every, memory_budget);
  if (checkpoint_every > 0 || memory_budget == 0) return checkpoint_every;
  // Memory with segments of k: (T/k) * state + k * step <= budget, i.e. step k^2 - budget k + T state <= 0;
  // the largest root is the longest segment (the fewest checkpoint nodes) that fits.
  const double m = static_cast<double>(memory_budget), s = static_cast<double>(std::max<std::int64_t>(step, 1)),
               c = static_cast<double>(state), disc = m * m - 4.0 * s * static_cast<double>(T) * c;
  // What segments of k cost: ceil(T / k) starting states and one segment's steps. No integer k above the
  // continuous root fits (the continuous cost is a lower bound), so step down from it to the first that does.
  auto cost = [&](std::int64_t k) { return ((T + k - 1) / k) * state + k * step; };
  std::int64_t k =
      disc >= 0 ? std::min<std::int64_t>(static_cast<std::int64_t>(std::floor((m + std::sqrt(disc)) / (2.0 * s))), T)
                : 0;
  while (k >= 1 && cost(k) > memory_budget) --k;
  if (k < 1) {  // the least budget that would do, for the message
    std::int64_t least = cost(1);
    for (std::int64_t j = 2; j <= T; ++j) least = std::min(least, cost(j));
    unroll::detail::throw_error<ValueError>(
        "{}: memory_budget too small for {} steps; got {} bytes, expected at least {} (one step keeps {} bytes and "
        "each segment's starting state {})",
        where, T, memory_budget, least, step, state);
  }
  return std::clamp<std::int64_t>(k, 1, T);
}

Tensor length_mask(const char* where, const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t B,
                   Dtype dtype) {
  check_lengths(where, lengths, T, B);
  std::vector<double> m(static_cast<std::size_t>(T * B));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < lengths[static_cast<std::size_t>(b)]; ++t)
      m[static_cast<std::size_t>(t * B + b)] = 1.0;
  return tensor(m, {T, B}, dtype);
}
}  // namespace detail

namespace {
using unroll::detail::StepState;

// The traits entry of each layer kind's fused step (ops/recurrent_detail.hpp).
const unroll::detail::StepTraits& step_traits(RecurrentMode mode) {
  switch (mode) {
    case RecurrentMode::rnn_tanh:
      return unroll::detail::rnn_tanh_step_traits;
    case RecurrentMode::rnn_relu:
      return unroll::detail::rnn_relu_step_traits;
    case RecurrentMode::lstm:
      return unroll::detail::lstm_step_traits;
    case RecurrentMode::gru:
      return unroll::detail::gru_step_traits;
  }
  return unroll::detail::lstm_step_traits;
}

// A sequence layer's input as the direction loop wants it: x [T, B, I], initial states [L*D, B, H] or
// undefined (zeros), the length mask [T, B] or undefined.
struct SequenceInput {
  Tensor x, h0, c0, mask;
  bool unbatched = false;
};

// Checks the user's input and brings it to [T, B, I] (unbatched [T, I] is a batch of one; batch_first
// [B, T, I] is transposed).
SequenceInput prepare_input(const char* where, const RecurrentOptions& opt, std::int64_t directions, Dtype param_dtype,
                            bool has_cell_state, const Tensor& x_in, const Tensor& h0_in, const Tensor& c0_in,
                            const std::vector<std::int64_t>& lengths) {
  UNROLL_CHECK(x_in.defined() && (x_in.dim() == 3 || x_in.dim() == 2), ShapeError,
               "{}: input must be [T, B, I] ([B, T, I] with batch_first) or unbatched [T, I]; got x={}", where,
               x_in.defined() ? fmt::format("{}", x_in.shape()) : std::string("undefined"));
  SequenceInput in;
  in.unbatched = x_in.dim() == 2;
  UNROLL_CHECK(!in.unbatched || lengths.empty(), ValueError,
               "{}: lengths need a batch; got unbatched x={}, expected [T, B, I] input", where, x_in.shape());
  in.x = in.unbatched ? unsqueeze(x_in, 1) : (opt.batch_first ? transpose(x_in, 0, 1) : x_in);
  const std::int64_t T = in.x.shape()[0], B = in.x.shape()[1], H = opt.hidden_size, LD = opt.num_layers * directions;
  UNROLL_CHECK(in.x.shape()[2] == opt.input_size, ShapeError,
               "{}: input size differs; got x={}, expected input_size {}", where, x_in.shape(), opt.input_size);
  UNROLL_CHECK(T >= 1, ValueError, "{}: empty sequence; got x={}, expected at least one time step", where,
               x_in.shape());
  UNROLL_CHECK(in.x.dtype() == param_dtype, DtypeError,
               "{}: input dtype differs from the parameters'; got {}, expected {}", where, in.x.dtype(), param_dtype);
  auto initial = [&](const Tensor& s, const char* what) -> Tensor {
    if (!s.defined()) return {};
    const Shape expected = in.unbatched ? Shape({LD, H}) : Shape({LD, B, H});
    UNROLL_CHECK(s.shape() == expected, ShapeError, "{}: {} has the wrong shape; got {}, expected {}", where, what,
                 s.shape(), expected);
    return in.unbatched ? unsqueeze(s, 1) : s;
  };
  in.h0 = initial(h0_in, "h0");
  UNROLL_CHECK(has_cell_state || !c0_in.defined(), ValueError,
               "{}: only LSTM takes a cell state; got c0={}, expected no c0", where, c0_in.shape());
  in.c0 = has_cell_state ? initial(c0_in, "c0") : Tensor();
  if (!lengths.empty()) in.mask = detail::length_mask(where, lengths, T, B, in.x.dtype());
  return in;
}

struct DirectionOutput {
  Tensor out;       // [T, B, H], zero past each sequence's end
  StepState final;  // h (and c) after each sequence's last step
};

// One layer and direction over input [T, B, I']: one GEMM for every step's input gates, then one fused step
// per time step (from t = T - 1 down when reverse). h_first, c_first [B, H] or undefined (zeros).
// Where a direction's per-step state gradients go while a StepRecorder is active (nn/diagnostics.hpp).
struct DirectionRecording {
  StepRecorder* recorder = nullptr;
  std::string h_key, c_key;
};
// What happens between a direction's steps besides the step itself.
struct BetweenSteps {
  const char* layer = "RNN";            ///< names the layer in a step's error ("LSTM: step t=3 of 12: ...")
  std::int64_t t0 = 0, T = 0;           ///< a checkpointed segment's first step in the sequence, and its length
  double zoneout_h = 0, zoneout_c = 0;  ///< RecurrentOptions' zoneout
  bool training = false;
  DirectionRecording rec{};
};

DirectionOutput run_direction(const unroll::detail::StepTraits& step, const RecurrentWeights& w, const Tensor& input,
                              const Tensor& h_first, const Tensor& c_first, const Tensor& mask, bool reverse,
                              const BetweenSteps& between = {}) {
  const DirectionRecording& rec = between.rec;
  using unroll::detail::HiddenHistory, unroll::detail::HiddenWeight;
  const std::int64_t T = input.shape()[0], B = input.shape()[1], H = w.weight_hh.shape()[1];
  // weight_hh's gradient in one GEMM over all steps' gate gradients (K = T*B) instead of one per step,
  // where the step's gate gradient is its input gates'; the steps then see weight_hh detached, and both
  // biases' gradients are one sum over those rows, so b_ih joins b_hh in the steps.
  const bool one_whh_gemm = step.gate_grad_is_input_grad && autograd::needs_grad({&w.weight_hh});
  Tensor gx = linear(input, w.weight_ih, one_whh_gemm ? Tensor() : w.bias_ih);  // [T, B, G*H]: one GEMM
  std::shared_ptr<HiddenHistory> history;
  if (one_whh_gemm) {
    history = std::make_shared<HiddenHistory>();
    gx = unroll::detail::with_hidden_weight_grad(gx, w.weight_hh, w.bias_ih, w.bias_hh, history);
  }
  // Packed once for all T steps (when that beats BLAS, which would re-pack it in each step's products).
  const HiddenWeight w_hh = HiddenWeight::prepare(one_whh_gemm ? w.weight_hh.detach() : w.weight_hh, B);
  const Tensor b = !one_whh_gemm ? w.bias_hh : w.bias_hh.defined() ? w.bias_ih.detach() + w.bias_hh.detach() : Tensor();
  StepState state{h_first.defined() ? h_first : zeros({B, H}, input.dtype()), Tensor()};
  if (step.has_cell_state) state.c = c_first.defined() ? c_first : zeros({B, H}, input.dtype());
  std::vector<Tensor> hs(static_cast<std::size_t>(T));
  for (std::int64_t i = 0; i < T; ++i) {
    const std::int64_t t = reverse ? T - 1 - i : i;
    // The state before the step, for zoneout only (no handle copies per step otherwise).
    const bool zoned = between.zoneout_h > 0 || between.zoneout_c > 0;
    const StepState before = zoned ? state : StepState{};
    const auto at_step = [&] { return fmt::format("{}: step t={} of {}", between.layer, between.t0 + t, between.T > 0 ? between.T : T); };
    unroll::detail::AnomalyWhere at_step_where;  // anomaly detection: a backward error names the step too
    if (unroll::detail::anomaly_checks()) [[unlikely]]
      at_step_where.set(at_step());
    try {
      step.step(gx[t], state, w_hh, b, mask.defined() ? mask[t] : Tensor());
    } catch (const Error&) {  // e.g. anomaly detection's non-finite output: say at which step
      unroll::detail::rethrow_with_context(at_step() + ": ");
    }
    // Zoneout (Krueger et al. 2016): each unit keeps its previous value with probability p (its expectation
    // outside training). A row past its length holds its state either way.
    if (between.zoneout_h > 0) state.h = zoneout(before.h, state.h, between.zoneout_h, between.training);
    if (between.zoneout_c > 0 && step.has_cell_state)
      state.c = zoneout(before.c, state.c, between.zoneout_c, between.training);
    if (rec.recorder != nullptr) {  // identity nodes that note ||dL/dh_t|| (and ||dL/dc_t||) in backward
      state.h = rec.recorder->watch(state.h, rec.h_key, t);
      if (step.has_cell_state) state.c = rec.recorder->watch(state.c, rec.c_key, t);
    }
    hs[static_cast<std::size_t>(t)] = state.h;
  }
  DirectionOutput r{stack(hs, 0), std::move(state)};
  if (one_whh_gemm) *history = {h_first.detach(), r.out.detach(), reverse};  // what each step read, no copy
  if (mask.defined()) r.out = mul(r.out, reshape(mask, {T, B, 1}));          // zero past each sequence's end
  return r;
}

// Per-step gate statistics of one layer and direction that has run: its gates recomputed from its input and
// the state each step read (one GEMM each, no gradient), each gate's activation reported per step, over the
// rows still running. `suffix` is "_l{k}" or "_l{k}_reverse".
void record_gates(StepRecorder& rec, RecurrentMode mode, const RecurrentWeights& w, const Tensor& input,
                  const Tensor& h_first, const Tensor& out, const Tensor& mask, bool reverse,
                  const std::string& suffix) {
  if (mode == RecurrentMode::rnn_relu) return;  // relu does not saturate
  const NoGradGuard no_grad;
  const std::int64_t T = input.shape()[0], B = input.shape()[1], H = w.weight_hh.shape()[1];
  const Tensor first = h_first.defined() ? h_first.detach() : zeros({B, H}, input.dtype());
  // The state step t read: the previous step's (held past a row's end, where `out` is zero: then h_first).
  Tensor prev = T == 1 ? unsqueeze(first, 0)
                       : (reverse ? cat({narrow(out, 0, 1, T - 1), unsqueeze(first, 0)}, 0)
                                  : cat({unsqueeze(first, 0), narrow(out, 0, 0, T - 1)}, 0));
  if (mask.defined()) {
    const Tensor m = T == 1 ? ones({1, B}, input.dtype())
                            : (reverse ? cat({narrow(mask, 0, 1, T - 1), ones({1, B}, input.dtype())}, 0)
                                       : cat({ones({1, B}, input.dtype()), narrow(mask, 0, 0, T - 1)}, 0));
    const Tensor m3 = reshape(m, {T, B, 1});
    prev = prev * m3 + unsqueeze(first, 0) * (1.0 - m3);
  }
  const Tensor gi = linear(input.detach(), w.weight_ih.detach(), w.bias_ih.defined() ? w.bias_ih.detach() : Tensor());
  const Tensor gh = linear(prev, w.weight_hh.detach(), w.bias_hh.defined() ? w.bias_hh.detach() : Tensor());
  std::vector<std::pair<std::string, std::pair<Tensor, GateActivation>>> gates;
  if (mode == RecurrentMode::lstm) {
    const std::vector<Tensor> g = chunk(gi + gh, 4, 2);
    gates = {{"i", {sigmoid(g[0]), GateActivation::sigmoid}},
             {"f", {sigmoid(g[1]), GateActivation::sigmoid}},
             {"g", {tanh(g[2]), GateActivation::tanh}},
             {"o", {sigmoid(g[3]), GateActivation::sigmoid}}};
  } else if (mode == RecurrentMode::gru) {
    const std::vector<Tensor> a = chunk(gi, 3, 2), b = chunk(gh, 3, 2);
    const Tensor r = sigmoid(a[0] + b[0]);
    gates = {{"r", {r, GateActivation::sigmoid}},
             {"z", {sigmoid(a[1] + b[1]), GateActivation::sigmoid}},
             {"n", {tanh(a[2] + r * b[2]), GateActivation::tanh}}};
  } else {
    gates = {{"a", {tanh(gi + gh), GateActivation::tanh}}};
  }
  for (const auto& [name, v] : gates) {
    const std::string key = name + suffix;
    rec.begin_gate(key, T, v.second);
    for (std::int64_t t = 0; t < T; ++t) rec.gate_values(key, t, v.first[t], mask.defined() ? mask[t] : Tensor());
  }
}

// run_direction in checkpointed segments of k steps (from the last one down when reverse): each segment is one
// autograd::checkpoint over its input rows, its starting state and the weights (inputs, so a weight computed
// outside, e.g. after weight drop, gets its gradient like a parameter), recomputed in backward.
DirectionOutput run_direction_segments(const unroll::detail::StepTraits& step, const RecurrentWeights& w,
                                       const Tensor& input, const Tensor& h_first, const Tensor& c_first,
                                       const Tensor& mask, bool reverse, std::int64_t k, const BetweenSteps& between) {
  const std::int64_t T = input.shape()[0], B = input.shape()[1], H = w.weight_hh.shape()[1];
  const std::int64_t segments = (T + k - 1) / k;
  StepState state{h_first.defined() ? h_first : zeros({B, H}, input.dtype()), Tensor()};
  if (step.has_cell_state) state.c = c_first.defined() ? c_first : zeros({B, H}, input.dtype());
  const bool bias = w.bias_ih.defined();
  std::vector<Tensor> outs(static_cast<std::size_t>(segments));
  for (std::int64_t i = 0; i < segments; ++i) {
    const std::int64_t seg = reverse ? segments - 1 - i : i, t0 = seg * k, n = std::min(k, T - t0);
    std::vector<Tensor> in{narrow(input, 0, t0, n), w.weight_ih, w.weight_hh, state.h};
    if (bias) in.insert(in.end(), {w.bias_ih, w.bias_hh});
    if (step.has_cell_state) in.push_back(state.c);
    const Tensor seg_mask = mask.defined() ? narrow(mask, 0, t0, n) : Tensor();
    std::vector<Tensor> r = autograd::checkpoint(
        [&step, seg_mask, reverse, bias,
         between = BetweenSteps{between.layer, t0, T, between.zoneout_h, between.zoneout_c, between.training, {}}](
            std::span<const Tensor> v) {
          RecurrentWeights sw;
          sw.weight_ih = v[0 + 1];
          sw.weight_hh = v[2];
          std::size_t next = 4;
          if (bias) {
            sw.bias_ih = v[next++];
            sw.bias_hh = v[next++];
          }
          const Tensor c = step.has_cell_state ? v[next] : Tensor();
          DirectionOutput o = run_direction(step, sw, v[0], v[3], c, seg_mask, reverse, between);
          std::vector<Tensor> out{std::move(o.out), std::move(o.final.h)};
          if (step.has_cell_state) out.push_back(std::move(o.final.c));
          return out;
        },
        in);
    outs[static_cast<std::size_t>(seg)] = std::move(r[0]);
    state.h = std::move(r[1]);
    if (step.has_cell_state) state.c = std::move(r[2]);
  }
  return {cat(outs, 0), std::move(state)};
}

// The segment length for a layer's options over T steps (0: none): checkpoint_every, or from memory_budget
// with one step of run_direction measured on a tape of its own.
std::int64_t direction_segment(const char* where, const RecurrentOptions& opt, const unroll::detail::StepTraits& step,
                               const RecurrentWeights& w, const Tensor& input) {
  if (opt.checkpoint_every == 0 && opt.memory_budget == 0) return 0;
  if (!autograd::grad_enabled()) return 0;
  const std::int64_t T = input.shape()[0], B = input.shape()[1], H = opt.hidden_size;
  const std::int64_t state =
      (step.has_cell_state ? 2 : 1) * B * H * static_cast<std::int64_t>(dtype_size(input.dtype()));
  std::int64_t step_bytes = 0;
  if (opt.memory_budget > 0) {
    step_bytes = autograd::measure_kept_bytes([&] {
      DirectionOutput one = run_direction(step, w, narrow(input, 0, 0, 1), Tensor(), Tensor(), Tensor(), false);
    });
  }
  return detail::checkpoint_segment(where, opt.checkpoint_every, opt.memory_budget, T, state, step_bytes);
}
}  // namespace

RecurrentLayer::RecurrentLayer(const char* name, RecurrentMode mode, const RecurrentOptions& o)
    : name_(name), mode_(mode), step_(step_traits(mode)), opt_(o) {
  UNROLL_CHECK(o.input_size >= 1 && o.hidden_size >= 1 && o.num_layers >= 1, ValueError,
               "{}: sizes must be positive; got input_size={} hidden_size={} num_layers={}", name, o.input_size,
               o.hidden_size, o.num_layers);
  UNROLL_CHECK(o.dropout >= 0 && o.dropout <= 1, ValueError,
               "{}: dropout out of range; got {}, expected 0 <= dropout <= 1", name, o.dropout);
  UNROLL_CHECK(o.weight_drop >= 0 && o.weight_drop < 1, ValueError,
               "{}: weight_drop out of range; got {}, expected 0 <= weight_drop < 1", name, o.weight_drop);
  detail::check_checkpoint_options(name, o.checkpoint_every, o.memory_budget);
  UNROLL_CHECK(o.zoneout_h >= 0 && o.zoneout_h < 1 && o.zoneout_c >= 0 && o.zoneout_c < 1, ValueError,
               "{}: zoneout out of range; got zoneout_h={} zoneout_c={}, expected 0 <= p < 1", name, o.zoneout_h,
               o.zoneout_c);
  UNROLL_CHECK(o.zoneout_c == 0 || mode == RecurrentMode::lstm, ValueError,
               "{}: zoneout_c is for the LSTM's cell state; got zoneout_c={}, expected 0", name, o.zoneout_c);
  const std::int64_t H = o.hidden_size, D = directions();
  weights_.resize(static_cast<std::size_t>(o.num_layers * D));
  for (std::int64_t l = 0; l < o.num_layers; ++l)
    for (std::int64_t d = 0; d < D; ++d)
      weights_[static_cast<std::size_t>(l * D + d)].create(*this, fmt::format("_l{}{}", l, d == 1 ? "_reverse" : ""),
                                                           l == 0 ? o.input_size : H * D, H, step_.gates, o.bias,
                                                           o.dtype);
}

void RecurrentLayer::reset_parameters() {
  for (RecurrentWeights& w : weights_) w.reset(opt_.hidden_size);
}

RecurrentOutput RecurrentLayer::run(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                    const std::vector<std::int64_t>& lengths) const {
  const SequenceInput in =
      prepare_input(name_, opt_, directions(), weights_[0].weight_ih.dtype(), step_.has_cell_state, x, h0, c0, lengths);
  const std::int64_t D = directions(), L = opt_.num_layers;
  std::vector<Tensor> h_n(static_cast<std::size_t>(L * D)), c_n(step_.has_cell_state ? h_n.size() : 0);
  Tensor layer_input = in.x;
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<Tensor> dir_out;
    for (std::int64_t d = 0; d < D; ++d) {
      const std::int64_t k = l * D + d;
      RecurrentWeights w = weights(l, d == 1);
      if (opt_.weight_drop > 0 && is_training()) w.weight_hh = dropout(w.weight_hh, opt_.weight_drop, true);
      const Tensor h_first = in.h0.defined() ? in.h0[k] : Tensor(), c_first = in.c0.defined() ? in.c0[k] : Tensor();
      const std::int64_t seg = direction_segment(name_, opt_, step_, w, layer_input);
      const bool segmented = seg > 0 && seg < layer_input.shape()[0];
      BetweenSteps between{
          .layer = name_, .zoneout_h = opt_.zoneout_h, .zoneout_c = opt_.zoneout_c, .training = is_training()};
      // Per-step diagnostics (nn/diagnostics.hpp), when a recorder is active (not for checkpointed segments).
      DirectionRecording& rec = between.rec;
      const std::string suffix = fmt::format("_l{}{}", l, d == 1 ? "_reverse" : "");
      if (StepRecorder* r = detail::active_recorder(); r != nullptr && !segmented) {
        rec = {r, "h" + suffix, step_.has_cell_state ? "c" + suffix : std::string()};
        r->begin_state(rec.h_key, layer_input.shape()[0]);
        if (step_.has_cell_state) r->begin_state(rec.c_key, layer_input.shape()[0]);
      }
      DirectionOutput r =
          segmented ? run_direction_segments(step_, w, layer_input, h_first, c_first, in.mask, d == 1, seg, between)
                    : run_direction(step_, w, layer_input, h_first, c_first, in.mask, d == 1, between);
      if (rec.recorder != nullptr)
        record_gates(*rec.recorder, mode_, w, layer_input, h_first, r.out, in.mask, d == 1, suffix);
      dir_out.push_back(std::move(r.out));
      h_n[static_cast<std::size_t>(k)] = std::move(r.final.h);
      if (step_.has_cell_state) c_n[static_cast<std::size_t>(k)] = std::move(r.final.c);
    }
    layer_input = D == 1 ? dir_out[0] : cat(dir_out, 2);
    if (l + 1 < L && opt_.dropout > 0) layer_input = dropout(layer_input, opt_.dropout, is_training());
  }

  // Back to the caller's layout.
  auto to_caller = [&](const Tensor& states) { return in.unbatched ? squeeze(states, 1) : states; };
  RecurrentOutput r;
  r.output = in.unbatched ? squeeze(layer_input, 1) : (opt_.batch_first ? transpose(layer_input, 0, 1) : layer_input);
  r.h_n = to_caller(stack(h_n, 0));
  if (step_.has_cell_state) r.c_n = to_caller(stack(c_n, 0));
  return r;
}

RNN::RNN(const RecurrentOptions& o)
    : RecurrentLayer("RNN", o.nonlinearity == RnnActivation::tanh ? RecurrentMode::rnn_tanh : RecurrentMode::rnn_relu,
                     o) {}
LSTM::LSTM(const RecurrentOptions& o) : RecurrentLayer("LSTM", RecurrentMode::lstm, o) {}
GRU::GRU(const RecurrentOptions& o) : RecurrentLayer("GRU", RecurrentMode::gru, o) {}

}  // namespace unroll::nn
