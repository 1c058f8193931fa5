#include "rnn.hpp"

#include <cmath>
#include <memory>

#include "../autograd/tape.hpp"

#include "../ops/elementwise.hpp"
#include "../ops/linear.hpp"
#include "../ops/shape_ops.hpp"
#include "init.hpp"

namespace unroll::nn {
namespace {
std::int64_t gate_count(RecurrentMode m) { return m == RecurrentMode::lstm ? 4 : m == RecurrentMode::gru ? 3 : 1; }
}  // namespace

namespace detail {
Tensor length_mask(const char* where, const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t B, Dtype dtype) {
  UNROLL_CHECK(static_cast<std::int64_t>(lengths.size()) == B, ShapeError,
               "{}: one length per batch row; got {} lengths, expected {}", where, lengths.size(), B);
  std::vector<double> m(static_cast<std::size_t>(T * B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = lengths[static_cast<std::size_t>(b)];
    UNROLL_CHECK(len >= 1 && len <= T, ValueError, "{}: sequence length out of range; got lengths[{}]={}, expected 1 <= length <= {}",
                 where, b, len, T);
    for (std::int64_t t = 0; t < len; ++t) m[static_cast<std::size_t>(t * B + b)] = 1.0;
  }
  return tensor(m, {T, B}, dtype);
}
}  // namespace detail

RecurrentLayer::RecurrentLayer(const char* name, RecurrentMode mode, const RecurrentOptions& o)
    : name_(name), mode_(mode), opt_(o) {
  UNROLL_CHECK(o.input_size >= 1 && o.hidden_size >= 1 && o.num_layers >= 1, ValueError,
               "{}: sizes must be positive; got input_size={} hidden_size={} num_layers={}", name, o.input_size,
               o.hidden_size, o.num_layers);
  UNROLL_CHECK(o.dropout >= 0 && o.dropout <= 1, ValueError, "{}: dropout out of range; got {}, expected 0 <= dropout <= 1",
               name, o.dropout);
  const std::int64_t G = gate_count(mode), H = o.hidden_size, D = directions();
  weights_.resize(static_cast<std::size_t>(o.num_layers * D));
  for (std::int64_t l = 0; l < o.num_layers; ++l)
    for (std::int64_t d = 0; d < D; ++d) {
      Weights& w = weights_[static_cast<std::size_t>(l * D + d)];
      const std::string suffix = fmt::format("_l{}{}", l, d == 1 ? "_reverse" : "");
      const std::int64_t in = l == 0 ? o.input_size : H * D;
      w.w_ih = Tensor::empty({G * H, in}, o.dtype);
      w.w_hh = Tensor::empty({G * H, H}, o.dtype);
      register_parameter("weight_ih" + suffix, w.w_ih);
      register_parameter("weight_hh" + suffix, w.w_hh);
      if (o.bias) {
        w.b_ih = Tensor::empty({G * H}, o.dtype);
        w.b_hh = Tensor::empty({G * H}, o.dtype);
        register_parameter("bias_ih" + suffix, w.b_ih);
        register_parameter("bias_hh" + suffix, w.b_hh);
      }
    }
  reset_parameters();
}

void RecurrentLayer::reset_parameters() {
  const double k = 1.0 / std::sqrt(static_cast<double>(opt_.hidden_size));
  for (Weights& w : weights_)
    for (Tensor* p : {&w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh})
      if (p->defined()) init::uniform_(*p, -k, k);
}

RecurrentOutput RecurrentLayer::run(const Tensor& x_in, const Tensor& h0_in, const Tensor& c0_in,
                                    const std::vector<std::int64_t>& lengths) const {
  const char* where = name_;
  const bool lstm = mode_ == RecurrentMode::lstm;
  UNROLL_CHECK(x_in.defined() && (x_in.dim() == 3 || x_in.dim() == 2), ShapeError,
               "{}: input must be [T, B, I] ([B, T, I] with batch_first) or unbatched [T, I]; got x={}", where,
               x_in.defined() ? fmt::format("{}", x_in.shape()) : std::string("undefined"));
  const bool unbatched = x_in.dim() == 2;
  UNROLL_CHECK(!unbatched || lengths.empty(), ValueError, "{}: lengths need a batch; got unbatched x={}, expected [T, B, I] input", where, x_in.shape());
  // Work in [T, B, I]; unbatched input is a batch of one.
  Tensor x = unbatched ? unsqueeze(x_in, 1) : (opt_.batch_first ? transpose(x_in, 0, 1) : x_in);
  const std::int64_t T = x.shape()[0], B = x.shape()[1], H = opt_.hidden_size, D = directions(), L = opt_.num_layers;
  UNROLL_CHECK(x.shape()[2] == opt_.input_size, ShapeError, "{}: input size differs; got x={}, expected input_size {}", where,
               x_in.shape(), opt_.input_size);
  UNROLL_CHECK(T >= 1, ValueError, "{}: empty sequence; got x={}, expected at least one time step", where, x_in.shape());
  UNROLL_CHECK(x.dtype() == weights_[0].w_ih.dtype(), DtypeError, "{}: input dtype differs from the parameters'; got {}, expected {}",
               where, x.dtype(), weights_[0].w_ih.dtype());

  auto initial = [&](const Tensor& s, const char* what) -> Tensor {
    if (!s.defined()) return {};
    const Shape expected = unbatched ? Shape({L * D, H}) : Shape({L * D, B, H});
    UNROLL_CHECK(s.shape() == expected, ShapeError, "{}: {} has the wrong shape; got {}, expected {}", where, what, s.shape(),
                 expected);
    return unbatched ? unsqueeze(s, 1) : s;
  };
  const Tensor h0 = initial(h0_in, "h0");
  const Tensor c0 = lstm ? initial(c0_in, "c0") : Tensor();
  UNROLL_CHECK(lstm || !c0_in.defined(), ValueError, "{}: only LSTM takes a cell state; got c0={}, expected no c0", where, c0_in.shape());
  const Tensor mask = lengths.empty() ? Tensor() : detail::length_mask(where, lengths, T, B, x.dtype());
  const Tensor mask3 = mask.defined() ? reshape(mask, {T, B, 1}) : Tensor();

  std::vector<Tensor> h_n(static_cast<std::size_t>(L * D)), c_n(lstm ? h_n.size() : 0);
  std::vector<Tensor> hs(static_cast<std::size_t>(T));
  Tensor layer_input = x;
  for (std::int64_t l = 0; l < L; ++l) {
    std::vector<Tensor> dir_out;
    for (std::int64_t d = 0; d < D; ++d) {
      const Weights& w = weights(l, d == 1);
      const std::size_t k = static_cast<std::size_t>(l * D + d);
      // weight_hh's gradient: one GEMM over all steps' gate gradients (K = T*B) instead of one per step,
      // where the step's gate gradient is its input gates' (not GRU); the steps then see it detached, and
      // both biases' gradients are one sum over those rows, so b_ih joins b_hh in the steps.
      const bool one_whh_gemm = mode_ != RecurrentMode::gru && autograd::needs_grad({&w.w_hh});
      Tensor xp = linear(layer_input, w.w_ih, one_whh_gemm ? Tensor() : w.b_ih);  // [T, B, G*H]: one GEMM
      std::shared_ptr<HiddenHistory> history;
      if (one_whh_gemm) {
        history = std::make_shared<HiddenHistory>();
        xp = with_hidden_weight_grad(xp, w.w_hh, w.b_ih, w.b_hh, history);
      }
      // Packed once for all T steps (when that beats BLAS, which would re-pack it in each step's products).
      const HiddenWeight w_hh = HiddenWeight::prepare(one_whh_gemm ? w.w_hh.detach() : w.w_hh, B);
      const Tensor b_hh = !one_whh_gemm ? w.b_hh : w.b_hh.defined() ? w.b_ih.detach() + w.b_hh.detach() : Tensor();
      const Tensor h_first = h0.defined() ? h0[l * D + d] : Tensor();
      Tensor h = h_first.defined() ? h_first : zeros({B, H}, x.dtype());
      Tensor c = lstm ? (c0.defined() ? c0[l * D + d] : zeros({B, H}, x.dtype())) : Tensor();
      for (std::int64_t step = 0; step < T; ++step) {
        const std::int64_t t = d == 0 ? step : T - 1 - step;
        const Tensor m = mask.defined() ? mask[t] : Tensor();
        switch (mode_) {
          case RecurrentMode::rnn_tanh: h = rnn_step(xp[t], h, w_hh, b_hh, RnnActivation::tanh, m); break;
          case RecurrentMode::rnn_relu: h = rnn_step(xp[t], h, w_hh, b_hh, RnnActivation::relu, m); break;
          case RecurrentMode::gru: h = gru_step(xp[t], h, w_hh, b_hh, m); break;
          case RecurrentMode::lstm: std::tie(h, c) = lstm_step(xp[t], h, c, w_hh, b_hh, m); break;
        }
        hs[static_cast<std::size_t>(t)] = h;
      }
      Tensor out = stack(hs, 0);  // [T, B, H]
      if (one_whh_gemm) *history = {h_first.detach(), out.detach(), d == 1};  // what each step read, no copy
      if (mask3.defined()) out = mul(out, mask3);  // zero past each sequence's end
      dir_out.push_back(std::move(out));
      h_n[k] = std::move(h);
      if (lstm) c_n[k] = std::move(c);
    }
    layer_input = D == 1 ? dir_out[0] : cat(dir_out, 2);
    if (l + 1 < L && opt_.dropout > 0) layer_input = dropout(layer_input, opt_.dropout, is_training());
  }

  RecurrentOutput r;
  r.output = unbatched ? squeeze(layer_input, 1) : (opt_.batch_first ? transpose(layer_input, 0, 1) : layer_input);
  r.h_n = stack(h_n, 0);
  if (unbatched) r.h_n = squeeze(r.h_n, 1);
  if (lstm) {
    r.c_n = stack(c_n, 0);
    if (unbatched) r.c_n = squeeze(r.c_n, 1);
  }
  return r;
}

RNN::RNN(const RecurrentOptions& o)
    : RecurrentLayer("RNN", o.nonlinearity == RnnActivation::tanh ? RecurrentMode::rnn_tanh : RecurrentMode::rnn_relu,
                     o) {}
LSTM::LSTM(const RecurrentOptions& o) : RecurrentLayer("LSTM", RecurrentMode::lstm, o) {}
GRU::GRU(const RecurrentOptions& o) : RecurrentLayer("GRU", RecurrentMode::gru, o) {}

}  // namespace unroll::nn
