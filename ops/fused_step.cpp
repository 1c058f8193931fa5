#include "fused_step.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"
#include "kernels.hpp"
#include "linear.hpp"
#include "matmul.hpp"
#include "reduce.hpp"
#include "shape_ops.hpp"

namespace unroll::detail {

namespace {

enum Dep : std::uint8_t { kParams = 0, kInput = 1, kState = 2 };

// Where a value's row r is: buffer `buf` (0 = the step's own buffer, k >= 1 = the node's input k - 1) at
// off + r * ld, or at off for every row when !per_row (a parameter broadcast over the batch).
struct Loc {
  int buf = -1;
  std::int64_t off = 0, ld = 0, w = 0;
  bool per_row = true;
  bool defined() const { return buf >= 0; }
};

struct Instr {
  TraceOp op = TraceOp::input;
  int out = -1;
  std::vector<int> args;
  double a = 0, b = 0;
  int matrix = -1;          // products: the node input holding the weight
  std::int64_t w_off = 0;   // linear by a column block of it: the block's first column
  std::int64_t w_ld = 0;    // the weight's row length
  bool weight_rows = true;  // adds its weight-gradient rows (false: a split product whose owner adds them)
  std::vector<int> row_parts;  // a split product's owner: the values whose rows [x_t, h] are W's gradient rows
  // Bit k: backward's gradient for argument k is the first write to that gradient block, so it stores
  // instead of adding (the block is not zeroed first: see store_first_writes).
  std::uint32_t store_grad = 0;
  int bias = -1;  // products: a parameter vector added to every row of the result (x Wᵀ + b, as linear does)
  // Its value, operands and gradients are whole contiguous [B, w] blocks of one width (no broadcast): run
  // ops first, it is one loop over B * w elements.
  bool flat = false;
};

struct Stage {
  bool product;
  std::size_t begin, end;  // instrs [begin, end)
  // Elementwise stages: each op over all rows before the next (small rows: fewer, longer loops), instead of
  // each row through all ops (wide rows: a row's values stay in L1 from op to op). See kOpsFirstBytes.
  bool ops_first = false;
};

std::int64_t width_of(const Shape& s) { return s.dim() == 0 ? 1 : s.back(); }

// The forward values an op's backward reads (what the unfused op saves): its first and second operand, its
// result. The step keeps exactly these; backward_row reads nothing else.
struct BackwardReads {
  bool a = false, b = false, y = false;
};
BackwardReads backward_reads(TraceOp op) {
  switch (op) {
    case TraceOp::mul: return {true, true, false};
    case TraceOp::div: return {false, true, true};
    case TraceOp::exp: case TraceOp::sqrt: case TraceOp::tanh: case TraceOp::sigmoid: case TraceOp::relu:
      return {false, false, true};
    case TraceOp::log: case TraceOp::abs: case TraceOp::pow_s: case TraceOp::rdiv_s: case TraceOp::logsigmoid:
    case TraceOp::silu: case TraceOp::softplus: case TraceOp::linear: case TraceOp::matmul:
      return {true, false, false};
    default: return {};
  }
}

bool is_product(TraceOp op) { return op == TraceOp::linear || op == TraceOp::matmul; }

}  // namespace

class FusedProgram {
 public:
  TraceGraph graph;
  std::vector<bool> live;      // the returned state depends on it
  std::vector<bool> replayed;  // computed per sequence with ordinary ops (a step input depends on it)
  std::vector<std::uint8_t> dep;
  // The node's inputs, in this order: input-only values (hoisted, [T*B, w]), the state, parameter values.
  std::vector<int> seq_nodes, state_nodes, param_nodes;
  std::vector<Instr> instrs;
  std::vector<Stage> stages;
  std::vector<Loc> floc, gloc;    // per graph node: its forward value, its gradient
  // Elements of the step's saved buffer, of its scratch buffer (values backward does not read: buffer
  // n_inputs() + 1, reused by every step) and of its gradient buffer.
  std::int64_t arena = 0, scratch = 0, garena = 0;
  std::int64_t B = 0;
  // Backward: whether seeding output k's gradient stores (the first write to its block), and the gradient
  // blocks that must be zeroed each step (those no write can store into first), as [offset, length).
  std::vector<bool> seed_stores;
  std::vector<std::pair<std::int64_t, std::int64_t>> gzero;
  // same_as[i] = p: node i (product + bias, folded into the product p) is p's value and gradient.
  std::vector<int> same_as;

  std::size_t n_inputs() const { return seq_nodes.size() + state_nodes.size() + param_nodes.size(); }
  int seq_buf(std::size_t k) const { return 1 + static_cast<int>(k); }
  int state_buf(std::size_t k) const { return 1 + static_cast<int>(seq_nodes.size() + k); }
  int param_buf(std::size_t k) const { return 1 + static_cast<int>(seq_nodes.size() + state_nodes.size() + k); }
};

namespace {

// Marks split_products_of_cat leaves on the nodes it makes (TraceNode::a of a linear, b of a narrow).
constexpr double kWeightRowsOwner = 1, kNoWeightRows = 2, kDetachedSlice = 1;

// What each node depends on, before any rewriting (the input kInput, a state kState, else kParams).
std::vector<std::uint8_t> plain_deps(const TraceGraph& g) {
  std::vector<std::uint8_t> dep(g.nodes.size(), kParams);
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const TraceNode& node = g.nodes[i];
    if (node.op == TraceOp::input) {
      dep[i] = node.i0 == 0 ? kInput : kState;
      continue;
    }
    for (int a : node.args) dep[i] = std::max(dep[i], dep[static_cast<std::size_t>(a)]);
  }
  return dep;
}

// linear(cat([x-part, h-part]), W) -> linear(x-part, W[:, :k]) + linear(h-part, W[:, k:]): a cell that
// multiplies the concatenation of its input and its state (the minimal gated unit, many gated cells) then
// has its input half hoisted into one GEMM over all steps like any input projection. The column slices of
// W are parameter-only values, computed once per sequence.
TraceGraph split_products_of_cat(TraceGraph g) {
  const std::vector<std::uint8_t> dep = plain_deps(g);
  auto mixed = [&](const TraceNode& node) {
    if (node.op != TraceOp::linear) return false;
    const TraceNode& c = g.nodes[static_cast<std::size_t>(node.args[0])];
    if (c.op != TraceOp::cat) return false;
    // Worth it when the input block is at least as wide as the state block: then most of the product's work
    // moves into the one large GEMM. With a narrow input block (char_lm's MGU: 48 input columns against 256)
    // the step's GEMM hardly shrinks, and the hoisted values read back every step cost more than they save:
    // 5 interleaved char_lm runs, split 33.9k tokens/s, not split 38.1k (bench/RESULTS.md).
    std::int64_t input = 0, state = 0;
    for (int a : c.args) {
      const std::uint8_t d = dep[static_cast<std::size_t>(a)];
      if (d != kParams) (d == kInput ? input : state) += g.nodes[static_cast<std::size_t>(a)].shape.back();
    }
    return input > 0 && state > 0 && input >= state;
  };
  if (std::none_of(g.nodes.begin(), g.nodes.end(), mixed)) return g;
  TraceGraph out;
  out.externals = g.externals;
  out.batch = g.batch;
  out.dtype = g.dtype;
  std::vector<int> remap(g.nodes.size(), -1);
  auto push = [&](TraceNode n) {
    out.nodes.push_back(std::move(n));
    return static_cast<int>(out.nodes.size()) - 1;
  };
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    TraceNode node = g.nodes[i];
    for (int& a : node.args) a = remap[static_cast<std::size_t>(a)];
    if (!mixed(g.nodes[i])) {
      remap[i] = push(std::move(node));
      continue;
    }
    const TraceNode& c = g.nodes[static_cast<std::size_t>(g.nodes[i].args[0])];
    const int w = node.args[1];
    const std::int64_t n = node.shape.back();
    // W's gradient is computed as unsplit: ONE set of deferred rows [x_t, h] per step, emitted by the last
    // state block's product (kWeightRowsOwner, i0 = the cat node, whose parts it reads); the input blocks
    // multiply a detached slice (narrow's b = 1), the other state blocks add no weight rows. Without the
    // cat's parts all input- or state-dependent (a constant part), each block's rows go separately.
    bool whole_rows = true;
    int last_state = -1;
    for (int part : c.args) {
      const std::uint8_t d = dep[static_cast<std::size_t>(part)];
      whole_rows &= d != kParams;
      if (d == kState) last_state = part;
    }
    std::int64_t off = 0;
    int sum = -1;
    for (int part : c.args) {
      const std::int64_t k = g.nodes[static_cast<std::size_t>(part)].shape.back();
      const bool input_block = dep[static_cast<std::size_t>(part)] != kState;
      const int slice = push(TraceNode{.op = TraceOp::narrow, .args = {w}, .a = 0,
                                       .b = whole_rows && input_block ? kDetachedSlice : 0.0, .i0 = off, .i1 = k,
                                       .shape = Shape({n, k})});
      const double rows = !whole_rows ? 0.0 : part == last_state ? kWeightRowsOwner : kNoWeightRows;
      const int product = push(TraceNode{.op = TraceOp::linear, .args = {remap[static_cast<std::size_t>(part)], slice},
                                         .a = input_block ? 0.0 : rows, .b = 0,
                                         .i0 = rows == kWeightRowsOwner ? remap[static_cast<std::size_t>(g.nodes[i].args[0])] : 0,
                                         .i1 = 0, .shape = node.shape});
      sum = sum < 0 ? product
                    : push(TraceNode{.op = TraceOp::add, .args = {sum, product}, .a = 0, .b = 0, .i0 = 0, .i1 = 0,
                                     .shape = node.shape});
      off += k;
    }
    remap[i] = sum;
  }
  for (int v : g.inputs) out.inputs.push_back(remap[static_cast<std::size_t>(v)]);
  for (int v : g.outputs) out.outputs.push_back(remap[static_cast<std::size_t>(v)]);
  return out;
}

// (a + b) + c -> (a + c) + b when a depends on the input only, b on the state and c on parameters only (a
// bias after the sum of an input projection and a state product, split or written out): a + c is then
// hoisted with the input projection (one linear with bias over all steps), one pass less per step and the
// bias's gradient summed once per sequence instead of once per step.
TraceGraph hoist_bias_adds(TraceGraph g) {
  const std::vector<std::uint8_t> dep = plain_deps(g);
  const std::size_t n = g.nodes.size();
  std::vector<int> uses(n, 0), user(n, -1);
  for (std::size_t i = 0; i < n; ++i)
    for (int a : g.nodes[i].args) ++uses[static_cast<std::size_t>(a)], user[static_cast<std::size_t>(a)] = static_cast<int>(i);
  for (int o : g.outputs) uses[static_cast<std::size_t>(o)] += 2;  // a returned value keeps its own node
  auto is_add = [&](std::size_t i) { return g.nodes[i].op == TraceOp::add && g.nodes[i].args.size() == 2; };
  // inner[u] = v: the add u = a + b is rewritten with v = u + c folded in.
  std::vector<int> folded(n, -1);
  for (std::size_t u = 0; u < n; ++u) {
    if (!is_add(u) || uses[u] != 1) continue;
    const auto v = static_cast<std::size_t>(user[u]);
    if (!is_add(v) || g.nodes[v].args[0] != static_cast<int>(u) || g.nodes[v].shape != g.nodes[u].shape) continue;
    const auto a = static_cast<std::size_t>(g.nodes[u].args[0]), b = static_cast<std::size_t>(g.nodes[u].args[1]);
    const auto c = static_cast<std::size_t>(g.nodes[v].args[1]);
    if (dep[a] == kInput && dep[b] == kState && dep[c] == kParams && g.nodes[a].shape == g.nodes[u].shape)
      folded[u] = static_cast<int>(v);
  }
  if (std::all_of(folded.begin(), folded.end(), [](int f) { return f < 0; })) return g;
  TraceGraph out;
  out.externals = g.externals;
  out.batch = g.batch;
  out.dtype = g.dtype;
  std::vector<int> remap(n, -1);
  auto push = [&](TraceNode node) {
    out.nodes.push_back(std::move(node));
    return static_cast<int>(out.nodes.size()) - 1;
  };
  // The bias is often first used after the sum it joins (tanh(x W + h U + b) meets b last): a parameter-only
  // value depends on nothing that changes, so it and its own arguments can be emitted early, before the sum.
  auto emit_params_only = [&](auto&& self, std::size_t i) -> int {
    if (remap[i] < 0) {
      TraceNode node = g.nodes[i];
      for (int& a : node.args) a = self(self, static_cast<std::size_t>(a));
      remap[i] = push(std::move(node));
    }
    return remap[i];
  };
  for (std::size_t i = 0; i < n; ++i) {
    if (remap[i] >= 0) continue;  // a folded bias add, or a parameter-only value emitted early for one
    TraceNode node = g.nodes[i];
    for (int& a : node.args) a = remap[static_cast<std::size_t>(a)];
    if (folded[i] < 0) {
      remap[i] = push(std::move(node));
      continue;
    }
    const auto v = static_cast<std::size_t>(folded[i]);
    const int c = emit_params_only(emit_params_only, static_cast<std::size_t>(g.nodes[v].args[1]));
    const int ac = push(TraceNode{.op = TraceOp::add, .args = {node.args[0], c}, .a = 0, .b = 0, .i0 = 0, .i1 = 0,
                                  .shape = node.shape});
    remap[i] = push(TraceNode{.op = TraceOp::add, .args = {ac, node.args[1]}, .a = 0, .b = 0, .i0 = 0, .i1 = 0,
                              .shape = node.shape});
    remap[v] = remap[i];  // u + c is the rewritten sum itself
  }
  for (int v : g.inputs) out.inputs.push_back(remap[static_cast<std::size_t>(v)]);
  for (int v : g.outputs) out.outputs.push_back(remap[static_cast<std::size_t>(v)]);
  return out;
}

// Whether backward_row writes the gradient of every argument of an elementwise op, in argument order (its
// switch below, case for case): only such writes can be a block's first.
bool backward_writes_args(TraceOp op) {
  switch (op) {
    case TraceOp::add: case TraceOp::sub: case TraceOp::mul: case TraceOp::div: case TraceOp::add_s:
    case TraceOp::sub_s: case TraceOp::rsub_s: case TraceOp::neg: case TraceOp::mul_s: case TraceOp::div_s:
    case TraceOp::rdiv_s: case TraceOp::pow_s: case TraceOp::exp: case TraceOp::log: case TraceOp::sqrt:
    case TraceOp::abs: case TraceOp::tanh: case TraceOp::sigmoid: case TraceOp::relu: case TraceOp::logsigmoid:
    case TraceOp::silu: case TraceOp::softplus: case TraceOp::sum_last: case TraceOp::mean_last: case TraceOp::cat:
      return true;
    default: return false;
  }
}

// The step's gradient buffer is reused from step to step. Rather than zeroing all of it before every backward
// (a pass over B * (all the step's widths), as large as the step's elementwise work at B = 64, H = 256), the
// first write to each gradient block — in backward order: the outputs' seeds, then the stages in reverse —
// stores, and only blocks that cannot be written that way are zeroed: blocks shared by all rows (a broadcast
// parameter's), blocks written through a narrow view (a view covers part of a row), blocks nothing writes.
void store_first_writes(FusedProgram& P) {
  const TraceGraph& g = P.graph;
  const std::size_t n = g.nodes.size();
  std::vector<int> block(n, -1);  // the node owning the gradient block a node's gradient lives in
  std::vector<bool> viewed(n, false), written(n, false), stored(n, false);
  std::vector<bool> part(n, false);  // the node's gradient is part of a row of its block (a narrow view)
  for (std::size_t i = 0; i < n; ++i) {
    if (!P.gloc[i].defined()) continue;
    block[i] = static_cast<int>(i);
    const TraceNode& node = g.nodes[i];
    if (P.same_as[i] >= 0) {
      block[i] = block[static_cast<std::size_t>(P.same_as[i])];
    } else if (node.op == TraceOp::narrow && P.live[i] && P.dep[i] == kState) {  // a view into its source's block
      const int src = block[static_cast<std::size_t>(node.args[0])];
      block[i] = src;
      part[i] = true;
      viewed[static_cast<std::size_t>(src)] = true;
    }
  }
  auto write = [&](int v) {  // the next write, in backward order, to v's gradient: may it store?
    const auto o = static_cast<std::size_t>(block[static_cast<std::size_t>(v)]);
    const bool store = !written[o] && !part[static_cast<std::size_t>(v)] && !viewed[o] && P.gloc[o].per_row;
    written[o] = true;
    stored[o] = stored[o] || store;
    return store;
  };
  P.seed_stores.clear();
  for (int o : g.outputs) P.seed_stores.push_back(write(o));
  for (std::size_t si = P.stages.size(); si-- > 0;) {
    const Stage& st = P.stages[si];
    for (std::size_t i = st.end; i-- > st.begin;) {
      Instr& in = P.instrs[i];
      in.store_grad = 0;
      const std::size_t n_written = st.product ? 1 : (backward_writes_args(in.op) ? in.args.size() : 0);
      for (std::size_t k = 0; k < n_written; ++k)
        if (P.gloc[static_cast<std::size_t>(in.args[k])].defined() && write(in.args[k]) && k < 32)
          in.store_grad |= 1u << k;
    }
  }
  // Undo a store that a later argument bit could not carry (a cat of more than 32 values): zero that block.
  for (const Instr& in : P.instrs)
    for (std::size_t k = 32; k < in.args.size(); ++k)
      if (const int o = block[static_cast<std::size_t>(in.args[k])]; o >= 0) stored[static_cast<std::size_t>(o)] = false;
  std::vector<std::pair<std::int64_t, std::int64_t>> zero;
  for (std::size_t o = 0; o < n; ++o)
    if (block[o] == static_cast<int>(o) && !stored[o])
      zero.emplace_back(P.gloc[o].off, P.gloc[o].per_row ? P.B * P.gloc[o].w : P.gloc[o].w);
  std::sort(zero.begin(), zero.end());
  P.gzero.clear();
  for (const auto& z : zero)
    if (!P.gzero.empty() && P.gzero.back().first + P.gzero.back().second == z.first)
      P.gzero.back().second += z.second;  // adjacent blocks: one memset
    else
      P.gzero.push_back(z);
}

void plan_stage_order(FusedProgram& P) {
  const std::size_t elem = P.graph.dtype == Dtype::float64 ? 8 : 4;
  auto contiguous = [&](const Loc& l, std::int64_t w) { return !l.defined() || (l.per_row && l.ld == w && l.w == w); };
  for (Instr& in : P.instrs) {
    const std::int64_t w = P.floc[static_cast<std::size_t>(in.out)].w;
    in.flat = !is_product(in.op) && in.op != TraceOp::cat && in.op != TraceOp::sum_last &&
              in.op != TraceOp::mean_last && contiguous(P.floc[static_cast<std::size_t>(in.out)], w) &&
              contiguous(P.gloc[static_cast<std::size_t>(in.out)], w);
    for (int a : in.args)
      in.flat = in.flat && contiguous(P.floc[static_cast<std::size_t>(a)], w) &&
                contiguous(P.gloc[static_cast<std::size_t>(a)], w);
  }
  for (Stage& st : P.stages) {
    if (st.product) continue;
    std::int64_t widest = 0;
    for (std::size_t i = st.begin; i < st.end; ++i)
      widest = std::max(widest, P.floc[static_cast<std::size_t>(P.instrs[i].out)].w);
    st.ops_first = widest * static_cast<std::int64_t>(elem) <= kOpsFirstBytes;
  }
}

}  // namespace

CompiledStep compile_step(TraceGraph graph) {
  auto p = std::make_shared<FusedProgram>();
  FusedProgram& P = *p;
  P.graph = hoist_bias_adds(split_products_of_cat(std::move(graph)));
  const TraceGraph& g = P.graph;
  const std::size_t n = g.nodes.size();
  P.B = g.batch;
  const std::int64_t B = P.B;
  // Only what the returned state depends on runs (as unfused: an unused value's parameters get no gradient).
  std::vector<bool> live(n, false);
  for (int o : g.outputs) live[static_cast<std::size_t>(o)] = true;
  for (std::size_t i = n; i-- > 0;)
    if (live[i])
      for (int a : g.nodes[i].args) live[static_cast<std::size_t>(a)] = true;
  P.live = live;
  P.dep.assign(n, kParams);
  // A parameter-only value with a row per batch row (a constant [B, n]) cannot be computed over T*B rows.
  auto batch_rows = [&](int v) {
    const Shape& s = g.nodes[static_cast<std::size_t>(v)].shape;
    return s.dim() == 2 && s[0] == B && B > 1;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const TraceNode& node = g.nodes[i];
    if (node.op == TraceOp::input) {
      P.dep[i] = node.i0 == 0 ? kInput : kState;
      continue;
    }
    if (!live[i]) continue;
    std::uint8_t d = kParams;
    for (int a : node.args) d = std::max(d, P.dep[static_cast<std::size_t>(a)]);
    if (is_product(node.op)) {
      const int w = node.args[1];
      if (P.dep[static_cast<std::size_t>(w)] != kParams)
        return {nullptr, fmt::format("'{}' multiplies by a value that changes with the input or the state, not by "
                                     "a parameter: only products by parameters are fused",
                                     trace_op_name(node.op))};
      if (g.nodes[static_cast<std::size_t>(w)].shape.dim() != 2)
        return {nullptr, fmt::format("'{}' by a weight of shape {}: only 2-D weights are fused", trace_op_name(node.op),
                                     g.nodes[static_cast<std::size_t>(w)].shape)};
    }
    if (node.op == TraceOp::transpose && d != kParams)  // it would mix the rows of a step value
      return {nullptr, "'transpose' of a value that changes with the input or the state cannot be fused (only "
                       "transposes of parameters are)"};
    // A slice of an input-only value is read in place by the step (a view of its rows), not hoisted as a copy
    // of every step's slice: the input projection's gate blocks cost nothing.
    if (node.op == TraceOp::narrow && d == kInput) d = kState;
    if (d == kInput)
      for (int a : node.args)
        if (P.dep[static_cast<std::size_t>(a)] == kParams && batch_rows(a)) d = kState;
    P.dep[i] = d;
  }
  for (int o : g.outputs)
    if (P.dep[static_cast<std::size_t>(o)] != kState)
      return {nullptr, "the step returned a state tensor that does not depend on the state: nothing to fuse"};

  // A step's linear by a column block of a parameter matrix (split_products_of_cat) reads the block in place:
  // the matrix is the node's input, and the block's gradient goes straight to the matrix's deferred rows.
  auto product_weight = [&](std::size_t i) -> std::pair<int, std::int64_t> {
    const int w = g.nodes[i].args[1];
    const TraceNode& wn = g.nodes[static_cast<std::size_t>(w)];
    if (g.nodes[i].op == TraceOp::linear && wn.op == TraceOp::narrow &&
        g.nodes[static_cast<std::size_t>(wn.args[0])].shape.dim() == 2)
      return {wn.args[0], wn.i0};
    return {w, 0};
  };
  // Node inputs: values the step program reads but does not compute.
  std::vector<int> role(n, -1);  // 0 seq, 1 state, 2 param
  for (std::size_t k = 1; k < g.inputs.size(); ++k) {
    P.state_nodes.push_back(g.inputs[k]);
    role[static_cast<std::size_t>(g.inputs[k])] = 1;
  }
  // The parts a split product's owner reads for its weight rows only (no gradient flows to them through it).
  auto row_parts = [&](std::size_t i) -> std::vector<int> {
    if (g.nodes[i].op != TraceOp::linear || g.nodes[i].a != kWeightRowsOwner) return {};
    return g.nodes[static_cast<std::size_t>(g.nodes[i].i0)].args;
  };
  std::vector<bool> read_for_rows_only(n, false), read_otherwise(n, false);
  for (std::size_t i = 0; i < n; ++i) {
    if (!live[i] || P.dep[i] != kState || g.nodes[i].op == TraceOp::input) continue;
    std::vector<int> reads = g.nodes[i].args;
    if (is_product(g.nodes[i].op)) reads[1] = product_weight(i).first;
    for (int a : reads) read_otherwise[static_cast<std::size_t>(a)] = true;
    for (int a : row_parts(i)) {
      read_for_rows_only[static_cast<std::size_t>(a)] = true;
      reads.push_back(a);
    }
    for (int a : reads) {
      const auto ai = static_cast<std::size_t>(a);
      if (P.dep[ai] == kState || role[ai] >= 0) continue;
      role[ai] = P.dep[ai] == kInput ? 0 : 2;
      (P.dep[ai] == kInput ? P.seq_nodes : P.param_nodes).push_back(a);
    }
  }
  P.floc.assign(n, Loc{});
  P.gloc.assign(n, Loc{});
  std::int64_t garena = 0;
  auto grad_block = [&](int v, bool per_row) {
    const std::int64_t w = width_of(g.nodes[static_cast<std::size_t>(v)].shape);
    P.gloc[static_cast<std::size_t>(v)] = Loc{0, garena, per_row ? w : 0, w, per_row};
    garena += per_row ? B * w : w;
  };
  for (std::size_t k = 0; k < P.seq_nodes.size(); ++k) {
    const int v = P.seq_nodes[k];
    const std::int64_t w = width_of(g.nodes[static_cast<std::size_t>(v)].shape);
    P.floc[static_cast<std::size_t>(v)] = Loc{P.seq_buf(k), 0, w, w, true};
    if (read_otherwise[static_cast<std::size_t>(v)]) grad_block(v, true);  // not for weight rows alone
  }
  for (std::size_t k = 0; k < P.state_nodes.size(); ++k) {
    const int v = P.state_nodes[k];
    const std::int64_t w = width_of(g.nodes[static_cast<std::size_t>(v)].shape);
    P.floc[static_cast<std::size_t>(v)] = Loc{P.state_buf(k), 0, w, w, true};
    grad_block(v, true);
  }
  // Which parameter values are read elementwise (they get a gradient block; a product's weight gets its
  // gradient from the product's backward instead).
  std::vector<bool> elementwise_use(n, false);
  for (std::size_t i = 0; i < n; ++i)
    if (live[i] && P.dep[i] == kState && g.nodes[i].op != TraceOp::input)
      for (std::size_t j = 0; j < g.nodes[i].args.size(); ++j)
        if (!(is_product(g.nodes[i].op) && j == 1)) elementwise_use[static_cast<std::size_t>(g.nodes[i].args[j])] = true;
  for (std::size_t k = 0; k < P.param_nodes.size(); ++k) {
    const int v = P.param_nodes[k];
    const auto vi = static_cast<std::size_t>(v);
    const bool per_row = batch_rows(v);
    const std::int64_t w = width_of(g.nodes[vi].shape);
    P.floc[vi] = Loc{P.param_buf(k), 0, per_row ? w : 0, w, per_row};
    if (elementwise_use[vi]) grad_block(v, per_row);
  }
  // What backward reads is kept (in the step's buffer, saved with its node); every other value lives in a
  // scratch buffer reused from step to step — so a fused step keeps what the unfused ops would have saved,
  // not every intermediate. The returned state is kept (it is the next step's input anyway).
  std::vector<bool> kept(n, false);
  for (int o : g.outputs) kept[static_cast<std::size_t>(o)] = true;
  for (std::size_t i = 0; i < n; ++i) {
    const TraceNode& node = g.nodes[i];
    if (!live[i] || P.dep[i] != kState || node.op == TraceOp::input) continue;
    const BackwardReads reads = backward_reads(node.op);
    if (reads.a) kept[static_cast<std::size_t>(node.args[0])] = true;
    if (reads.b) kept[static_cast<std::size_t>(node.args[1])] = true;
    if (reads.y) kept[i] = true;
  }
  for (std::size_t i = 0; i < n; ++i)
    if (live[i] && P.dep[i] == kState)
      for (int a : row_parts(i)) kept[static_cast<std::size_t>(a)] = true;  // read by backward for the weight rows
  // A product whose one use is adding a parameter vector (linear(v, W) + b, as the trace records linear with a
  // bias; or v W + b) adds it itself, as linear does: its rows start as b, no pass over the result to add it.
  P.same_as.assign(n, -1);
  {
    std::vector<int> uses(n, 0);
    for (std::size_t i = 0; i < n; ++i)
      if (live[i])
        for (int a : g.nodes[i].args) ++uses[static_cast<std::size_t>(a)];
    for (int o : g.outputs) uses[static_cast<std::size_t>(o)] += 2;  // a returned product keeps its own value
    for (std::size_t i = 0; i < n; ++i) {
      const TraceNode& node = g.nodes[i];
      if (!live[i] || P.dep[i] != kState || node.op != TraceOp::add || node.args.size() != 2) continue;
      for (int side = 0; side < 2; ++side) {
        const auto pi = static_cast<std::size_t>(node.args[static_cast<std::size_t>(side)]);
        const auto ci = static_cast<std::size_t>(node.args[static_cast<std::size_t>(1 - side)]);
        const Shape& cs = g.nodes[ci].shape;
        if (is_product(g.nodes[pi].op) && P.dep[pi] == kState && uses[pi] == 1 && P.dep[ci] == kParams &&
            cs.dim() == 1 && cs[0] == width_of(node.shape) && node.shape == g.nodes[pi].shape) {
          P.same_as[i] = static_cast<int>(pi);
          kept[pi] = kept[pi] || kept[i];
          break;
        }
      }
    }
  }
  for (std::size_t i = n; i-- > 0;)  // a kept view keeps what it views
    if (kept[i] && g.nodes[i].op == TraceOp::narrow) kept[static_cast<std::size_t>(g.nodes[i].args[0])] = true;
  for (std::size_t i = n; i-- > 0;)  // and a folded bias add keeps its product (which is its value)
    if (kept[i] && P.same_as[i] >= 0) kept[static_cast<std::size_t>(P.same_as[i])] = true;
  const int scratch_buf = 1 + static_cast<int>(P.n_inputs());
  std::vector<int> instr_of(n, -1);
  // The step program, in trace order: each product is a stage of its own, runs of elementwise ops between
  // them one stage each.
  std::int64_t arena = 0, scratch = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const TraceNode& node = g.nodes[i];
    if (!live[i] || P.dep[i] != kState || node.op == TraceOp::input) continue;
    const std::int64_t w = width_of(node.shape);
    if (node.op == TraceOp::narrow) {  // a view: the same rows at a column offset, and so is its gradient
      const Loc& base = P.floc[static_cast<std::size_t>(node.args[0])];
      P.floc[i] = Loc{base.buf, base.off + node.i0, base.ld, node.i1, base.per_row};
      const Loc& gbase = P.gloc[static_cast<std::size_t>(node.args[0])];
      P.gloc[i] = Loc{gbase.buf, gbase.off + node.i0, gbase.ld, node.i1, gbase.per_row};
      continue;
    }
    if (const int pi = P.same_as[i]; pi >= 0) {  // the product's value, its bias added by the product
      const int bi = node.args[0] == pi ? node.args[1] : node.args[0];
      P.floc[i] = P.floc[static_cast<std::size_t>(pi)];
      P.gloc[i] = P.gloc[static_cast<std::size_t>(pi)];
      P.instrs[static_cast<std::size_t>(instr_of[static_cast<std::size_t>(pi)])].bias = bi;
      continue;
    }
    const bool per_row = node.shape.dim() == 2 && (node.shape[0] == B);
    if (!per_row)  // a state-dependent value must have a row per batch row; cannot happen for [B, n] states
      return {nullptr, fmt::format("'{}' gives a value of shape {} that depends on the state but has no batch "
                                   "rows: it is not fused",
                                   trace_op_name(node.op), node.shape)};
    std::int64_t& used = kept[i] ? arena : scratch;
    P.floc[i] = Loc{kept[i] ? 0 : scratch_buf, used, w, w, true};
    used += B * w;
    grad_block(static_cast<int>(i), true);
    Instr ins;
    ins.op = node.op, ins.out = static_cast<int>(i), ins.args = node.args, ins.a = node.a, ins.b = node.b;
    if (is_product(node.op)) {
      const auto [w, w_off] = product_weight(i);
      const auto it = std::find(P.param_nodes.begin(), P.param_nodes.end(), w);
      ins.matrix = static_cast<int>(P.state_nodes.size() + P.seq_nodes.size()) +
                   static_cast<int>(it - P.param_nodes.begin());
      ins.w_off = w_off;
      ins.w_ld = g.nodes[static_cast<std::size_t>(w)].shape[1];
      ins.weight_rows = node.a != kNoWeightRows;
      ins.row_parts = row_parts(i);
      P.stages.push_back({true, P.instrs.size(), P.instrs.size() + 1});
    } else if (P.stages.empty() || P.stages.back().product) {
      P.stages.push_back({false, P.instrs.size(), P.instrs.size() + 1});
    } else {
      P.stages.back().end = P.instrs.size() + 1;
    }
    instr_of[i] = static_cast<int>(P.instrs.size());
    P.instrs.push_back(std::move(ins));
  }
  // What a sequence computes with ordinary ops: what the step's inputs are made from.
  P.replayed.assign(n, false);
  for (int v : P.seq_nodes) P.replayed[static_cast<std::size_t>(v)] = true;
  for (int v : P.param_nodes) P.replayed[static_cast<std::size_t>(v)] = true;
  for (std::size_t i = n; i-- > 0;)
    if (P.replayed[i])
      for (int a : g.nodes[i].args) P.replayed[static_cast<std::size_t>(a)] = true;
  P.arena = arena;
  P.scratch = scratch;
  P.garena = garena;
  store_first_writes(P);
  plan_stage_order(P);
  return {std::move(p), {}};
}

namespace {

// ---- elementwise row kernels ------------------------------------------------------------------------
// Same formulas as the unfused ops (activations: ops/fast_math.hpp's sigmoid_of, tanh_of), so fused and
// unfused agree to round-off.
template <class T, class F>
void unary_row(T* __restrict y, const T* __restrict x, std::int64_t w, F f) {
  for (std::int64_t j = 0; j < w; ++j) y[j] = f(x[j]);
}
// y = f(a, b) where a or b may be one value broadcast over the row (width 1).
template <class T, class F>
void binary_row(T* __restrict y, const T* a, std::int64_t wa, const T* b, std::int64_t wb, std::int64_t w, F f) {
  if (wa == w && wb == w)
    for (std::int64_t j = 0; j < w; ++j) y[j] = f(a[j], b[j]);
  else if (wb == w)
    for (std::int64_t j = 0; j < w; ++j) y[j] = f(a[0], b[j]);
  else if (wa == w)
    for (std::int64_t j = 0; j < w; ++j) y[j] = f(a[j], b[0]);
  else
    for (std::int64_t j = 0; j < w; ++j) y[j] = f(a[0], b[0]);
}
// gx += term(j) over the row (gx = term(j) when `store`: the first write to gx); a width-1 gx (broadcast in
// the forward) takes the row's sum.
template <class T, class F>
void accumulate_row(T* gx, std::int64_t wx, std::int64_t w, F term, bool store) {
  if (wx == w) {
    if (store)
      for (std::int64_t j = 0; j < w; ++j) gx[j] = term(j);
    else
      for (std::int64_t j = 0; j < w; ++j) gx[j] += term(j);
  } else {
    T s = 0;
    for (std::int64_t j = 0; j < w; ++j) s += term(j);
    gx[0] = store ? s : gx[0] + s;
  }
}

template <class T>
struct RowView {
  const FusedProgram& P;
  T* const* fbase;  // forward buffers
  T* const* gbase;  // gradient buffers (backward only)
  std::int64_t r;
  std::int64_t rows = 1;  // B for a flat instruction: all rows as one (see Instr::flat)
  [[gnu::always_inline]] T* at(const Loc& l, T* const* base) const {
    return base[l.buf] + l.off + (l.per_row ? r * l.ld : 0);
  }
  [[gnu::always_inline]] T* f(int v) const { return at(P.floc[static_cast<std::size_t>(v)], fbase); }
  [[gnu::always_inline]] T* g(int v) const { return at(P.gloc[static_cast<std::size_t>(v)], gbase); }
  [[gnu::always_inline]] std::int64_t w(int v) const { return P.floc[static_cast<std::size_t>(v)].w * rows; }
  [[gnu::always_inline]] bool has_g(int v) const { return P.gloc[static_cast<std::size_t>(v)].defined(); }
};

template <class T>
void forward_row(const Instr& in, const RowView<T>& rv) {
  T* y = rv.f(in.out);
  const std::int64_t w = rv.w(in.out);
  const T* a = in.args.empty() ? nullptr : rv.f(in.args[0]);
  const T s = static_cast<T>(in.a);
  switch (in.op) {
    case TraceOp::add: return binary_row(y, a, rv.w(in.args[0]), rv.f(in.args[1]), rv.w(in.args[1]), w, [](T p, T q) { return p + q; });
    case TraceOp::sub: return binary_row(y, a, rv.w(in.args[0]), rv.f(in.args[1]), rv.w(in.args[1]), w, [](T p, T q) { return p - q; });
    case TraceOp::mul: return binary_row(y, a, rv.w(in.args[0]), rv.f(in.args[1]), rv.w(in.args[1]), w, [](T p, T q) { return p * q; });
    case TraceOp::div: return binary_row(y, a, rv.w(in.args[0]), rv.f(in.args[1]), rv.w(in.args[1]), w, [](T p, T q) { return p / q; });
    case TraceOp::add_s: return unary_row(y, a, w, [s](T v) { return v + s; });
    case TraceOp::sub_s: return unary_row(y, a, w, [s](T v) { return v - s; });
    case TraceOp::rsub_s: return unary_row(y, a, w, [s](T v) { return s - v; });
    case TraceOp::mul_s: return unary_row(y, a, w, [s](T v) { return v * s; });
    case TraceOp::div_s: return unary_row(y, a, w, [s](T v) { return v / s; });
    case TraceOp::rdiv_s: return unary_row(y, a, w, [s](T v) { return s / v; });
    case TraceOp::neg: return unary_row(y, a, w, [](T v) { return -v; });
    case TraceOp::pow_s: return unary_row(y, a, w, [s](T v) { return static_cast<T>(std::pow(v, s)); });
    case TraceOp::exp: return unary_row(y, a, w, [](T v) { return std::exp(v); });
    case TraceOp::log: return unary_row(y, a, w, [](T v) { return std::log(v); });
    case TraceOp::sqrt: return unary_row(y, a, w, [](T v) { return std::sqrt(v); });
    case TraceOp::abs: return unary_row(y, a, w, [](T v) { return std::abs(v); });
    case TraceOp::tanh: return unary_row(y, a, w, [](T v) { return tanh_of(v); });
    case TraceOp::sigmoid: return unary_row(y, a, w, [](T v) { return sigmoid_of(v); });
    case TraceOp::relu: return unary_row(y, a, w, [](T v) { return v > 0 ? v : T(0); });
    case TraceOp::logsigmoid:
      return unary_row(y, a, w, [](T v) { return std::min(v, T(0)) - std::log1p(std::exp(-std::abs(v))); });
    case TraceOp::silu: return unary_row(y, a, w, [](T v) { return v / (T(1) + std::exp(-v)); });
    case TraceOp::softplus: {
      const T beta = static_cast<T>(in.a), threshold = static_cast<T>(in.b);
      return unary_row(y, a, w, [beta, threshold](T v) {
        const T bx = v * beta;
        return bx > threshold ? v : static_cast<T>(std::log1p(std::exp(bx)) / beta);
      });
    }
    case TraceOp::sum_last:
    case TraceOp::mean_last: {
      const std::int64_t wa = rv.w(in.args[0]);
      T acc = 0;
      for (std::int64_t j = 0; j < wa; ++j) acc += a[j];
      y[0] = in.op == TraceOp::mean_last ? acc / static_cast<T>(wa) : acc;
      return;
    }
    case TraceOp::cat: {
      std::int64_t at = 0;
      for (int v : in.args) {
        const std::int64_t wv = rv.w(v);
        std::memcpy(y + at, rv.f(v), static_cast<std::size_t>(wv) * sizeof(T));
        at += wv;
      }
      return;
    }
    default: return;  // input, external, narrow (views), products (their own stage)
  }
}

template <class T>
void backward_row(const Instr& in, const RowView<T>& rv) {
  const T* gy = rv.g(in.out);
  const std::int64_t w = rv.w(in.out);
  const int ia = in.args.empty() ? -1 : in.args[0];
  const int ib = in.args.size() > 1 ? in.args[1] : -1;
  // Only the values backward_reads names are kept: the others are not addressed at all.
  const BackwardReads reads = backward_reads(in.op);
  const T* y = reads.y ? rv.f(in.out) : nullptr;
  const T* a = reads.a ? rv.f(ia) : nullptr;
  const T* b = reads.b ? rv.f(ib) : nullptr;
  const T s = static_cast<T>(in.a);
  // Operand values by output column (a width-1 operand is broadcast).
  const std::int64_t sa = ia >= 0 && rv.w(ia) == w ? 1 : 0;
  const std::int64_t sb = ib >= 0 && rv.w(ib) == w ? 1 : 0;
  auto ga = [&](auto term) {
    if (rv.has_g(ia)) accumulate_row(rv.g(ia), rv.w(ia), w, term, (in.store_grad & 1u) != 0);
  };
  auto gb = [&](auto term) {
    if (rv.has_g(ib)) accumulate_row(rv.g(ib), rv.w(ib), w, term, (in.store_grad & 2u) != 0);
  };
  switch (in.op) {
    case TraceOp::add: ga([&](std::int64_t j) { return gy[j]; }); gb([&](std::int64_t j) { return gy[j]; }); return;
    case TraceOp::sub: ga([&](std::int64_t j) { return gy[j]; }); gb([&](std::int64_t j) { return -gy[j]; }); return;
    // Operands as wide as the result index with j (a loop that vectorises); broadcast ones with a stride.
    case TraceOp::mul:
      if (sa == 1 && sb == 1) {
        ga([&](std::int64_t j) { return gy[j] * b[j]; });
        gb([&](std::int64_t j) { return gy[j] * a[j]; });
      } else {
        ga([&](std::int64_t j) { return gy[j] * b[j * sb]; });
        gb([&](std::int64_t j) { return gy[j] * a[j * sa]; });
      }
      return;
    case TraceOp::div:
      if (sb == 1) {
        ga([&](std::int64_t j) { return gy[j] / b[j]; });
        gb([&](std::int64_t j) { return -(gy[j] / b[j] * y[j]); });
      } else {
        ga([&](std::int64_t j) { return gy[j] / b[0]; });
        gb([&](std::int64_t j) { return -(gy[j] / b[0] * y[j]); });
      }
      return;
    case TraceOp::add_s:
    case TraceOp::sub_s: return ga([&](std::int64_t j) { return gy[j]; });
    case TraceOp::rsub_s: return ga([&](std::int64_t j) { return -gy[j]; });
    case TraceOp::neg: return ga([&](std::int64_t j) { return -gy[j]; });
    case TraceOp::mul_s: return ga([&](std::int64_t j) { return gy[j] * s; });
    case TraceOp::div_s: {
      const T inv = static_cast<T>(1.0 / in.a);  // as div(x, s)'s backward: g times the constant 1/s
      return ga([&](std::int64_t j) { return gy[j] * inv; });
    }
    case TraceOp::rdiv_s: return ga([&](std::int64_t j) { return -gy[j] * s / (a[j] * a[j]); });
    case TraceOp::pow_s:
      return ga([&](std::int64_t j) {
        return in.a == 0.0 ? T(0) : static_cast<T>(gy[j] * s * std::pow(a[j], static_cast<T>(in.a - 1)));
      });
    case TraceOp::exp: return ga([&](std::int64_t j) { return gy[j] * y[j]; });
    case TraceOp::log: return ga([&](std::int64_t j) { return gy[j] / a[j]; });
    case TraceOp::sqrt: return ga([&](std::int64_t j) { return gy[j] / (y[j] + y[j]); });
    case TraceOp::abs: return ga([&](std::int64_t j) { return a[j] > 0 ? gy[j] : (a[j] < 0 ? -gy[j] : T(0)); });
    case TraceOp::tanh: return ga([&](std::int64_t j) { return gy[j] * (1 - y[j] * y[j]); });
    case TraceOp::sigmoid: return ga([&](std::int64_t j) { return gy[j] * y[j] * (1 - y[j]); });
    case TraceOp::relu: return ga([&](std::int64_t j) { return y[j] > 0 ? gy[j] : T(0); });
    case TraceOp::logsigmoid: return ga([&](std::int64_t j) { return gy[j] / (T(1) + std::exp(a[j])); });
    case TraceOp::silu:
      return ga([&](std::int64_t j) {
        const T sg = T(1) / (T(1) + std::exp(-a[j]));
        return gy[j] * sg * (T(1) + a[j] * (T(1) - sg));
      });
    case TraceOp::softplus: {
      const T beta = static_cast<T>(in.a), threshold = static_cast<T>(in.b);
      return ga([&](std::int64_t j) {
        const T bx = a[j] * beta;
        if (bx > threshold) return gy[j];
        const T z = std::exp(bx);
        return gy[j] * z / (z + T(1));
      });
    }
    case TraceOp::sum_last:
    case TraceOp::mean_last: {
      if (!rv.has_g(ia)) return;
      const std::int64_t wa = rv.w(ia);
      const T d = in.op == TraceOp::mean_last ? gy[0] * static_cast<T>(1.0 / static_cast<double>(wa)) : gy[0];
      T* g = rv.g(ia);
      if (in.store_grad & 1u)
        for (std::int64_t j = 0; j < wa; ++j) g[j] = d;
      else
        for (std::int64_t j = 0; j < wa; ++j) g[j] += d;
      return;
    }
    case TraceOp::cat: {
      std::int64_t at = 0;
      for (std::size_t k = 0; k < in.args.size(); ++k) {
        const int v = in.args[k];
        const std::int64_t wv = rv.w(v);
        if (rv.has_g(v)) {
          T* g = rv.g(v);
          if (k < 32 && (in.store_grad >> k & 1u) != 0)
            std::memcpy(g, gy + at, static_cast<std::size_t>(wv) * sizeof(T));
          else
            for (std::int64_t j = 0; j < wv; ++j) g[j] += gy[at + j];
        }
        at += wv;
      }
      return;
    }
    default: return;  // keep in step with backward_writes_args
  }
}

}  // namespace

// ---- products ---------------------------------------------------------------------------------------

// Batches up to this many rows multiply as row updates (below), not through gemm: for a step of one or a few
// rows, a product is a matrix-vector product, and a plain loop over the weight's rows runs it at the speed
// of reading the weight, where a GEMM call's dispatch and packing cost more than the arithmetic.
constexpr std::int64_t kSmallProductRows = 8;
bool small_products(std::int64_t B) { return B <= kSmallProductRows; }

// C [M, N] (+)= A [M, K] · Bm [K, N], row by row: C's row += A[r, k] · Bm's row k (vectorised over N). The
// row is accumulated in a block of registers, two sets for even and odd k (halving the chain of dependent
// FMAs), and stored once: accumulating in memory would make every k wait on the previous k's store.
template <class T>
void row_product(std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda, const T* Bm,
                 std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
  constexpr std::int64_t JB = 128 / sizeof(T);  // columns per block: 32 floats, 16 doubles
  for (std::int64_t r = 0; r < M; ++r) {
    T* c = C + r * ldc;
    const T* a = A + r * lda;
    std::int64_t j0 = 0;
    for (; j0 + JB <= N; j0 += JB) {
      T even[JB], odd[JB];
      for (std::int64_t j = 0; j < JB; ++j) even[j] = accumulate ? c[j0 + j] : T(0), odd[j] = T(0);
      std::int64_t k = 0;
      for (; k + 2 <= K; k += 2) {
        const T v0 = a[k], v1 = a[k + 1];
        const T* b0 = Bm + k * ldb + j0;
        const T* b1 = b0 + ldb;
        for (std::int64_t j = 0; j < JB; ++j) even[j] += v0 * b0[j];
        for (std::int64_t j = 0; j < JB; ++j) odd[j] += v1 * b1[j];
      }
      if (k < K)
        for (std::int64_t j = 0; j < JB; ++j) even[j] += a[k] * Bm[k * ldb + j0 + j];
      for (std::int64_t j = 0; j < JB; ++j) c[j0 + j] = even[j] + odd[j];
    }
    if (j0 < N) {  // the last columns, in memory
      if (!accumulate) std::fill(c + j0, c + N, T(0));
      for (std::int64_t k = 0; k < K; ++k) {
        const T v = a[k];
        const T* b = Bm + k * ldb;
        for (std::int64_t j = j0; j < N; ++j) c[j] += v * b[j];
      }
    }
  }
}

// ---- a sequence ------------------------------------------------------------------------------------------

struct FusedSequence::Data {
  std::shared_ptr<const FusedProgram> program;
  std::vector<Tensor> seq;     // [T*B, w] per input-only node input
  std::vector<Tensor> params;  // per parameter node input, as traced
  // Per parameter node input that is a product's weight, for small batches: the weight transposed
  // (contiguous, no gradient), so that both the forward and the backward product run as row updates.
  std::vector<Tensor> transposed;
  std::int64_t steps = 0;
};

namespace {

// The op a node stands for, run with ordinary (recorded) ops on its arguments' values.
Tensor replay(const TraceNode& n, std::span<const Tensor> a) {
  switch (n.op) {
    case TraceOp::add: return add(a[0], a[1]);
    case TraceOp::sub: return sub(a[0], a[1]);
    case TraceOp::mul: return mul(a[0], a[1]);
    case TraceOp::div: return div(a[0], a[1]);
    case TraceOp::add_s: return add(a[0], n.a);
    case TraceOp::sub_s: return sub(a[0], n.a);
    case TraceOp::rsub_s: return rsub(a[0], n.a);
    case TraceOp::mul_s: return mul(a[0], n.a);
    case TraceOp::div_s: return div(a[0], n.a);
    case TraceOp::rdiv_s: return rdiv(a[0], n.a);
    case TraceOp::neg: return neg(a[0]);
    case TraceOp::pow_s: return pow(a[0], n.a);
    case TraceOp::exp: return exp(a[0]);
    case TraceOp::log: return log(a[0]);
    case TraceOp::sqrt: return sqrt(a[0]);
    case TraceOp::abs: return abs(a[0]);
    case TraceOp::tanh: return tanh(a[0]);
    case TraceOp::sigmoid: return sigmoid(a[0]);
    case TraceOp::relu: return relu(a[0]);
    case TraceOp::logsigmoid: return logsigmoid(a[0]);
    case TraceOp::silu: return silu(a[0]);
    case TraceOp::softplus: return softplus(a[0], n.a, n.b);
    case TraceOp::narrow:  // a detached slice: its gradient comes from the step's whole weight rows instead
      return narrow(n.b == kDetachedSlice ? a[0].detach() : a[0], a[0].dim() - 1, n.i0, n.i1);
    case TraceOp::cat: return cat(a, -1);
    case TraceOp::sum_last: return sum(a[0], {-1}, true);
    case TraceOp::mean_last: return mean(a[0], {-1}, true);
    case TraceOp::linear: return linear(a[0], a[1]);
    case TraceOp::matmul: return matmul(a[0], a[1]);
    case TraceOp::transpose: return transpose(a[0], 0, 1);
    case TraceOp::input:
    case TraceOp::external: break;
  }
  throw StateError("fused step: internal error, a leaf node replayed");
}

}  // namespace

FusedSequence::FusedSequence(std::shared_ptr<const FusedProgram> program, const Tensor& x) {
  const FusedProgram& P = *program;
  const TraceGraph& g = P.graph;
  const Shape& x_shape = g.nodes[static_cast<std::size_t>(g.inputs[0])].shape;
  UNROLL_CHECK(x.dim() == x_shape.dim() + 1 && x.shape().tail(1) == x_shape, ShapeError,
               "fused step: the input does not match the traced step; got x={}, expected T steps of {}", x.shape(),
               x_shape);
  auto data = std::make_shared<Data>();
  data->steps = x.shape()[0];
  // Parameter-only and input-only values, in trace order, with ordinary ops: the input ones on all T*B rows.
  std::vector<Tensor> val(g.nodes.size());
  std::vector<Tensor> args;
  // A hoisted linear whose only use is adding a bias vector (how the trace records linear(x, W, b)) runs as
  // linear(x, W, b): bias_of[product] = the add node.
  std::vector<int> uses(g.nodes.size(), 0), bias_of(g.nodes.size(), -1);
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    if (P.live[i])
      for (int a : g.nodes[i].args) ++uses[static_cast<std::size_t>(a)];
  for (int v : P.seq_nodes) ++uses[static_cast<std::size_t>(v)];  // read by the step too
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const TraceNode& node = g.nodes[i];
    if (!P.replayed[i] || node.op != TraceOp::add) continue;
    const auto pi = static_cast<std::size_t>(node.args[0]);
    const TraceNode& bias = g.nodes[static_cast<std::size_t>(node.args[1])];
    if (g.nodes[pi].op == TraceOp::linear && uses[pi] == 1 && P.dep[static_cast<std::size_t>(node.args[1])] == kParams &&
        bias.shape.dim() == 1 && bias.shape[0] == g.nodes[pi].shape.back())
      bias_of[pi] = static_cast<int>(i);
  }
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const TraceNode& node = g.nodes[i];
    if (!P.replayed[i]) continue;
    if (node.op == TraceOp::input) {
      Shape rows = x_shape;
      rows[0] = data->steps * x_shape[0];
      val[i] = reshape(x, std::vector<std::int64_t>(rows.begin(), rows.end()));
    } else if (node.op == TraceOp::external) {
      val[i] = g.externals[static_cast<std::size_t>(node.i0)];
    } else if (bias_of[i] >= 0) {  // x Wᵀ + b as one linear (one output, not two): see below
      continue;
    } else if (node.op == TraceOp::add && node.args.size() == 2 && bias_of[static_cast<std::size_t>(node.args[0])] == static_cast<int>(i)) {
      const TraceNode& product = g.nodes[static_cast<std::size_t>(node.args[0])];
      val[i] = linear(val[static_cast<std::size_t>(product.args[0])], val[static_cast<std::size_t>(product.args[1])],
                      val[static_cast<std::size_t>(node.args[1])]);
    } else {
      args.clear();
      for (int a : node.args) args.push_back(val[static_cast<std::size_t>(a)]);
      val[i] = replay(node, args);
    }
  }
  for (int v : P.seq_nodes) data->seq.push_back(val[static_cast<std::size_t>(v)]);
  for (int v : P.param_nodes) data->params.push_back(val[static_cast<std::size_t>(v)]);
  data->transposed.resize(data->params.size());
  if (small_products(P.B)) {
    NoGradGuard no_grad;
    for (const Instr& in : P.instrs)
      if (in.matrix >= 0) {
        const auto k = static_cast<std::size_t>(in.matrix) - P.seq_nodes.size() - P.state_nodes.size();
        if (!data->transposed[k].defined()) data->transposed[k] = copy_of(transpose(data->params[k], 0, 1));
      }
  }
  data->program = std::move(program);
  data_ = std::move(data);
}

namespace {

// The buffers a step reads, by index as in Loc::buf: 0 the step's own (forward values or gradients), then the
// node's inputs (this step's rows of the input-only values, the state, the parameter values); and per node
// input, a product weight's transposed copy. Per thread and reused: a step allocates no arrays of pointers.
template <class T>
struct Frame {
  std::vector<T*> base;
  std::vector<const T*> transposed;
  std::vector<const Tensor*> owners;         // the tensor behind each buffer (for views of its rows)
  std::vector<std::int64_t> owner_offset;    // where this step's rows start in it
  std::vector<T> scratch;                    // the forward's values that backward does not read
  // Step t's buffers: its own values at `own_off` in `own`; the state tensors' rows from row `state_row` on
  // (0 for a state of B rows; i * B in a whole sequence's [T + 1, B, w] states).
  void fill(const FusedSequence::Data& d, const Tensor& own, std::int64_t own_off, std::span<const Tensor> state,
            std::int64_t state_row, std::int64_t t, bool forward) {
    const std::int64_t B = d.program->B;
    const std::size_t n = 1 + d.seq.size() + state.size() + d.params.size() + 1;
    base.resize(n), owners.resize(n), owner_offset.resize(n);  // no-ops after the first step
    std::size_t at = 0;
    auto add = [&](const Tensor* q, std::int64_t off) {
      base[at] = q ? q->data<T>() + off : nullptr;
      owners[at] = q;
      owner_offset[at++] = off;
    };
    add(&own, own_off);
    for (const Tensor& q : d.seq) add(&q, t * B * q.shape().back());
    for (const Tensor& q : state) add(&q, state_row * q.shape().back());
    for (const Tensor& q : d.params) add(&q, 0);
    add(nullptr, 0);
    if (forward) {
      scratch.resize(static_cast<std::size_t>(d.program->scratch));
      base[at - 1] = scratch.data();  // backward reads no scratch value
    }
    const std::size_t lead = d.seq.size() + state.size();
    transposed.resize(lead + d.transposed.size());
    std::fill(transposed.begin(), transposed.begin() + static_cast<std::ptrdiff_t>(lead), nullptr);
    for (std::size_t k = 0; k < d.transposed.size(); ++k)
      transposed[lead + k] = d.transposed[k].defined() ? d.transposed[k].data<T>() : nullptr;
  }
  // The same sequence's step t: moves the step's own buffer and the input and state rows (fill first).
  void move_to(const FusedSequence::Data& d, std::int64_t own_off, std::int64_t state_row, std::int64_t t) {
    const std::int64_t B = d.program->B;
    auto move = [&](std::size_t at, std::int64_t off) {
      base[at] += off - owner_offset[at];
      owner_offset[at] = off;
    };
    move(0, own_off);
    std::size_t at = 1;
    for (const Tensor& q : d.seq) move(at++, t * B * q.shape().back());
    for (const std::size_t end = at + d.program->state_nodes.size(); at < end; ++at)
      move(at, state_row * owners[at]->shape().back());
  }
};
template <class T>
Frame<T>& forward_frame() {
  thread_local Frame<T> f;
  return f;
}
template <class T>
Frame<T>& backward_frame() {
  thread_local Frame<T> f;
  return f;
}

// The step's forward: every stage in order into buffer 0.
template <class T>
void run_forward(const FusedProgram& P, const Frame<T>& f) {
  T* const* base = f.base.data();
  for (const Stage& st : P.stages) {
    if (st.product) {
      const Instr& in = P.instrs[st.begin];
      const Loc& v = P.floc[static_cast<std::size_t>(in.args[0])];
      const Loc& y = P.floc[static_cast<std::size_t>(in.out)];
      const auto wi = static_cast<std::size_t>(in.matrix);
      const T* W = base[wi + 1] + in.w_off;  // a linear's column block starts w_off columns in
      const bool linear_op = in.op == TraceOp::linear;  // x Wᵀ, W [n, k]; matmul: x W, W [k, n]
      const std::int64_t k = v.w, n = y.w;
      const T* x = base[static_cast<std::size_t>(v.buf)] + v.off;
      T* out = base[static_cast<std::size_t>(y.buf)] + y.off;
      const bool biased = in.bias >= 0;  // each row starts as the bias, the product added to it (as linear)
      if (biased) {
        const Loc& bl = P.floc[static_cast<std::size_t>(in.bias)];
        const T* b = base[static_cast<std::size_t>(bl.buf)] + bl.off;
        for (std::int64_t r = 0; r < P.B; ++r) std::memcpy(out + r * y.ld, b, static_cast<std::size_t>(n) * sizeof(T));
      }
      if (small_products(P.B))  // as row updates: x Wᵀ through Wᵀ's copy, whose rows w_off.. are the block's
        row_product(P.B, n, k, x, v.ld, linear_op ? f.transposed[wi] + in.w_off * n : W, n, out, y.ld, biased);
      else
        gemm(false, linear_op, P.B, n, k, T(1), x, v.ld, W, in.w_ld, biased ? T(1) : T(0), out, y.ld);
      continue;
    }
    if (st.ops_first) {
      for (std::size_t i = st.begin; i < st.end; ++i) {
        const Instr& in = P.instrs[i];
        if (in.flat) {
          forward_row(in, RowView<T>{P, base, nullptr, 0, P.B});
          continue;
        }
        for (std::int64_t r = 0; r < P.B; ++r) forward_row(in, RowView<T>{P, base, nullptr, r});
      }
      continue;
    }
    for (std::int64_t r = 0; r < P.B; ++r) {
      const RowView<T> rv{P, base, nullptr, r};
      for (std::size_t i = st.begin; i < st.end; ++i) forward_row(P.instrs[i], rv);
    }
  }
}

// A contiguous [B, w] tensor of a value: a view when its rows are contiguous, else a copy.
template <class T>
Tensor rows_tensor(const Loc& l, const Frame<T>& f, std::int64_t B) {
  const auto b = static_cast<std::size_t>(l.buf);
  if (l.per_row && l.ld == l.w) return view_range(*f.owners[b], f.owner_offset[b] + l.off, {B, l.w});
  Tensor t = Tensor::empty({B, l.w}, f.owners[b]->dtype());
  T* dst = t.data<T>();
  for (std::int64_t r = 0; r < B; ++r)
    std::memcpy(dst + r * l.w, f.base[b] + l.off + (l.per_row ? r * l.ld : 0), static_cast<std::size_t>(l.w) * sizeof(T));
  return t;
}

// What a step's backward keeps: its buffer of forward values and the state it read (up to two tensors, h or
// (h, c), inline: the closure then needs no heap block of its own, and stays small to record and destroy).
struct SavedStep {
  std::shared_ptr<const FusedSequence::Data> data;
  Tensor arena;
  std::array<Tensor, 2> state_inline;
  std::vector<Tensor> state_heap;
  std::int64_t t;
  std::span<const Tensor> state() const {
    return state_heap.empty() ? std::span<const Tensor>(state_inline.data(), data->program->state_nodes.size())
                              : std::span<const Tensor>(state_heap);
  }
};

// The gradients of a step's values: a per-thread buffer reused from step to step (a fresh one per step would
// be cleared in memory: a pass over it every step; this one is written while still in cache from the last).
template <class T>
const Tensor& step_grads(const FusedProgram& P, Dtype dtype) {
  thread_local Tensor scratch_grads;
  if (!scratch_grads.defined() || scratch_grads.numel() < P.garena || scratch_grads.dtype() != dtype)
    scratch_grads = Tensor::empty({std::max<std::int64_t>(P.garena, 1)}, dtype);
  return scratch_grads;
}

// A whole sequence's weight-gradient rows, gathered step by step and multiplied many steps at a time (a few
// large GEMMs per product instead of T deferred pieces; kWeightRowsBytes bounds their memory): per product
// instruction (by index), dY's rows and its operand's (of [x_t, h] for a split product's owner).
struct WeightRows {
  struct Rows {
    Tensor dy, x;             // [cap, n], [cap, k]: cap rows fit kWeightRowsBytes (at least one step's)
    std::int64_t filled = 0;  // rows gathered since the last product
  };
  std::vector<Rows> by_instr;
  std::int64_t rows = 0;  // T * B: the most a sequence gathers
};

// At most this many gathered rows per product (as DeferredRows' chunks): measured on the MGU at B 64, H 32,
// gathering all 4096 rows of a sequence (1.8 MB per product, out of L2 by the time the GEMM reads them) made
// the fused sequence 1.04x its unfused time; 2048 rows, 0.97x.
constexpr std::int64_t kWeightRowsCap = 2048;

// dW += the gathered rows' product (linear: dYᵀ x into the weight block's columns; matmul: xᵀ dY).
void flush_weight_rows(autograd::GradSink& sink, const Instr& in, WeightRows::Rows& wr) {
  if (wr.filled == 0) return;
  const Tensor dy = view_range(wr.dy, 0, {wr.filled, wr.dy.shape()[1]});
  const Tensor x = view_range(wr.x, 0, {wr.filled, wr.x.shape()[1]});
  const auto wi = static_cast<std::size_t>(in.matrix);
  if (!in.row_parts.empty())
    sink.add_rows_product(wi, dy, x);
  else if (in.op == TraceOp::linear)
    sink.add_rows_product(wi, dy, x, in.w_off);
  else
    sink.add_rows_product(wi, x, dy);
  wr.filled = 0;
}

// The rows of a product's operand, contiguous into dst: the value's B rows, or a split product owner's
// parts side by side ([x_t, h], as the unsplit linear saw them).
template <class T>
void copy_operand_rows(const FusedProgram& P, const Instr& in, const Frame<T>& f, std::int64_t B, T* dst) {
  if (in.row_parts.empty()) {
    const Loc& l = P.floc[static_cast<std::size_t>(in.args[0])];
    for (std::int64_t r = 0; r < B; ++r)
      std::memcpy(dst + r * l.w, f.base[static_cast<std::size_t>(l.buf)] + l.off + (l.per_row ? r * l.ld : 0),
                  static_cast<std::size_t>(l.w) * sizeof(T));
    return;
  }
  std::int64_t at = 0;
  for (int part : in.row_parts) {
    const Loc& l = P.floc[static_cast<std::size_t>(part)];
    for (std::int64_t r = 0; r < B; ++r)
      std::memcpy(dst + r * in.w_ld + at, f.base[static_cast<std::size_t>(l.buf)] + l.off + r * l.ld,
                  static_cast<std::size_t>(l.w) * sizeof(T));
    at += l.w;
  }
}

// One step's backward, from the gradients of its outputs (seeds[k]: [B, w] rows of output k's gradient, or
// null when none reached it) into `garena`, the gradients of all its values (read them through P.gloc). The
// weights' gradient rows go to the sink, deferred and batched like linear's, or into `collect`; the caller
// takes the inputs' gradients.
template <class T>
void backward_step(autograd::GradSink& sink, const FusedProgram& P, const Frame<T>& f, const Tensor& garena,
                   std::span<const T* const> seeds, WeightRows* collect = nullptr) {
  const std::int64_t B = P.B;
  T* const* base = f.base.data();
  T* const gbase[1] = {garena.data<T>()};
  for (const auto& [off, len] : P.gzero) std::memset(gbase[0] + off, 0, static_cast<std::size_t>(len) * sizeof(T));
  // The outputs' gradients into their values' gradient rows.
  const auto& outputs = P.graph.outputs;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const T* pg = seeds[k];
    const Loc& l = P.gloc[static_cast<std::size_t>(outputs[k])];
    for (std::int64_t r = 0; r < B; ++r) {
      T* __restrict dst = gbase[0] + l.off + r * l.ld;
      if (pg == nullptr) {
        if (P.seed_stores[k]) std::memset(dst, 0, static_cast<std::size_t>(l.w) * sizeof(T));
        continue;
      }
      const T* __restrict src = pg + r * l.w;
      if (P.seed_stores[k])
        std::memcpy(dst, src, static_cast<std::size_t>(l.w) * sizeof(T));
      else
        for (std::int64_t j = 0; j < l.w; ++j) dst[j] += src[j];
    }
  }
  for (std::size_t si = P.stages.size(); si-- > 0;) {
    const Stage& st = P.stages[si];
    if (st.product) {
      const Instr& in = P.instrs[st.begin];
      const int vi = in.args[0];
      const Loc& v = P.floc[static_cast<std::size_t>(vi)];
      const Loc& gv = P.gloc[static_cast<std::size_t>(vi)];
      const Loc& gy = P.gloc[static_cast<std::size_t>(in.out)];
      const auto wi = static_cast<std::size_t>(in.matrix);
      const T* W = base[wi + 1] + in.w_off;
      const bool linear_op = in.op == TraceOp::linear;
      const std::int64_t k = v.w, n = gy.w;
      const T* dy = gbase[0] + gy.off;
      if (gv.defined()) {  // dv += dY W (linear, W [n, k]) or dY Wᵀ (matmul, W [k, n]: Wᵀ's copy [n, k])
        T* dv = gbase[0] + gv.off;
        const bool store = (in.store_grad & 1u) != 0;  // dv = ..., its first write
        if (small_products(B))
          row_product(B, k, n, dy, gy.ld, linear_op ? W : f.transposed[wi], linear_op ? in.w_ld : k, dv, gv.ld,
                      !store);
        else
          gemm(false, !linear_op, B, k, n, T(1), dy, gy.ld, W, in.w_ld, store ? T(0) : T(1), dv, gv.ld);
      }
      if (in.bias >= 0 && P.gloc[static_cast<std::size_t>(in.bias)].defined()) {  // db += the rows of dY
        T* __restrict db = gbase[0] + P.gloc[static_cast<std::size_t>(in.bias)].off;
        for (std::int64_t r = 0; r < B; ++r) {
          const T* __restrict d = dy + r * gy.ld;
          for (std::int64_t j = 0; j < n; ++j) db[j] += d[j];
        }
      }
      if (in.weight_rows && sink.needs(wi)) {
        if (collect) {  // this step's rows of dY and of the operand, multiplied later with other steps'
          WeightRows::Rows& wr = collect->by_instr[st.begin];
          const std::int64_t xw = in.row_parts.empty() ? k : in.w_ld;
          if (!wr.dy.defined()) {
            const std::int64_t fit = kWeightRowsBytes / ((n + xw) * static_cast<std::int64_t>(sizeof(T))) / B * B;
            const std::int64_t cap = std::min({collect->rows, kWeightRowsCap, std::max(B, fit)});
            wr.dy = Tensor::empty({cap, n}, garena.dtype());
            wr.x = Tensor::empty({cap, xw}, garena.dtype());
          }
          if (wr.filled + B > wr.dy.shape()[0]) flush_weight_rows(sink, in, wr);
          std::memcpy(wr.dy.template data<T>() + wr.filled * n, dy, static_cast<std::size_t>(B * n) * sizeof(T));
          copy_operand_rows<T>(P, in, f, B, wr.x.template data<T>() + wr.filled * xw);
          wr.filled += B;
        } else {
          Tensor dyt = view_range(garena, gy.off, {B, n});
          if (!in.row_parts.empty()) {  // a split product's owner: the whole rows [x_t, h], as the unsplit linear
            Tensor q = Tensor::empty({B, in.w_ld}, garena.dtype());
            copy_operand_rows<T>(P, in, f, B, q.data<T>());
            sink.add_rows_product(wi, dyt, q);
          } else if (linear_op) {  // dW [n, k] = dYᵀ x (into the block's columns), deferred and batched like linear's
            sink.add_rows_product(wi, dyt, rows_tensor<T>(v, f, B), in.w_off);
          } else {
            sink.add_rows_product(wi, rows_tensor<T>(v, f, B), dyt);  // dW [k, n] = xᵀ dY
          }
        }
      }
      continue;
    }
    if (st.ops_first) {
      for (std::size_t i = st.end; i-- > st.begin;) {
        const Instr& in = P.instrs[i];
        if (in.flat) {
          backward_row(in, RowView<T>{P, base, gbase, 0, B});
          continue;
        }
        for (std::int64_t r = 0; r < B; ++r) backward_row(in, RowView<T>{P, base, gbase, r});
      }
      continue;
    }
    for (std::int64_t r = 0; r < B; ++r) {
      const RowView<T> rv{P, base, gbase, r};
      for (std::size_t i = st.end; i-- > st.begin;) backward_row(P.instrs[i], rv);
    }
  }
}

template <class T>
void run_backward(autograd::GradSink& sink, const SavedStep& s) {
  const FusedSequence::Data& d = *s.data;
  const FusedProgram& P = *d.program;
  const std::int64_t B = P.B;
  const std::size_t n_seq = P.seq_nodes.size(), n_state = P.state_nodes.size();
  const std::span<const Tensor> state = s.state();
  Frame<T>& f = backward_frame<T>();
  f.fill(d, s.arena, 0, state, 0, s.t, /*forward=*/false);
  const Tensor& garena = step_grads<T>(P, s.arena.dtype());
  T* const gbase[1] = {garena.data<T>()};
  thread_local std::vector<const T*> seeds;
  seeds.clear();
  for (std::size_t k = 0; k < P.graph.outputs.size(); ++k) {
    const Tensor* g = sink.grad_output_if(k);
    seeds.push_back(g ? g->template data<T>() : nullptr);
  }
  backward_step<T>(sink, P, f, garena, seeds);
  // The inputs' gradients.
  for (std::size_t k = 0; k < n_seq; ++k) {
    const Loc& l = P.gloc[static_cast<std::size_t>(P.seq_nodes[k])];
    if (!l.defined() || !sink.needs(k)) continue;  // read for weight rows only: no gradient through the step
    bool fresh = false;
    Tensor& buf = sink.buffer(k, fresh, /*zero_fill=*/true);  // [T*B, w]: this step's rows
    T* __restrict dst = buf.data<T>() + s.t * B * l.w;
    const T* __restrict src = gbase[0] + l.off;
    for (std::int64_t i = 0; i < B * l.w; ++i) dst[i] += src[i];
  }
  for (std::size_t k = 0; k < n_state; ++k) {  // into the state's gradient (garena is reused: copied out)
    if (!sink.needs(n_seq + k)) continue;
    const Loc& l = P.gloc[static_cast<std::size_t>(P.state_nodes[k])];
    bool fresh = false;
    T* __restrict dst = sink.buffer(n_seq + k, fresh).template data<T>();
    const T* __restrict src = gbase[0] + l.off;
    const std::int64_t n = state[k].numel();
    if (fresh)
      std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
    else
      for (std::int64_t i = 0; i < n; ++i) dst[i] += src[i];
  }
  for (std::size_t k = 0; k < P.param_nodes.size(); ++k) {
    const std::size_t i = n_seq + n_state + k;
    const Loc& l = P.gloc[static_cast<std::size_t>(P.param_nodes[k])];
    if (!l.defined() || !sink.needs(i)) continue;
    sink.add(i, copy_of(view_range(garena, l.off, d.params[k].shape())));
  }
}

// What a whole sequence's backward keeps: every step's values, every step's state, the run's options.
struct SavedSequence {
  std::shared_ptr<const FusedSequence::Data> data;
  Tensor arena;                       // [T * P.arena]: loop step i's values from i * P.arena
  std::vector<Tensor> states;         // per state tensor [T + 1, B, w]: the state before loop step i at i
  std::vector<std::int64_t> lengths;  // per row (empty: all T)
  std::size_t output_state;
  bool reverse;
};

// Whether row r runs at step t (rows past their length hold their state).
bool row_runs(std::span<const std::int64_t> lengths, std::int64_t r, std::int64_t t) {
  return lengths.empty() || t < lengths[static_cast<std::size_t>(r)];
}

// The steps' backward in reverse loop order. carry[k] is d loss / d (state k after the step): the final
// state's gradient at first, plus the output's at each step; a step's backward turns it into the gradient of
// the state before it. A row that holds its state at a step passes its gradient through unchanged.
template <class T>
void run_sequence_backward(autograd::GradSink& sink, const SavedSequence& s) {
  const FusedSequence::Data& d = *s.data;
  const FusedProgram& P = *d.program;
  const std::int64_t B = P.B, steps = d.steps;
  const std::size_t n_seq = P.seq_nodes.size(), n_state = P.state_nodes.size(), n_param = P.param_nodes.size();
  const Dtype dtype = s.arena.dtype();
  std::vector<Tensor> carry(n_state), seed_rows(s.lengths.empty() ? 0 : n_state);
  std::vector<const T*> seeds(n_state);
  std::vector<std::int64_t> width(n_state);
  for (std::size_t k = 0; k < n_state; ++k) {
    const Shape shape = s.states[k].shape().tail(1);
    width[k] = shape.back();
    const Tensor* g = sink.grad_output_if(1 + k);
    carry[k] = g ? copy_of(*g) : zeros(shape, dtype);
    if (!seed_rows.empty()) seed_rows[k] = Tensor::empty(shape, dtype);
  }
  const Tensor* g_out = sink.grad_output_if(0);  // [T, B, w] of state output_state
  std::vector<T*> seq_grad(n_seq, nullptr);
  std::vector<bool> seq_store(n_seq, false);  // a fresh buffer: every step stores its rows (no zeroing first)
  for (std::size_t k = 0; k < n_seq; ++k) {
    if (!P.gloc[static_cast<std::size_t>(P.seq_nodes[k])].defined() || !sink.needs(k)) continue;
    bool fresh = false;
    seq_grad[k] = sink.buffer(k, fresh).template data<T>();
    seq_store[k] = fresh;
  }
  WeightRows weight_rows{std::vector<WeightRows::Rows>(P.instrs.size()), steps * B};
  std::vector<Tensor> param_grad(n_param);
  Frame<T>& f = backward_frame<T>();
  const Tensor& garena = step_grads<T>(P, dtype);
  const T* gbase = garena.data<T>();
  for (std::int64_t i = steps; i-- > 0;) {
    const std::int64_t t = s.reverse ? steps - 1 - i : i;
    if (g_out) {  // the output at t is the state after this step (zero, and no gradient, for rows that hold)
      const std::int64_t w = width[s.output_state];
      T* __restrict dst = carry[s.output_state].template data<T>();
      const T* __restrict src = g_out->template data<T>() + t * B * w;
      for (std::int64_t r = 0; r < B; ++r)
        if (row_runs(s.lengths, r, t))
          for (std::int64_t j = r * w; j < (r + 1) * w; ++j) dst[j] += src[j];
    }
    for (std::size_t k = 0; k < n_state; ++k) {
      seeds[k] = carry[k].template data<T>();
      if (s.lengths.empty()) continue;
      const std::int64_t w = width[k];
      T* dst = seed_rows[k].template data<T>();
      for (std::int64_t r = 0; r < B; ++r)
        if (row_runs(s.lengths, r, t))
          std::memcpy(dst + r * w, seeds[k] + r * w, static_cast<std::size_t>(w) * sizeof(T));
        else
          std::memset(dst + r * w, 0, static_cast<std::size_t>(w) * sizeof(T));
      seeds[k] = dst;
    }
    if (i == steps - 1)
      f.fill(d, s.arena, i * P.arena, s.states, i * B, t, /*forward=*/false);
    else
      f.move_to(d, i * P.arena, i * B, t);
    backward_step<T>(sink, P, f, garena, seeds, &weight_rows);
    for (std::size_t k = 0; k < n_seq; ++k) {  // into rows t of the input-only values' gradients
      if (!seq_grad[k]) continue;
      const Loc& l = P.gloc[static_cast<std::size_t>(P.seq_nodes[k])];
      T* __restrict dst = seq_grad[k] + t * B * l.w;
      const T* __restrict src = gbase + l.off;
      if (seq_store[k])
        std::memcpy(dst, src, static_cast<std::size_t>(B * l.w) * sizeof(T));
      else
        for (std::int64_t e = 0; e < B * l.w; ++e) dst[e] += src[e];
    }
    for (std::size_t k = 0; k < n_state; ++k) {  // the gradient of the state before this step
      const Loc& l = P.gloc[static_cast<std::size_t>(P.state_nodes[k])];
      const std::int64_t w = width[k];
      const auto row_bytes = static_cast<std::size_t>(w) * sizeof(T);
      for (std::int64_t r = 0; r < B; ++r) {
        T* __restrict dst = carry[k].template data<T>() + r * w;
        const T* __restrict g = l.defined() ? gbase + l.off + r * w : nullptr;
        if (row_runs(s.lengths, r, t)) {  // the step's gradient for it
          if (g)
            std::memcpy(dst, g, row_bytes);
          else
            std::memset(dst, 0, row_bytes);
        } else if (g) {  // held: its own gradient passes through, plus the step's (zero but for 0 · inf)
          for (std::int64_t j = 0; j < w; ++j) dst[j] += g[j];
        }
      }
    }
    for (std::size_t k = 0; k < n_param; ++k) {
      const Loc& l = P.gloc[static_cast<std::size_t>(P.param_nodes[k])];
      if (!l.defined() || !sink.needs(n_seq + n_state + k)) continue;
      const std::int64_t n = d.params[k].numel();
      if (!param_grad[k].defined()) param_grad[k] = zeros(d.params[k].shape(), dtype);
      T* __restrict dst = param_grad[k].template data<T>();
      for (std::int64_t e = 0; e < n; ++e) dst[e] += gbase[l.off + e];
    }
  }
  for (std::size_t ii = 0; ii < P.instrs.size(); ++ii) flush_weight_rows(sink, P.instrs[ii], weight_rows.by_instr[ii]);
  for (std::size_t k = 0; k < n_state; ++k)
    if (sink.needs(n_seq + k)) sink.add(n_seq + k, std::move(carry[k]));
  for (std::size_t k = 0; k < n_param; ++k)
    if (param_grad[k].defined()) sink.add(n_seq + n_state + k, std::move(param_grad[k]));
}

// A node's inputs in the order its backward indexes them (GradSink input i): the input-only values, the
// state, the parameter values.
bool inputs_need_grad(const FusedSequence::Data& d, std::span<const Tensor> state) {
  return autograd::needs_grad(std::span<const Tensor>(d.seq)) || autograd::needs_grad(state) ||
         autograd::needs_grad(std::span<const Tensor>(d.params));
}
std::span<const Tensor* const> node_inputs(const FusedSequence::Data& d, std::span<const Tensor> state) {
  thread_local std::vector<const Tensor*> inputs;  // reused: a step allocates no vector
  inputs.clear();
  for (const Tensor& q : d.seq) inputs.push_back(&q);
  for (const Tensor& q : state) inputs.push_back(&q);
  for (const Tensor& q : d.params) inputs.push_back(&q);
  return inputs;
}

void check_state(const char* where, const FusedProgram& P, std::span<const Tensor> state) {
  const TraceGraph& g = P.graph;
  UNROLL_CHECK(state.size() == P.state_nodes.size(), ValueError,
               "{}: wrong number of state tensors; got {}, expected {}", where, state.size(), P.state_nodes.size());
  for (std::size_t k = 0; k < state.size(); ++k) {
    const Shape& s = g.nodes[static_cast<std::size_t>(P.state_nodes[k])].shape;
    UNROLL_CHECK(state[k].defined() && state[k].shape() == s && state[k].dtype() == g.dtype, ShapeError,
                 "{}: state tensor {} does not match the traced step; got {} {}, expected {} {}", where, k,
                 state[k].defined() ? fmt::format("{}", state[k].shape()) : std::string("undefined"),
                 state[k].defined() ? fmt::format("{}", state[k].dtype()) : std::string(""), s, g.dtype);
  }
}
}  // namespace

void FusedSequence::step(std::int64_t t, std::span<const Tensor> state, std::vector<Tensor>& outs) const {
  const Data& d = *data_;
  const FusedProgram& P = *d.program;
  const TraceGraph& g = P.graph;
  constexpr const char* where = "fused step";
  OpScope op_scope(where);
  UNROLL_CHECK(t >= 0 && t < d.steps, IndexError, "{}: step out of range; got t={}, expected 0 <= t < {}", where, t,
               d.steps);
  check_state(where, P, state);
  Tensor arena = Tensor::empty({P.arena}, g.dtype);
  outs.clear();
  dispatch_floating(where, g.dtype, [&]<class T>(T*) {
    Frame<T>& f = forward_frame<T>();
    f.fill(d, arena, 0, state, 0, t, /*forward=*/true);
    run_forward<T>(P, f);
    for (int o : g.outputs) {
      const Loc& l = P.floc[static_cast<std::size_t>(o)];
      const Shape& shape = g.nodes[static_cast<std::size_t>(o)].shape;
      if (l.buf == 0 && l.per_row && l.ld == l.w) {  // the value's own block: the output is a view of it
        outs.push_back(view_range(arena, l.off, shape));
      } else {
        Tensor c = Tensor::empty(shape, g.dtype);
        for (std::int64_t r = 0; r < P.B; ++r)
          std::memcpy(c.data<T>() + r * l.w, f.base[static_cast<std::size_t>(l.buf)] + l.off + r * l.ld,
                      static_cast<std::size_t>(l.w) * sizeof(T));
        outs.push_back(std::move(c));
      }
    }
  });
  if (!inputs_need_grad(d, state)) return;
  thread_local std::vector<Tensor*> out_ptrs;
  out_ptrs.clear();
  for (Tensor& o : outs) out_ptrs.push_back(&o);
  SavedStep saved{data_, std::move(arena), {}, {}, t};
  if (state.size() <= saved.state_inline.size())
    for (std::size_t k = 0; k < state.size(); ++k) saved.state_inline[k] = state[k].detach();
  else
    for (const Tensor& q : state) saved.state_heap.push_back(q.detach());
  autograd::record(where, std::span<Tensor* const>(out_ptrs), node_inputs(d, state),
                   [s = std::move(saved)](autograd::GradSink& sink) {
                     dispatch_floating("fused step", s.arena.dtype(), [&]<class T>(T*) { run_backward<T>(sink, s); });
                   });
}

FusedSequence::Run FusedSequence::run(std::span<const Tensor> state, std::size_t output_state, bool reverse,
                                      std::span<const std::int64_t> lengths) const {
  const Data& d = *data_;
  const FusedProgram& P = *d.program;
  const TraceGraph& g = P.graph;
  constexpr const char* where = "fused sequence";
  OpScope op_scope(where);
  check_state(where, P, state);
  const std::int64_t steps = d.steps, B = P.B;
  UNROLL_CHECK(output_state < state.size(), IndexError, "{}: output state out of range; got {}, expected < {}", where,
               output_state, state.size());
  // Each step's new state goes where the state was: it must be the same shape (nn::run_cell checks the same
  // when it runs the steps one by one).
  UNROLL_CHECK(g.outputs.size() == state.size(), ValueError,
               "{}: the step changed the number of state tensors; got {}, expected {}", where, g.outputs.size(),
               state.size());
  for (std::size_t k = 0; k < state.size(); ++k) {
    const Shape& ns = g.nodes[static_cast<std::size_t>(g.outputs[k])].shape;
    UNROLL_CHECK(ns == state[k].shape(), ShapeError,
                 "{}: the step changed state tensor {}'s shape; got {}, expected {} (the shape it was given)", where, k,
                 ns, state[k].shape());
  }
  UNROLL_CHECK(lengths.empty() || static_cast<std::int64_t>(lengths.size()) == B, ShapeError,
               "{}: one length per batch row; got {} lengths, expected {}", where, lengths.size(), B);
  for (std::size_t r = 0; r < lengths.size(); ++r)
    UNROLL_CHECK(lengths[r] >= 0 && lengths[r] <= steps, ValueError,  // 0: a row that holds (a later segment)
                 "{}: sequence length out of range; got lengths[{}]={}, expected 0 <= length <= {}", where, r,
                 lengths[r], steps);
  const bool grad = inputs_need_grad(d, state);
  // Backward reads every step's values; without it one step's buffer serves them all.
  Tensor arena = Tensor::empty({std::max<std::int64_t>((grad ? steps : 1) * P.arena, 1)}, g.dtype);
  std::vector<Tensor> states;  // per state tensor [T + 1, B, w]: the state before loop step i at i
  for (const Tensor& q : state) {
    std::vector<std::int64_t> shape{steps + 1};
    shape.insert(shape.end(), q.shape().begin(), q.shape().end());
    states.push_back(Tensor::empty(Shape(shape), g.dtype));
    std::memcpy(states.back().raw(), q.raw(), static_cast<std::size_t>(q.numel()) * dtype_size(g.dtype));
  }
  Run out;
  const Shape& os = state[output_state].shape();
  std::vector<std::int64_t> out_shape{steps};
  out_shape.insert(out_shape.end(), os.begin(), os.end());
  const bool output_is_states = !reverse && lengths.empty();  // then the outputs are states 1..T as they are
  if (!output_is_states) out.output = Tensor::empty(Shape(out_shape), g.dtype);
  dispatch_floating(where, g.dtype, [&]<class T>(T*) {
    Frame<T>& f = forward_frame<T>();
    for (std::int64_t i = 0; i < steps; ++i) {
      const std::int64_t t = reverse ? steps - 1 - i : i;
      if (i == 0)
        f.fill(d, arena, 0, states, 0, t, /*forward=*/true);
      else
        f.move_to(d, grad ? i * P.arena : 0, i * B, t);
      run_forward<T>(P, f);
      for (std::size_t k = 0; k < states.size(); ++k) {  // the state after the step
        const Loc& l = P.floc[static_cast<std::size_t>(g.outputs[k])];
        const std::int64_t w = l.w;
        T* before = states[k].template data<T>() + i * B * w;
        T* after = before + B * w;
        for (std::int64_t r = 0; r < B; ++r) {
          const T* src = row_runs(lengths, r, t) ? f.base[static_cast<std::size_t>(l.buf)] + l.off + (l.per_row ? r * l.ld : 0)
                                                 : before + r * w;
          std::memcpy(after + r * w, src, static_cast<std::size_t>(w) * sizeof(T));
        }
        if (k != output_state || output_is_states) continue;
        T* o = out.output.template data<T>() + t * B * w;
        for (std::int64_t r = 0; r < B; ++r)
          if (row_runs(lengths, r, t))
            std::memcpy(o + r * w, after + r * w, static_cast<std::size_t>(w) * sizeof(T));
          else
            std::memset(o + r * w, 0, static_cast<std::size_t>(w) * sizeof(T));
      }
    }
  });
  if (output_is_states) out.output = view_range(states[output_state], os.numel(), Shape(out_shape));
  for (std::size_t k = 0; k < states.size(); ++k)
    out.state.push_back(view_range(states[k], steps * state[k].numel(), state[k].shape()));
  if (!grad) return out;
  thread_local std::vector<Tensor*> out_ptrs;
  out_ptrs.clear();
  out_ptrs.push_back(&out.output);
  for (Tensor& q : out.state) out_ptrs.push_back(&q);
  SavedSequence saved{data_, std::move(arena), std::move(states),
                      std::vector<std::int64_t>(lengths.begin(), lengths.end()), output_state, reverse};
  autograd::record(where, std::span<Tensor* const>(out_ptrs), node_inputs(d, state),
                   [s = std::move(saved)](autograd::GradSink& sink) {
                     dispatch_floating("fused sequence", s.arena.dtype(),
                                       [&]<class T>(T*) { run_sequence_backward<T>(sink, s); });
                   });
  return out;
}

}  // namespace unroll::detail
