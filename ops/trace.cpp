#include "trace.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "../autograd/tape.hpp"
#include "../core/random.hpp"
#include "elementwise.hpp"

namespace unroll::detail {

const char* trace_op_name(TraceOp op) {
  switch (op) {
    case TraceOp::input: return "input";
    case TraceOp::external: return "external";
    case TraceOp::add: case TraceOp::add_s: return "add";
    case TraceOp::sub: case TraceOp::sub_s: return "sub";
    case TraceOp::mul: case TraceOp::mul_s: return "mul";
    case TraceOp::div: case TraceOp::div_s: return "div";
    case TraceOp::rsub_s: return "rsub";
    case TraceOp::rdiv_s: return "rdiv";
    case TraceOp::neg: return "neg";
    case TraceOp::pow_s: return "pow";
    case TraceOp::exp: return "exp";
    case TraceOp::log: return "log";
    case TraceOp::sqrt: return "sqrt";
    case TraceOp::abs: return "abs";
    case TraceOp::tanh: return "tanh";
    case TraceOp::sigmoid: return "sigmoid";
    case TraceOp::relu: return "relu";
    case TraceOp::logsigmoid: return "logsigmoid";
    case TraceOp::silu: return "silu";
    case TraceOp::softplus: return "softplus";
    case TraceOp::narrow: return "narrow";
    case TraceOp::cat: return "cat";
    case TraceOp::sum_last: return "sum";
    case TraceOp::mean_last: return "mean";
    case TraceOp::linear: return "linear";
    case TraceOp::matmul: return "matmul";
    case TraceOp::transpose: return "transpose";
  }
  return "?";
}

namespace {
TraceNode make_node(TraceOp op, std::vector<int> args, const Shape& shape, std::int64_t i0 = 0, std::int64_t i1 = 0,
                    double a = 0, double b = 0) {
  return TraceNode{.op = op, .args = std::move(args), .a = a, .b = b, .i0 = i0, .i1 = i1, .shape = shape};
}
}  // namespace

class Tracer {
 public:
  Tracer(TraceGraph& graph, const autograd::Tape& tape) : g_(graph), tape_(tape) {}

  void fail(std::string why) {
    if (why_not.empty()) why_not = std::move(why);
  }
  // A tensor with a value shape: [B, n], [1, n], [n] or a scalar.
  bool value_shape(const char* op, const Shape& s) {
    if (s.dim() <= 1 || (s.dim() == 2 && (s[0] == g_.batch || s[0] == 1))) return true;
    fail(fmt::format("'{}' on a tensor of shape {}: only [batch, features] tensors, [features] vectors and "
                     "scalars are fused (batch = {})",
                     op, s, g_.batch));
    return false;
  }
  int add_node(TraceNode n) {
    g_.nodes.push_back(std::move(n));
    return static_cast<int>(g_.nodes.size()) - 1;
  }
  int add_input(const Tensor& placeholder, std::int64_t position) {
    const int id = add_node(make_node(TraceOp::input, {}, placeholder.shape(), position));
    by_leaf_[placeholder.leaf()] = id;
    g_.inputs.push_back(id);
    return id;
  }
  // The node of `t` (registering a parameter or constant on first sight), or -1 after fail().
  int value(const char* op, const Tensor& t) {
    if (t.tape_key() != 0 && t.tape_key() == tape_.key()) {
      if (auto it = by_slot_.find(t.slot()); it != by_slot_.end()) return it->second;
      const char* producer = tape_.producer_name(t);
      fail(fmt::format("'{}' cannot be fused (it is not one of the ops a fused step is made of: elementwise ops "
                       "and activations, linear/matmul by a parameter, cat/chunk/narrow/split along the features, "
                       "sum/mean over the features)",
                       producer != nullptr ? producer : "an op"));
      return -1;
    }
    if (t.leaf() != nullptr) {
      if (auto it = by_leaf_.find(t.leaf()); it != by_leaf_.end()) return it->second;
      const int id = external(t);
      by_leaf_[t.leaf()] = id;
      return id;
    }
    if (t.requires_grad()) {
      fail(fmt::format("'{}' reads a tensor computed outside the step that requires grad and is not a parameter "
                       "(shape {}): fusing would freeze it; compute it inside the step, or detach it",
                       op, t.shape()));
      return -1;
    }
    for (std::size_t i = 0; i < constants_.size(); ++i) {  // one node per constant tensor
      const Tensor& c = g_.externals[static_cast<std::size_t>(g_.nodes[static_cast<std::size_t>(constants_[i])].i0)];
      if (c.same_data(t) && c.shape() == t.shape()) return constants_[i];
    }
    const int id = external(t);
    constants_.push_back(id);
    return id;
  }
  void record(TraceOp op, std::span<const Tensor* const> in, const Tensor& out, double a, double b, std::int64_t i0,
              std::int64_t i1) {
    if (!why_not.empty()) return;
    const char* name = trace_op_name(op);
    TraceNode n = make_node(op, {}, out.shape(), i0, i1, a, b);
    // Values are [batch, features] rows (or broadcast over them); a product's weight and a transpose are
    // matrices of any shape.
    const bool matrix_op = op == TraceOp::transpose;
    const bool product = op == TraceOp::linear || op == TraceOp::matmul;
    for (std::size_t k = 0; k < in.size(); ++k) {
      const Tensor* t = in[k];
      if (t == nullptr || !t->defined()) continue;  // linear without bias
      const int v = value(name, *t);
      if (v < 0) return;
      if (!matrix_op && !(product && k == 1) && !value_shape(name, t->shape())) return;
      n.args.push_back(v);
    }
    if (!out.requires_grad()) return;  // every input a constant: so is the result (looked up as one when read)
    if (!matrix_op && !value_shape(name, out.shape())) return;
    if (op == TraceOp::linear && n.args.size() == 3) {  // x Wᵀ + b: the product, then the bias as an add
      const int bias = n.args[2];
      n.args.pop_back();
      const int product = add_node(n);
      n = make_node(TraceOp::add, {product, bias}, out.shape());
    }
    by_slot_[out.slot()] = add_node(std::move(n));
  }
  // The node of a returned state tensor, or -1 after fail().
  int output(const Tensor& t) {
    if (!t.requires_grad()) {
      fail(fmt::format("the step returned a state tensor that does not depend on its inputs or parameters "
                       "(shape {}): nothing to fuse",
                       t.shape()));
      return -1;
    }
    return value("the step's result", t);
  }

  std::string why_not;

 private:
  int external(const Tensor& t) {
    g_.externals.push_back(t);
    return add_node(make_node(TraceOp::external, {}, t.shape(), static_cast<std::int64_t>(g_.externals.size()) - 1));
  }

  TraceGraph& g_;
  const autograd::Tape& tape_;
  std::unordered_map<const void*, int> by_leaf_;
  std::unordered_map<std::uint32_t, int> by_slot_;
  std::vector<int> constants_;
};

void trace_record(TraceOp op, std::span<const Tensor* const> in, const Tensor& out, double a, double b,
                  std::int64_t i0, std::int64_t i1) {
  tls_tracer->record(op, in, out, a, b, i0, i1);
}

namespace {

// Sets and restores everything tracing changes on this thread.
class TraceScope {
 public:
  TraceScope(Tracer& tracer, std::int64_t& reads)
      : grad_(autograd::tls_grad_mode), tracer_(tls_tracer), reads_(tls_value_reads), op_(tls_op_name) {
    autograd::tls_grad_mode = true;  // a trace needs the tape, even when the caller runs without gradients
    tls_tracer = &tracer;
    tls_value_reads = &reads;
    tls_op_name = nullptr;
  }
  ~TraceScope() {
    autograd::tls_grad_mode = grad_;
    tls_tracer = tracer_;
    tls_value_reads = reads_;
    tls_op_name = op_;
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  bool grad_;
  Tracer* tracer_;
  std::int64_t* reads_;
  const char* op_;
};

TraceResult trace_once(const std::function<std::vector<Tensor>(std::span<const Tensor>)>& step,
                       std::span<const Tensor> examples, std::uint64_t seed) {
  TraceResult r;
  r.graph.batch = examples[0].dim() >= 1 ? examples[0].shape()[0] : 1;
  r.graph.dtype = examples[0].dtype();
  autograd::Tape tape;  // the trace's own tape, dropped afterwards: nothing reaches the caller's
  Tracer tracer(r.graph, tape);
  std::int64_t reads = 0;
  std::vector<Tensor> placeholders;
  Generator gen(seed);
  for (std::size_t k = 0; k < examples.size(); ++k) {
    const Tensor& e = examples[k];
    // Values in (0.2, 0.8): no op of a sensible cell (log, sqrt, division) meets a nan or an infinity there.
    placeholders.push_back(uniform(e.shape(), 0.2, 0.8, e.dtype(), gen).requires_grad_());
    if (!tracer.value_shape(k == 0 ? "the step's input" : "the step's state", e.shape()) ||
        (e.dim() == 2 && e.shape()[0] != r.graph.batch && k > 0)) {
      tracer.fail(fmt::format("{} has shape {}: only [batch, features] inputs and states are fused",
                              k == 0 ? "the input" : "a state tensor", e.shape()));
    }
    tracer.add_input(placeholders.back(), static_cast<std::int64_t>(k));
  }
  std::vector<Tensor> outs;
  {
    TraceScope scope(tracer, reads);
    outs = step(placeholders);
  }
  for (const Tensor& t : outs) {
    if (!tracer.why_not.empty()) break;
    if (!t.defined()) {
      tracer.fail("the step returned an undefined state tensor");
      break;
    }
    const int v = tracer.output(t);
    if (v >= 0) r.graph.outputs.push_back(v);
  }
  if (tracer.why_not.empty() && reads > 0)
    tracer.fail(fmt::format("the step read the value of a tensor that requires grad {} time(s) (item() or "
                            "to_vector()): a trace records one path through the code, so a step that branches on "
                            "its values cannot be fused",
                            reads));
  r.why_not = std::move(tracer.why_not);
  tape.clear();
  return r;
}

bool same_values(const Tensor& a, const Tensor& b) {
  if (a.same_data(b) && a.shape() == b.shape()) return true;
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace

TraceResult trace_step(const std::function<std::vector<Tensor>(std::span<const Tensor>)>& step,
                       std::span<const Tensor> examples) {
  UNROLL_CHECK(!examples.empty() && examples[0].defined(), ValueError,
               "fuse: nothing to trace; got no input, expected x_t and the state tensors");
  TraceResult first = trace_once(step, examples, 0x7ace1);
  if (!first.why_not.empty()) return first;
  // Again on other values: the same ops must run, and the constants must not have changed with the inputs.
  TraceResult second = trace_once(step, examples, 0x7ace2);
  if (!second.why_not.empty()) return second;
  const TraceGraph &g1 = first.graph, &g2 = second.graph;
  bool same = g1.nodes == g2.nodes && g1.outputs == g2.outputs && g1.externals.size() == g2.externals.size();
  std::size_t changed_constant = g1.externals.size();
  for (std::size_t i = 0; same && i < g1.externals.size(); ++i) {
    const Tensor &a = g1.externals[i], &b = g2.externals[i];
    if (a.requires_grad() != b.requires_grad()) same = false;
    else if (a.requires_grad() ? a.leaf() != b.leaf() : !same_values(a, b))
      same = false, changed_constant = i;
  }
  if (!same) {
    first.why_not =
        changed_constant < g1.externals.size()
            ? fmt::format("a tensor the step treats as a constant (shape {}) changed with its inputs: it was "
                          "computed from them out of sight of autograd (detach(), an op without gradient); a "
                          "trace cannot follow it",
                          g1.externals[changed_constant].shape())
            : std::string("the step ran different ops on different input values (it branches on its values): a "
                          "trace records one path through the code, so it cannot be fused");
  }
  return first;
}

}  // namespace unroll::detail
