// tests/autograd/test_checkpoint.cpp — gradient checkpointing: autograd::checkpoint itself, and checkpointed
// BPTT in nn::run_cell (loop, fused whole-sequence and fused per-step paths) and the built-in layers. Every
// checkpointed run must give the unsegmented run's outputs and gradients (float64, to round-off), also with
// lengths, reverse, dropout inside the cell (masks replayed), batch shards and weight drop; its measured peak
// memory must fall; bad options are one-line errors.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
using Pair = std::pair<Tensor, Tensor>;

// The largest |a - b| over two lists of tensors (undefined pairs skipped; a defined/undefined mismatch is inf).
double max_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].defined() && !b[i].defined()) continue;
    if (a[i].defined() != b[i].defined()) return INFINITY;
    REQUIRE(a[i].shape() == b[i].shape());
    const std::vector<double> va = a[i].to_vector(), vb = b[i].to_vector();
    for (std::size_t k = 0; k < va.size(); ++k) worst = std::max(worst, std::abs(va[k] - vb[k]));
  }
  return worst;
}

// Fixed, non-uniform loss weights shaped like t.
Tensor weights_like(const Tensor& t) {
  Tensor w = Tensor::empty(t.shape(), t.dtype());
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data<double>()[i] = std::cos(0.37 * static_cast<double>(i));
  return w;
}

// An LSTM cell from primitives with an optional dropout on h (to check the masks are replayed).
struct DropLSTM : nn::Module, nn::RecurrentWeights {
  double p = 0;
  DropLSTM(std::int64_t in, std::int64_t hid, double drop = 0) : p(drop) { create(*this, "", in, hid, 4, true, f64); }
  Pair operator()(const Tensor& x, const Pair& s) const {
    const Tensor h = p > 0 ? dropout(s.first, p, true) : s.first;
    auto g = chunk(linear(x, weight_ih, bias_ih) + linear(h, weight_hh, bias_hh), 4, 1);
    Tensor c = sigmoid(g[1]) * s.second + sigmoid(g[0]) * tanh(g[2]);
    return {sigmoid(g[3]) * tanh(c), c};
  }
};

// h' = h + f (tanh(W_c [x, f h]) - h), f = sigmoid(W_f [x, h]): fusable.
struct MGU : nn::Module {
  nn::Linear gate, cand;
  MGU(std::int64_t in, std::int64_t hid) : gate(in + hid, hid, true, f64), cand(in + hid, hid, true, f64) {
    register_module("gate", gate);
    register_module("cand", cand);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    const Tensor f = sigmoid(gate(cat({x, h}, 1)));
    return h + f * (tanh(cand(cat({x, f * h}, 1))) - h);
  }
};

// Runs `forward(x) -> {outputs...}` with a weighted sum loss; returns the outputs, x's gradient and every
// parameter's gradient (which it zeroes first).
template <class F>
std::vector<Tensor> outputs_and_grads(nn::Module& m, const Tensor& x_value, F&& forward) {
  for (Tensor& p : m.parameters()) p.zero_grad();
  Tensor x = x_value.detach().requires_grad_();
  std::vector<Tensor> outs = forward(x);
  Tensor loss = zeros({}, f64);
  for (const Tensor& o : outs) loss = loss + sum(o * weights_like(o));
  loss.backward();
  std::vector<Tensor> r;
  for (const Tensor& o : outs) r.push_back(o.detach());
  r.push_back(x.grad());
  for (const Tensor& p : m.parameters()) r.push_back(p.grad().defined() ? copy_of(p.grad()) : Tensor());
  return r;
}
}  // namespace

TEST_SUITE("autograd/checkpoint") {
  TEST_CASE("checkpoint: the same values and gradients as the function run plainly, inputs and parameters") {
    Tensor w = tensor({0.3, -0.7, 1.1}, {3}, f64).requires_grad_();
    const Tensor a0 = tensor({0.5, 1.5, -0.25}, {3}, f64), b0 = tensor({2.0, -1.0, 0.75}, {3}, f64);
    auto f = [&](std::span<const Tensor> in) {
      const Tensor u = tanh(in[0] * w + in[1]);
      return std::vector<Tensor>{u * in[1], exp(u * 0.5)};
    };
    auto run = [&](bool ckpt) {
      w.zero_grad();
      Tensor a = a0.detach().requires_grad_(), b = b0.detach().requires_grad_();
      const std::vector<Tensor> in{a * 1.0, b};  // a non-leaf input and a leaf input
      std::vector<Tensor> o = ckpt ? autograd::checkpoint(f, in) : f(in);
      sum(o[0] * o[0] + o[1] * 3.0).backward();
      return std::vector<Tensor>{o[0].detach(), o[1].detach(), a.grad(), b.grad(), copy_of(w.grad())};
    };
    CHECK(max_diff(run(true), run(false)) < 1e-14);
  }

  TEST_CASE("checkpoint: keeps nothing of the function's ops; an output no gradient reaches is skipped") {
    Tensor w = tensor({0.5}, {1}, f64).requires_grad_();
    const Tensor x = tensor({1.0, 2.0}, {2}, f64);
    std::size_t before = autograd::Tape::current().size();
    std::vector<Tensor> o = autograd::checkpoint(
        [&](std::span<const Tensor> in) {
          return std::vector<Tensor>{exp(tanh(in[0] * w) * 2.0), in[0] * 0.0};
        },
        std::vector<Tensor>{x});
    CHECK(autograd::Tape::current().size() == before + 1);  // one node, however many ops inside
    sum(o[0]).backward();
    const double expect = (2 * (1 - std::pow(std::tanh(0.5), 2)) * std::exp(2 * std::tanh(0.5)) * 1.0) +
                          (2 * (1 - std::pow(std::tanh(1.0), 2)) * std::exp(2 * std::tanh(1.0)) * 2.0);
    CHECK(w.grad().item() == doctest::Approx(expect).epsilon(1e-12));
  }

  TEST_CASE("checkpoint: dropout inside draws the same mask when recomputed") {
    Tensor w = tensor({0.3, -0.7, 1.1, 0.2, 0.9, -0.4}, {6}, f64).requires_grad_();
    auto run = [&](bool ckpt) {
      w.zero_grad();
      manual_seed(5);
      auto f = [&](std::span<const Tensor> in) { return std::vector<Tensor>{dropout(in[0] * w, 0.5, true)}; };
      const std::vector<Tensor> in{ones({6}, f64)};
      std::vector<Tensor> o = ckpt ? autograd::checkpoint(f, in) : f(in);
      sum(o[0] * weights_like(o[0])).backward();
      return std::vector<Tensor>{o[0].detach(), copy_of(w.grad()), rand({1}, f64)};  // the stream continues alike
    };
    CHECK(max_diff(run(true), run(false)) == 0);
  }

  TEST_CASE("checkpoint: errors") {
    CHECK_THROWS_WITH_AS(autograd::checkpoint({}, std::vector<Tensor>{}),
                         "checkpoint: no function; got an empty function, expected one to run", ValueError);
    CHECK_THROWS_WITH_AS(autograd::checkpoint([](std::span<const Tensor>) { return std::vector<Tensor>{Tensor()}; },
                                              std::vector<Tensor>{}),
                         "checkpoint: output 0 must be a defined floating-point tensor; got an undefined tensor",
                         ValueError);
    CHECK_THROWS_WITH_AS(autograd::checkpoint([](std::span<const Tensor> in) { return std::vector<Tensor>(in.begin(), in.end()); },
                                              std::vector<Tensor>{Tensor()}),
                         "checkpoint: input 0 is undefined; got an undefined tensor, expected a defined one",
                         ValueError);
    // A weight computed outside (here: after a mask) read inside without being an input.
    Tensor w = tensor({1.0, 2.0}, {2}, f64).requires_grad_();
    const Tensor masked = w * 2.0;
    std::vector<Tensor> o = autograd::checkpoint(
        [&](std::span<const Tensor> in) { return std::vector<Tensor>{in[0] * masked}; },
        std::vector<Tensor>{ones({2}, f64)});
    CHECK_THROWS_WITH_AS(sum(o[0]).backward(),
                         doctest::Contains("checkpoint: backward through the recomputation (a tensor computed outside "
                                           "the checkpointed function that needs a gradient must be one of its inputs"),
                         StateError);
  }
}

TEST_SUITE("nn/checkpointed_bptt") {
  TEST_CASE("run_cell: segments give the unsegmented outputs and gradients (loop path, (h, c) state)") {
    const std::int64_t T = 11, B = 3, I = 4, H = 5;
    manual_seed(1);
    DropLSTM cell(I, H);
    const Tensor x = randn({T, B, I}, f64);
    const Pair s0{randn({B, H}, f64), randn({B, H}, f64)};
    for (bool reverse : {false, true})
      for (bool lengths : {false, true})
        for (std::int64_t k : {1, 3, 4, 10}) {
          CAPTURE(reverse);
          CAPTURE(lengths);
          CAPTURE(k);
          nn::RunOptions opt{.lengths = lengths ? std::vector<std::int64_t>{11, 2, 7} : std::vector<std::int64_t>{},
                             .reverse = reverse};
          auto run = [&](std::int64_t every) {
            return outputs_and_grads(cell, x, [&](const Tensor& xx) {
              nn::RunOptions o = opt;
              o.checkpoint_every = every;
              auto r = nn::run_cell(xx, s0, cell, o);
              return std::vector<Tensor>{r.output, r.state.first, r.state.second};
            });
          };
          CHECK(max_diff(run(k), run(0)) < 1e-13);
        }
  }

  TEST_CASE("run_cell: dropout inside the cell replays its masks; a custom output; a lambda step") {
    const std::int64_t T = 9, B = 2, I = 3, H = 4;
    manual_seed(2);
    DropLSTM cell(I, H, 0.3);
    const Tensor x = randn({T, B, I}, f64);
    const Pair s0{zeros({B, H}, f64), zeros({B, H}, f64)};
    auto run = [&](std::int64_t every) {
      manual_seed(9);
      return outputs_and_grads(cell, x, [&](const Tensor& xx) {
        auto r = nn::run_cell(
            xx, s0, [&](const Tensor& x_t, const Pair& s) { return cell(x_t, s); },  // a temporary lambda
            [](const Pair& s) { return s.second * 2.0; }, {.lengths = {}, .checkpoint_every = every});
        return std::vector<Tensor>{r.output, r.state.first};
      });
    };
    CHECK(max_diff(run(2), run(0)) < 1e-13);
    CHECK(max_diff(run(4), run(0)) < 1e-13);
  }

  TEST_CASE("run_cell: a cell drawing from its own generator, named in RunOptions::generators, is replayed") {
    const std::int64_t T = 8, B = 2, I = 3, H = 4;
    manual_seed(12);
    DropLSTM cell(I, H);
    const Tensor x = randn({T, B, I}, f64);
    const Pair s0{zeros({B, H}, f64), zeros({B, H}, f64)};
    Generator own(99);
    auto run = [&](std::int64_t every, std::int64_t budget) {
      own.manual_seed(99);
      return outputs_and_grads(cell, x, [&](const Tensor& xx) {
        auto step = [&](const Tensor& x_t, const Pair& s) {
          return cell(x_t, Pair{nn::dropout_mask({B, H}, 0.4, f64, own) * s.first, s.second});
        };
        nn::RunOptions o{.lengths = {}, .checkpoint_every = every, .memory_budget = budget, .generators = {&own}};
        auto r = nn::run_cell(xx, s0, step, o);
        return std::vector<Tensor>{r.output, r.state.second};
      });
    };
    const std::vector<Tensor> plain = run(0, 0);
    CHECK(max_diff(run(3, 0), plain) < 1e-13);
    CHECK(max_diff(run(0, 1 << 20), plain) < 1e-13);  // the budget's measuring step puts the generator back
  }

  TEST_CASE("run_cell: a fused cell in segments (whole-sequence nodes and per-step nodes)") {
    const std::int64_t T = 10, B = 3, I = 4, H = 5;
    manual_seed(3);
    nn::Fused<MGU> cell(I, H);
    const Tensor x = randn({T, B, I}, f64), h0 = randn({B, H}, f64);
    for (bool per_step : {false, true})
      for (bool lengths : {false, true})
        for (bool reverse : {false, true}) {
          CAPTURE(per_step);
          CAPTURE(lengths);
          CAPTURE(reverse);
          auto run = [&](std::int64_t every, bool fused) {
            cell.set_fused(fused);
            nn::RunOptions o{.lengths = lengths ? std::vector<std::int64_t>{3, 10, 6} : std::vector<std::int64_t>{},
                             .reverse = reverse,
                             .checkpoint_every = every};
            return outputs_and_grads(cell, x, [&](const Tensor& xx) {
              auto r = per_step ? nn::run_cell(xx, h0, cell, [](const Tensor& h) { return h; }, o)
                                : nn::run_cell(xx, h0, cell, o);
              return std::vector<Tensor>{r.output, r.state};
            });
          };
          const std::vector<Tensor> plain = run(0, false);
          CHECK(max_diff(run(3, true), plain) < 1e-13);
          CHECK(max_diff(run(4, false), plain) < 1e-13);
        }
    cell.set_fused(true);
  }

  TEST_CASE("run_cell: gradcheck through a checkpointed sequence") {
    manual_seed(4);
    DropLSTM cell(2, 3);
    const Tensor x = randn({7, 2, 2}, f64);
    const auto r = autograd::gradcheck(
        "checkpointed run_cell",
        [&](const std::vector<Tensor>& in) {
          auto o = nn::run_cell(in[0], Pair{in[1], zeros({2, 3}, f64)}, cell, {.lengths = {}, .checkpoint_every = 3});
          return o.output;
        },
        {x.detach().requires_grad_(), randn({2, 3}, f64).requires_grad_()});
    CHECK(r.ok);
  }

  TEST_CASE("run_cell: batch shards with checkpointed segments give the whole batch's gradients") {
    const std::int64_t T = 8, B = 4, I = 3, H = 4;
    manual_seed(6);
    DropLSTM cell(I, H);
    const Tensor x = randn({T, B, I}, f64), w = weights_like(zeros({T, B, H}, f64));
    auto grads = [&](std::int64_t every, int shards) {
      for (Tensor& p : cell.parameters()) p.zero_grad();
      autograd::sharded_backward(
          B,
          [&](const autograd::Shard& s) {
            const Tensor xs = narrow(x, 1, s.begin, s.size());
            const Pair s0{zeros({s.size(), H}, f64), zeros({s.size(), H}, f64)};
            auto r = nn::run_cell(xs, s0, cell, {.lengths = {}, .checkpoint_every = every});
            return sum(r.output * narrow(w, 1, s.begin, s.size())) / static_cast<double>(s.size());
          },
          {.shards = shards});
      std::vector<Tensor> g;
      for (const Tensor& p : cell.parameters()) g.push_back(copy_of(p.grad()));
      return g;
    };
    CHECK(max_diff(grads(3, 2), grads(0, 1)) < 1e-13);
  }

  TEST_CASE("layers: LSTM, GRU and RNN in segments give the unsegmented outputs and gradients") {
    const std::int64_t T = 13, B = 3, I = 4, H = 5;
    for (int kind = 0; kind < 3; ++kind)
      for (bool bidirectional : {false, true}) {
        CAPTURE(kind);
        CAPTURE(bidirectional);
        nn::RecurrentOptions o{.input_size = I, .hidden_size = H, .num_layers = 2, .dtype = f64};
        o.bidirectional = bidirectional;
        o.dropout = 0.25;
        o.weight_drop = 0.3;
        manual_seed(7);
        nn::LSTM lstm(o);
        nn::GRU gru(o);
        nn::RNN rnn(o);
        nn::RecurrentLayer& layer = kind == 0 ? static_cast<nn::RecurrentLayer&>(lstm)
                                    : kind == 1 ? static_cast<nn::RecurrentLayer&>(gru)
                                                : static_cast<nn::RecurrentLayer&>(rnn);
        const Tensor x = randn({T, B, I}, f64);
        const std::vector<std::int64_t> lengths{13, 4, 9};
        auto run = [&](std::int64_t every, std::int64_t budget) {
          nn::RecurrentOptions oo = o;
          oo.checkpoint_every = every;
          oo.memory_budget = budget;
          manual_seed(7);
          nn::LSTM l2(oo);
          nn::GRU g2(oo);
          nn::RNN r2(oo);
          nn::RecurrentLayer& m = kind == 0 ? static_cast<nn::RecurrentLayer&>(l2)
                                  : kind == 1 ? static_cast<nn::RecurrentLayer&>(g2)
                                              : static_cast<nn::RecurrentLayer&>(r2);
          m.load_state_dict(layer.state_dict());
          manual_seed(11);  // the same weight-drop and dropout masks
          return outputs_and_grads(m, x, [&](const Tensor& xx) {
            nn::RecurrentOutput r = kind == 0 ? l2(xx, {}, {}, lengths) : kind == 1 ? g2(xx, {}, lengths)
                                                                                    : r2(xx, {}, lengths);
            return std::vector<Tensor>{r.output, r.h_n, r.c_n.defined() ? r.c_n : zeros({1}, f64)};
          });
        };
        const std::vector<Tensor> plain = run(0, 0);
        CHECK(max_diff(run(4, 0), plain) < 1e-13);
        CHECK(max_diff(run(1, 0), plain) < 1e-13);
        CHECK(max_diff(run(0, 20000), plain) < 1e-13);
      }
  }

  TEST_CASE("peak memory falls with the segment length: an LSTM layer at T = 10,000, H = 256") {
    // Measured by the allocator (the bytes this thread held at most), not estimated. Float32, batch 1.
    const std::int64_t T = 10000, B = 1, H = 256;
    manual_seed(8);
    const Tensor x = randn({T, B, H});
    auto peak = [&](std::int64_t every, std::int64_t budget) {
      nn::LSTM lstm({.input_size = H, .hidden_size = H, .checkpoint_every = every, .memory_budget = budget});
      const std::int64_t base = thread_memory().live_bytes;
      reset_thread_memory_peak();
      Tensor y = lstm(x).output;
      mean(y).backward();
      return static_cast<double>(thread_memory().peak_bytes - base);
    };
    const double plain = peak(0, 0), k100 = peak(100, 0), budget = peak(0, 32 << 20);
    MESSAGE("peak bytes: plain " << plain << ", k=100 " << k100 << ", budget 32 MB " << budget);
    // Left whatever it does: x, the output and their gradients (4 x 10 MB); segments cut the steps' saved values
    // (plain: about 10 floats per hidden unit and step).
    CHECK(k100 < 0.3 * plain);
    CHECK(budget < 0.6 * plain);
  }

  TEST_CASE("memory_budget: the longest segment whose ceil(T/k) states and k steps fit") {
    using nn::detail::checkpoint_segment;
    CHECK(checkpoint_segment("f", 0, 2000, 100, 8, 100) == 19);  // 6 states (48) + 19 steps (1900) <= 2000
    CHECK(checkpoint_segment("f", 0, 40, 3, 10, 10) == 3);        // every k costs 40: the longest
    CHECK(checkpoint_segment("f", 7, 0, 100, 8, 100) == 7);       // checkpoint_every as given
    CHECK(checkpoint_segment("f", 0, 0, 100, 8, 100) == 0);       // off
    CHECK_THROWS_WITH_AS(checkpoint_segment("f", 0, 35, 3, 10, 10),
                         "f: memory_budget too small for 3 steps; got 35 bytes, expected at least 40 (one step keeps "
                         "10 bytes and each segment's starting state 10)",
                         ValueError);
  }

  TEST_CASE("bad checkpointing options are one-line errors") {
    const Tensor x = zeros({4, 2, 3}, f64), h0 = zeros({2, 3}, f64);
    auto step = [](const Tensor& x_t, const Tensor& h) { return tanh(x_t + h); };
    CHECK_THROWS_WITH_AS(nn::run_cell(x, h0, step, {.lengths = {}, .checkpoint_every = -1}),
                         "run_cell: checkpoint_every out of range; got -1, expected a segment length >= 1 (or 0: no "
                         "checkpointing)",
                         ValueError);
    CHECK_THROWS_WITH_AS(nn::run_cell(x, h0, step, {.lengths = {}, .memory_budget = -5}),
                         "run_cell: memory_budget out of range; got -5, expected a number of bytes >= 1 (or 0: no "
                         "budget)",
                         ValueError);
    CHECK_THROWS_WITH_AS(nn::run_cell(x, h0, step, {.lengths = {}, .checkpoint_every = 2, .memory_budget = 100}),
                         "run_cell: checkpoint_every and memory_budget both given; got 2 and 100, expected one of them "
                         "(the budget chooses the segment length)",
                         ValueError);
    Tensor hg = h0.detach().requires_grad_();
    CHECK_THROWS_WITH_AS(nn::run_cell(x, hg, step, {.lengths = {}, .memory_budget = 10}),
                         doctest::Contains("run_cell: memory_budget too small for 4 steps; got 10 bytes, expected at "
                                           "least"),
                         ValueError);
    CHECK_THROWS_WITH_AS(nn::LSTM({.input_size = 3, .hidden_size = 2, .checkpoint_every = -2}),
                         "LSTM: checkpoint_every out of range; got -2, expected a segment length >= 1 (or 0: no "
                         "checkpointing)",
                         ValueError);
  }
}
