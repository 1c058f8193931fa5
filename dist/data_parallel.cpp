#include "data_parallel.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <string>

#include <fmt/format.h>

#include "../autograd/tape.hpp"
#include "../core/random.hpp"
#include "../ops/elementwise.hpp"

namespace unroll::dist {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

std::uint64_t checksum(std::span<const Tensor> tensors) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    const auto* p = static_cast<const unsigned char*>(t.raw());
    const std::size_t n = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype());
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  }
  return h;
}

DataParallel::DataParallel(const Context& ctx, std::vector<Tensor> params, DataParallelOptions options)
    : ctx_(ctx), params_(std::move(params)), options_(options) {
  UNROLL_CHECK(options_.shards >= 0, ValueError, "DataParallel: negative shard count; got {}, expected >= 0",
               options_.shards);
  UNROLL_CHECK(options_.bucket_bytes >= 1, ValueError, "DataParallel: bucket_bytes must be positive; got {}",
               options_.bucket_bytes);
  UNROLL_CHECK(options_.check_every >= 0, ValueError, "DataParallel: check_every must be >= 0; got {}",
               options_.check_every);
  for (std::size_t i = 0; i < params_.size(); ++i)
    UNROLL_CHECK(params_[i].defined() && params_[i].leaf() != nullptr, ValueError,
                 "DataParallel: parameter {} does not require grad; got {}, expected a leaf with requires_grad", i,
                 params_[i].defined() ? "a constant" : "an undefined tensor");
  // A parameter listed twice (tied weights) is reduced once: twice would sum its gradient N times over.
  std::vector<Tensor> unique;
  for (const Tensor& p : params_)
    if (std::none_of(unique.begin(), unique.end(), [&](const Tensor& q) { return q.leaf() == p.leaf(); }))
      unique.push_back(p);
  params_ = std::move(unique);
  // Every rank's shard count (ranks on machines with other core counts may differ): the job's shards are
  // numbered and sized from these, the same on every rank.
  const std::int64_t mine = options_.shards > 0 ? options_.shards : num_threads();
  for (std::uint64_t k : ctx_.all_gather(static_cast<std::uint64_t>(mine)))
    shard_counts_.push_back(static_cast<std::int64_t>(k));
  if (options_.broadcast_at_start) ctx_.broadcast_(params_, 0);
}

DataParallel::Plan DataParallel::plan(std::int64_t global_batch) const {
  // The global batch cut into the job's shards (near-equal, the first B % S one row longer) exactly as one
  // process of S shards cuts it; rank r computes a contiguous run of shard_counts_[r] of them.
  std::int64_t whole = 0;
  for (std::int64_t k : shard_counts_) whole += k;
  // Fewer rows than shards: one shard per rank (as sharded_backward gives one row per shard).
  const std::vector<std::int64_t> ones(shard_counts_.size(), 1);
  const std::vector<std::int64_t>& counts = global_batch >= whole ? shard_counts_ : ones;
  if (global_batch < whole) whole = ctx_.world_size();
  UNROLL_CHECK(global_batch >= whole, ValueError,
               "DataParallel::backward: fewer rows than ranks; got a batch of {} over {} ranks, expected at least "
               "one row per rank",
               global_batch, ctx_.world_size());
  Plan p;
  p.whole_shards = whole;
  std::int64_t shard = 0, row = 0;
  for (int r = 0; r < ctx_.world_size(); ++r) {
    if (r == ctx_.rank()) p.first_shard = shard, p.begin = row;
    for (std::int64_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i, ++shard) {
      const std::int64_t rows = global_batch / whole + (shard < global_batch % whole ? 1 : 0);
      if (r == ctx_.rank()) p.sizes.push_back(rows);
      row += rows;
    }
    if (r == ctx_.rank()) p.end = row;
  }
  return p;
}

std::pair<std::int64_t, std::int64_t> DataParallel::slice(std::int64_t global_batch) const {
  const Plan p = plan(global_batch);
  return {p.begin, p.end};
}

double DataParallel::backward(std::int64_t global_batch,
                              unroll::detail::FunctionRef<Tensor(const autograd::Shard&)> loss_fn,
                              std::optional<std::uint64_t> seed) {
  const Plan p = plan(global_batch);  // the same on every rank: a bad batch fails everywhere
  // The same step seed on every rank (one draw, or the caller's), so shard i's stream is the same whichever
  // rank runs it.
  const std::uint64_t step_seed = seed ? *seed : default_generator().next_u64();
  const std::int64_t begin = p.begin, end = p.end;
  autograd::ShardOptions so{.shards = 0, .sizes = p.sizes, .seed = step_seed, .sum_loss = false, .part = {}};
  so.part = {.whole_rows = global_batch, .first_row = begin, .first_shard = p.first_shard,
             .whole_shards = p.whole_shards};

  // This backward's gradients alone are reduced: what `.grad` held before is put aside and added back after.
  std::vector<Tensor> before(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    before[i] = params_[i].grad();
    params_[i].zero_grad();
  }
  const auto t0 = Clock::now();
  double loss = 0;
  try {
    ctx_.agree([&] { loss = autograd::sharded_backward(end - begin, loss_fn, so); });
  } catch (...) {
    for (std::size_t i = 0; i < params_.size(); ++i) params_[i].leaf()->grad = before[i];  // nothing touched
    throw;
  }
  stats_ = {};
  stats_.compute_seconds = since(t0);
  const auto t1 = Clock::now();
  reduce_gradients();
  ctx_.all_reduce_buffer(&loss, 1, Dtype::float64, {.op = ReduceOp::sum, .deterministic = options_.deterministic});
  stats_.reduce_seconds = since(t1);
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (before[i].defined()) {
      Tensor& g = params_[i].leaf()->grad;
      g = g.defined() ? add(before[i], g) : before[i];
    }
  ++calls_;
  if (options_.check_every > 0 && calls_ % options_.check_every == 0) check_replicas();
  return loss;
}

void DataParallel::reduce_gradients() {
  // Which parameters got a gradient on some rank: those get one (zeros where this rank's slice did not reach
  // them) on every rank, so every rank reduces the same buffers and the optimizers see the same gradients.
  std::vector<std::int64_t> reached(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) reached[i] = params_[i].grad().defined() ? 1 : 0;
  if (ctx_.world_size() > 1 && !reached.empty())
    ctx_.all_reduce_buffer(reached.data(), static_cast<std::int64_t>(reached.size()), Dtype::int64,
                           {.op = ReduceOp::max, .deterministic = true});
  for (std::size_t i = 0; i < params_.size(); ++i)
    if (reached[i] != 0 && !params_[i].grad().defined())
      params_[i].leaf()->grad = zeros(params_[i].shape(), params_[i].dtype());
  if (ctx_.world_size() == 1) return;

  // Buckets: consecutive parameters of one dtype, up to bucket_bytes, packed into one buffer.
  std::vector<unsigned char> buffer;
  std::size_t i = 0;
  while (i < params_.size()) {
    if (reached[i] == 0) {
      ++i;
      continue;
    }
    const Dtype d = params_[i].dtype();
    const std::size_t elem = dtype_size(d);
    std::size_t j = i, bytes = 0;
    while (j < params_.size() && (reached[j] == 0 || params_[j].dtype() == d)) {
      const std::size_t b = reached[j] != 0 ? static_cast<std::size_t>(params_[j].numel()) * elem : 0;
      if (bytes > 0 && bytes + b > static_cast<std::size_t>(options_.bucket_bytes)) break;
      bytes += b;
      ++j;
    }
    buffer.resize(bytes);
    std::size_t at = 0;
    for (std::size_t k = i; k < j; ++k)
      if (reached[k] != 0) {
        const Tensor g = params_[k].grad();
        const std::size_t b = static_cast<std::size_t>(g.numel()) * elem;
        std::memcpy(buffer.data() + at, g.raw(), b);
        at += b;
      }
    ctx_.all_reduce_buffer(buffer.data(), static_cast<std::int64_t>(bytes / elem), d,
                           {.op = ReduceOp::sum, .deterministic = options_.deterministic});
    at = 0;
    for (std::size_t k = i; k < j; ++k)
      if (reached[k] != 0) {
        Tensor& g = params_[k].leaf()->grad;
        const std::size_t b = static_cast<std::size_t>(g.numel()) * elem;
        g = Tensor::empty(g.shape(), d);  // a fresh buffer: the old one may be shared (e.g. with a saved tensor)
        std::memcpy(g.raw(), buffer.data() + at, b);
        at += b;
      }
    stats_.bytes_reduced += static_cast<std::int64_t>(bytes);
    ++stats_.buckets;
    i = j;
  }
}

void DataParallel::check_replicas() const {
  const std::vector<std::uint64_t> sums = ctx_.all_gather(checksum(params_));
  std::vector<int> drifted;
  for (int r = 1; r < ctx_.world_size(); ++r)
    if (sums[static_cast<std::size_t>(r)] != sums[0]) drifted.push_back(r);
  UNROLL_CHECK(drifted.empty(), StateError,
               "DataParallel: the ranks' parameters differ after {} steps; got rank(s) {} different from rank 0 "
               "(checksums {:016x} against {:016x}), expected the same parameters on every rank",
               calls_, fmt::join(drifted, ", "), drifted.empty() ? 0 : sums[static_cast<std::size_t>(drifted[0])],
               sums[0]);
}

void broadcast_state_dict(const Context& ctx, StateDict& dict, int root) {
  if (ctx.world_size() == 1) return;
  // The root's layout as text ("name\tdtype\tdim d0 d1 ...\n" per entry), then every tensor's values.
  std::string layout;
  ctx.agree([&] {  // the root's checks, agreed: a failure there must not leave the others waiting
    if (ctx.rank() != root) return;
    for (const auto& [name, t] : dict) {
      UNROLL_CHECK(name.find_first_of("\t\n") == std::string::npos, ValueError,
                   "broadcast_state_dict: entry names cannot hold tabs or newlines; got '{}'", name);
      UNROLL_CHECK(t.defined(), ValueError, "broadcast_state_dict: entry '{}' is undefined; expected a tensor", name);
      layout += fmt::format("{}\t{}\t{}", name, static_cast<int>(t.dtype()), t.dim());
      for (int d = 0; d < t.dim(); ++d) layout += fmt::format(" {}", t.shape()[d]);
      layout += '\n';
    }
  });
  ctx.broadcast_(layout, root);
  if (ctx.rank() != root) {
    StateDict received;
    std::istringstream lines(layout);
    std::string line;
    while (std::getline(lines, line)) {
      const std::size_t tab = line.find('\t');
      std::istringstream fields(line.substr(tab + 1));
      int dtype = 0, rank = 0;
      fields >> dtype >> rank;
      std::vector<std::int64_t> dims(static_cast<std::size_t>(rank));
      for (std::int64_t& d : dims) fields >> d;
      received.insert(line.substr(0, tab), Tensor::empty(Shape(dims), static_cast<Dtype>(dtype)));
    }
    dict = std::move(received);
  }
  std::vector<Tensor> values;
  for (const auto& [name, t] : dict) values.push_back(t);
  ctx.broadcast_(values, root);  // the handles share the entries' storage
}

}  // namespace unroll::dist
