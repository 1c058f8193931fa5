#include "crf.hpp"

#include <limits>

#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape_ops.hpp"
#include "init.hpp"

namespace unroll::nn {
namespace {
// Each row's length (all T when none are given), checked against emissions [T, B, K] of a CRF of K tags.
std::vector<std::int64_t> row_lengths(const char* op, const Tensor& emissions, std::int64_t K, Dtype dtype,
                                      std::span<const std::int64_t> lengths) {
  UNROLL_CHECK(emissions.defined() && emissions.dim() == 3, ShapeError,
               "{}: emissions must be [T, B, num_tags]; got {}, expected a 3-d tensor", op,
               emissions.defined() ? fmt::format("shape {}", emissions.shape()) : std::string("an undefined tensor"));
  const std::int64_t T = emissions.size(0), B = emissions.size(1);
  UNROLL_CHECK(emissions.size(2) == K, ShapeError, "{}: emissions have the wrong number of tags; got {}, expected {}",
               op, emissions.shape(), K);
  UNROLL_CHECK(T >= 1 && B >= 1, ShapeError, "{}: empty emissions; got {}, expected T >= 1 and B >= 1", op,
               emissions.shape());
  UNROLL_CHECK(emissions.dtype() == dtype, DtypeError,
               "{}: emissions and the CRF's parameters differ in dtype; got {}, expected {}", op, emissions.dtype(),
               dtype);
  if (lengths.empty()) return std::vector<std::int64_t>(static_cast<std::size_t>(B), T);
  UNROLL_CHECK(static_cast<std::int64_t>(lengths.size()) == B, ShapeError,
               "{}: one length per row; got {} lengths, expected {} (B)", op, lengths.size(), B);
  for (std::size_t b = 0; b < lengths.size(); ++b)
    UNROLL_CHECK(lengths[b] >= 1 && lengths[b] <= T, ValueError,
                 "{}: length out of range; got lengths[{}] = {}, expected 1 <= length <= {} (T)", op, b, lengths[b], T);
  return {lengths.begin(), lengths.end()};
}

// mask[t, b] = 1 for t < length[b], else 0, in `dtype`.
Tensor step_mask(const std::vector<std::int64_t>& len, std::int64_t T, Dtype dtype) {
  const auto B = static_cast<std::int64_t>(len.size());
  std::vector<double> m(static_cast<std::size_t>(T * B), 0.0);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t b = 0; b < B; ++b) m[static_cast<std::size_t>(t * B + b)] = t < len[static_cast<std::size_t>(b)];
  return tensor(m, {T, B}, dtype);
}

// log(sum(exp(x))) along dim, stable: the (constant) maximum taken out first.
Tensor logsumexp(const Tensor& x, std::int64_t dim) {
  const Tensor m = max(x, dim, /*keepdim=*/true).detach();
  return squeeze(m, dim) + log(sum(exp(x - m), {dim}));
}

// int64 [n] from values.
Tensor indices(const std::vector<std::int64_t>& v) { return index_tensor(v, {static_cast<std::int64_t>(v.size())}); }
}  // namespace

CRF::CRF(std::int64_t num_tags_, Dtype dtype) : num_tags(num_tags_) {
  UNROLL_CHECK(num_tags >= 1, ValueError, "CRF: num_tags must be positive; got {}", num_tags);
  start_transitions = Tensor::empty({num_tags}, dtype);
  end_transitions = Tensor::empty({num_tags}, dtype);
  transitions = Tensor::empty({num_tags, num_tags}, dtype);
  register_parameter("start_transitions", start_transitions);
  register_parameter("end_transitions", end_transitions);
  register_parameter("transitions", transitions);
  reset_parameters();
}

void CRF::reset_parameters() {
  init::uniform_(start_transitions, -0.1, 0.1);
  init::uniform_(end_transitions, -0.1, 0.1);
  init::uniform_(transitions, -0.1, 0.1);
}

Tensor CRF::log_partition(const Tensor& emissions, std::span<const std::int64_t> lengths) const {
  const std::vector<std::int64_t> len = row_lengths("CRF::log_partition", emissions, num_tags, transitions.dtype(), lengths);
  const std::int64_t T = emissions.size(0), B = emissions.size(1);
  const Tensor mask = step_mask(len, T, emissions.dtype());
  // alpha[b, j] = log of the summed exp-scores of all prefixes ending in tag j at the current step.
  Tensor alpha = unsqueeze(start_transitions, 0) + emissions[0];  // [B, K]
  const Tensor trans = unsqueeze(transitions, 0);                  // [1, K(from), K(to)]
  for (std::int64_t t = 1; t < T; ++t) {
    const Tensor next = logsumexp(unsqueeze(alpha, 2) + trans + unsqueeze(emissions[t], 1), 1);  // [B, K]
    alpha = where(reshape(mask[t], {B, 1}), next, alpha);  // a row past its end keeps its alpha
  }
  return logsumexp(alpha + unsqueeze(end_transitions, 0), 1);
}

Tensor CRF::score(const Tensor& emissions, const Tensor& tags, std::span<const std::int64_t> lengths) const {
  const std::vector<std::int64_t> len = row_lengths("CRF::score", emissions, num_tags, transitions.dtype(), lengths);
  const std::int64_t T = emissions.size(0), B = emissions.size(1), K = num_tags;
  UNROLL_CHECK(tags.defined() && tags.dtype() == Dtype::int64, DtypeError, "CRF::score: tags must be int64; got {}",
               tags.defined() ? fmt::format("{}", tags.dtype()) : std::string("an undefined tensor"));
  UNROLL_CHECK(tags.shape() == Shape({T, B}), ShapeError, "CRF::score: tags must be [T, B] = [{}, {}]; got {}", T, B,
               tags.shape());
  const std::int64_t* y = tags.data<std::int64_t>();
  std::vector<std::int64_t> emit_at, trans_at, first, last;
  std::vector<double> emit_on, trans_on;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t tag = y[t * B + b];
      const bool inside = t < len[static_cast<std::size_t>(b)];
      UNROLL_CHECK(!inside || (tag >= 0 && tag < K), IndexError,
                   "CRF::score: tag out of range; got tags[{}, {}] = {}, expected 0 <= tag < {} (num_tags)", t, b, tag, K);
      const std::int64_t safe = inside ? tag : 0;  // past a row's end: any valid index, masked out below
      emit_at.push_back((t * B + b) * K + safe);
      emit_on.push_back(inside ? 1.0 : 0.0);
      if (t > 0) {
        const std::int64_t prev = inside ? y[(t - 1) * B + b] : 0;
        trans_at.push_back(prev * K + safe);
        trans_on.push_back(inside ? 1.0 : 0.0);
      }
    }
  for (std::int64_t b = 0; b < B; ++b) {
    first.push_back(y[b]);
    last.push_back(y[(len[static_cast<std::size_t>(b)] - 1) * B + b]);
  }
  const Dtype dt = emissions.dtype();
  Tensor s = sum(reshape(index_select(reshape(emissions, {T * B * K}), 0, indices(emit_at)), {T, B}) *
                     tensor(emit_on, {T, B}, dt),
                 {0});
  if (T > 1)
    s = s + sum(reshape(index_select(reshape(transitions, {K * K}), 0, indices(trans_at)), {T - 1, B}) *
                    tensor(trans_on, {T - 1, B}, dt),
                {0});
  return s + index_select(start_transitions, 0, indices(first)) +
         index_select(end_transitions, 0, indices(last));
}

Tensor CRF::nll(const Tensor& emissions, const Tensor& tags, std::span<const std::int64_t> lengths,
                Reduction reduction) const {
  const Tensor gold = score(emissions, tags, lengths);  // first: it checks the tags
  const Tensor per_row = log_partition(emissions, lengths) - gold;
  switch (reduction) {
    case Reduction::none: return per_row;
    case Reduction::sum: return sum(per_row);
    case Reduction::mean: break;
  }
  return mean(per_row);
}

std::vector<std::vector<std::int64_t>> CRF::decode(const Tensor& emissions, std::span<const std::int64_t> lengths) const {
  const std::vector<std::int64_t> len = row_lengths("CRF::decode", emissions, num_tags, transitions.dtype(), lengths);
  const std::int64_t T = emissions.size(0), B = emissions.size(1), K = num_tags;
  const std::vector<double> e = emissions.to_vector<double>(), tr = transitions.to_vector<double>(),
                            st = start_transitions.to_vector<double>(), en = end_transitions.to_vector<double>();
  std::vector<std::vector<std::int64_t>> paths(static_cast<std::size_t>(B));
  std::vector<double> best(static_cast<std::size_t>(K)), next(static_cast<std::size_t>(K));
  std::vector<std::int64_t> back(static_cast<std::size_t>(T * K));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = len[static_cast<std::size_t>(b)];
    auto emit = [&](std::int64_t t, std::int64_t k) { return e[static_cast<std::size_t>((t * B + b) * K + k)]; };
    for (std::int64_t k = 0; k < K; ++k) best[static_cast<std::size_t>(k)] = st[static_cast<std::size_t>(k)] + emit(0, k);
    for (std::int64_t t = 1; t < n; ++t) {
      for (std::int64_t j = 0; j < K; ++j) {
        double top = -std::numeric_limits<double>::infinity();
        std::int64_t arg = 0;
        for (std::int64_t i = 0; i < K; ++i) {
          const double v = best[static_cast<std::size_t>(i)] + tr[static_cast<std::size_t>(i * K + j)];
          if (v > top) top = v, arg = i;
        }
        next[static_cast<std::size_t>(j)] = top + emit(t, j);
        back[static_cast<std::size_t>(t * K + j)] = arg;
      }
      std::swap(best, next);
    }
    std::int64_t tag = 0;
    double top = -std::numeric_limits<double>::infinity();
    for (std::int64_t k = 0; k < K; ++k)
      if (const double v = best[static_cast<std::size_t>(k)] + en[static_cast<std::size_t>(k)]; v > top) top = v, tag = k;
    std::vector<std::int64_t>& path = paths[static_cast<std::size_t>(b)];
    path.assign(static_cast<std::size_t>(n), 0);
    for (std::int64_t t = n - 1; t >= 0; --t) {
      path[static_cast<std::size_t>(t)] = tag;
      if (t > 0) tag = back[static_cast<std::size_t>(t * K + tag)];
    }
  }
  return paths;
}

}  // namespace unroll::nn
