#include "checkpoint.hpp"

#include <algorithm>
#include <memory>
#include <utility>

#include "../core/allocator.hpp"
#include "../core/error.hpp"
#include "tape.hpp"

namespace unroll::autograd {

namespace {
constexpr const char* kWhere = "checkpoint";

// The state of every generator the node replays, and which generator each belongs to.
struct GeneratorStates {
  std::vector<Generator*> generators;
  std::vector<Generator::State> states;
  static GeneratorStates save(const CheckpointOptions& o) {
    GeneratorStates g;
    g.generators.push_back(&default_generator());
    g.generators.insert(g.generators.end(), o.generators.begin(), o.generators.end());
    for (Generator* gen : g.generators) g.states.push_back(gen->state());
    return g;
  }
};

// Sets each generator to the saved state (the default one: the calling thread's, which in backward may be
// another thread's than in forward), and puts every one back as it was afterwards.
class ReplayGenerators {
 public:
  explicit ReplayGenerators(const GeneratorStates& saved) {
    targets_ = saved.generators;
    targets_[0] = &default_generator();
    for (std::size_t i = 0; i < targets_.size(); ++i) {
      before_.push_back(targets_[i]->state());
      targets_[i]->set_state(saved.states[i]);
    }
  }
  ~ReplayGenerators() {
    for (std::size_t i = targets_.size(); i-- > 0;) targets_[i]->set_state(before_[i]);
  }
  ReplayGenerators(const ReplayGenerators&) = delete;
  ReplayGenerators& operator=(const ReplayGenerators&) = delete;

 private:
  std::vector<Generator*> targets_;
  std::vector<Generator::State> before_;
};

struct Saved {
  std::shared_ptr<const CheckpointFn> fn;
  std::vector<Tensor> inputs;  // detached: the values fn ran on
  std::vector<Shape> output_shapes;
  std::vector<Dtype> output_dtypes;
  GeneratorStates generators;
};

void run_backward(const Saved& s, GradSink& sink) {
  const ReplayGenerators replay(s.generators);
  Tape tape;  // the recomputation's own, active until it is destroyed
  LeafGrads grads;
  tape.collect_leaf_grads(&grads);
  std::vector<Tensor> leaves;  // fresh leaves over the inputs, so their gradients arrive in `grads`
  leaves.reserve(s.inputs.size());
  for (std::size_t i = 0; i < s.inputs.size(); ++i) {
    leaves.push_back(s.inputs[i].detach());
    if (sink.needs(i)) leaves.back().requires_grad_();
  }
  std::vector<Tensor> outs;
  {
    const EnableGradGuard grad_on;
    outs = (*s.fn)(leaves);
  }
  UNROLL_CHECK(outs.size() == s.output_shapes.size(), StateError,
               "{}: the recomputation returned another number of outputs; got {}, expected {} (the function must "
               "be deterministic)",
               kWhere, outs.size(), s.output_shapes.size());
  std::vector<Tensor> roots, seeds;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    UNROLL_CHECK(outs[k].defined() && outs[k].shape() == s.output_shapes[k] && outs[k].dtype() == s.output_dtypes[k],
                 StateError,
                 "{}: the recomputation returned another shape or dtype for output {}; got {}, expected {} {} (the "
                 "function must be deterministic)",
                 kWhere, k,
                 outs[k].defined() ? fmt::format("{} {}", outs[k].shape(), outs[k].dtype()) : std::string("undefined"),
                 s.output_shapes[k], s.output_dtypes[k]);
    const Tensor* g = sink.grad_output_if(k);
    if (g == nullptr || !outs[k].requires_grad()) continue;  // no gradient reached it, or it depends on nothing
    roots.push_back(outs[k]);
    seeds.push_back(*g);
  }
  if (!roots.empty()) {
    try {
      tape.backward(roots, seeds);
    } catch (const StateError&) {  // most likely a tensor from the outer graph read inside fn
      unroll::detail::rethrow_with_context(fmt::format(
          "{}: backward through the recomputation (a tensor computed outside the checkpointed function that needs "
          "a gradient must be one of its inputs, e.g. a weight after weight drop): ",
          kWhere));
    }
  }
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    if (!leaves[i].requires_grad()) continue;
    if (const Tensor* g = grads.find(*leaves[i].leaf())) sink.add(i, *g);
  }
  grads.for_each([&](unroll::detail::LeafMeta& leaf, Tensor& g) {
    for (const Tensor& l : leaves)
      if (l.leaf() == &leaf) return;  // an input's: added above
    sink.add_leaf(leaf, std::move(g));
  });
}
}  // namespace

std::int64_t measure_kept_bytes(const std::function<void()>& fn, const std::vector<Generator*>& generators) {
  const GeneratorStates saved = GeneratorStates::save({.generators = generators});
  const ReplayGenerators put_back(saved);  // sets them to their state now, and back to it after
  Tape scratch;                            // what fn records goes here, freed on return
  const std::int64_t before = thread_memory().live_bytes;
  fn();
  return std::max<std::int64_t>(thread_memory().live_bytes - before, 1);
}

std::vector<Tensor> checkpoint(CheckpointFn fn, std::span<const Tensor> inputs, const CheckpointOptions& options) {
  UNROLL_CHECK(static_cast<bool>(fn), ValueError, "{}: no function; got an empty function, expected one to run",
               kWhere);
  for (std::size_t i = 0; i < inputs.size(); ++i)
    UNROLL_CHECK(inputs[i].defined(), ValueError,
                 "{}: input {} is undefined; got an undefined tensor, expected a "
                 "defined one",
                 kWhere, i);
  if (!grad_enabled()) return fn(inputs);
  Saved s;
  s.generators = GeneratorStates::save(options);
  std::vector<Tensor> outs;
  {
    const NoGradGuard no_grad;  // nothing inside is recorded: that is the point
    outs = fn(inputs);
  }
  std::vector<Tensor*> out_ptrs;
  for (std::size_t k = 0; k < outs.size(); ++k) {
    Tensor& o = outs[k];
    UNROLL_CHECK(o.defined() && is_floating(o.dtype()), ValueError,
                 "{}: output {} must be a defined floating-point tensor; got {}", kWhere, k,
                 o.defined() ? fmt::format("dtype {}", o.dtype()) : std::string("an undefined tensor"));
    // A copy of its own: fn may return an input as it is, or a view that would keep a larger buffer alive for
    // as long as the node lives (a fused sequence's final state is a row of its [T + 1, B, w] states).
    {
      const NoGradGuard no_grad;
      o = copy_of(o);
    }
    s.output_shapes.push_back(o.shape());
    s.output_dtypes.push_back(o.dtype());
    out_ptrs.push_back(&o);
  }
  std::vector<const Tensor*> in_ptrs;
  for (const Tensor& t : inputs) {
    s.inputs.push_back(t.detach());
    in_ptrs.push_back(&t);
  }
  s.fn = std::make_shared<const CheckpointFn>(std::move(fn));
  record(kWhere, std::span<Tensor* const>(out_ptrs), std::span<const Tensor* const>(in_ptrs),
         [s = std::move(s)](GradSink& sink) { run_backward(s, sink); });
  return outs;
}

}  // namespace unroll::autograd
