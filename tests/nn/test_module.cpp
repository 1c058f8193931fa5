// Module: registration, dotted names, state dicts (strict loading and its error texts), dtype conversion,
// train/eval, zero_grad; default initialisation of the layers (PyTorch's bounds); layer error texts.
#include <doctest/doctest.h>

#include <cmath>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
struct Tiny : nn::Module {
  nn::Linear enc{3, 4};
  nn::LSTM rnn{{.input_size = 4, .hidden_size = 5, .num_layers = 2, .bidirectional = true}};
  nn::Dropout drop{0.5};
  Tensor scale = ones({1});
  Tensor running = zeros({2});
  Tiny() {
    register_module("enc", enc);
    register_module("rnn", rnn);
    register_module("drop", drop);
    register_parameter("scale", scale);
    register_buffer("running", running);
  }
};

std::vector<std::string> names(const StateDict& d) {
  std::vector<std::string> out;
  for (const auto& [n, t] : d) out.push_back(n);
  return out;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_vector()) m = std::max(m, std::abs(v));
  return m;
}
}  // namespace

TEST_SUITE("nn/module") {
  TEST_CASE("dotted names in registration order, parameters share storage and gradient with the members") {
    Tiny m;
    const auto n = names(m.named_parameters());
    const std::vector<std::string> expected = {"scale",
                                               "enc.weight",
                                               "enc.bias",
                                               "rnn.weight_ih_l0",
                                               "rnn.weight_hh_l0",
                                               "rnn.bias_ih_l0",
                                               "rnn.bias_hh_l0",
                                               "rnn.weight_ih_l0_reverse",
                                               "rnn.weight_hh_l0_reverse",
                                               "rnn.bias_ih_l0_reverse",
                                               "rnn.bias_hh_l0_reverse",
                                               "rnn.weight_ih_l1",
                                               "rnn.weight_hh_l1",
                                               "rnn.bias_ih_l1",
                                               "rnn.bias_hh_l1",
                                               "rnn.weight_ih_l1_reverse",
                                               "rnn.weight_hh_l1_reverse",
                                               "rnn.bias_ih_l1_reverse",
                                               "rnn.bias_hh_l1_reverse"};
    CHECK(n == expected);
    CHECK(m.named_parameters().at("rnn.weight_ih_l1").shape() == Shape({20, 10}));
    CHECK(names(m.named_buffers()) == std::vector<std::string>{"running"});
    CHECK(m.state_dict().size() == expected.size() + 1);
    CHECK(m.num_parameters() == 1 + 16 + 2 * (80 + 100 + 40) + 2 * (200 + 100 + 40));

    auto params = m.parameters();
    sum(m.enc(ones({2, 3}))).backward();
    CHECK(params[1].grad().defined());  // the handle sees the member's gradient
    m.zero_grad();
    CHECK_FALSE(params[1].grad().defined());
  }

  TEST_CASE("train/eval reaches every child; dropout is the identity in eval mode") {
    Tiny m;
    CHECK(m.drop.is_training());
    m.eval();
    CHECK_FALSE(m.drop.is_training());
    CHECK_FALSE(m.rnn.is_training());
    Tensor x = ones({4, 4});
    CHECK(m.drop(x).to_vector() == x.to_vector());
    m.train();
    CHECK(m.enc.is_training());
  }

  TEST_CASE(
      "state_dict round trip; strict loading names what is missing, unexpected or mis-shaped, and writes nothing on error") {
    Tiny a, b;
    b.load_state_dict(a.state_dict());
    for (const auto& [n, t] : a.state_dict()) CHECK(b.state_dict().at(n).to_vector() == t.to_vector());

    Tiny c;
    const auto before = c.enc.weight.to_vector();
    StateDict missing = a.state_dict().sub("");
    StateDict partial;
    for (const auto& [n, t] : a.state_dict())
      if (n != "rnn.bias_hh_l1") partial.insert(n, t);
    CHECK_THROWS_WITH_AS(c.load_state_dict(partial),
                         "load_state_dict: missing entry; got no 'rnn.bias_hh_l1', expected every parameter and buffer",
                         ValueError);
    CHECK(c.enc.weight.to_vector() == before);  // all or nothing
    const auto result = c.load_state_dict(partial, /*strict=*/false);
    CHECK(c.enc.weight.to_vector() == a.enc.weight.to_vector());
    CHECK(result.missing_keys == std::vector<std::string>{"rnn.bias_hh_l1"});
    CHECK(result.unexpected_keys.empty());
    CHECK_FALSE(result.ok());

    StateDict extra = a.state_dict().sub("");
    extra.insert("rnn.weight_ih_l2", zeros({1}));
    CHECK_THROWS_WITH_AS(
        c.load_state_dict(extra),
        "load_state_dict: unexpected entry; got 'rnn.weight_ih_l2', expected only the module's parameters and buffers",
        ValueError);
    StateDict wrong = a.state_dict().sub("");
    wrong.set("enc.weight", zeros({3, 4}));
    CHECK_THROWS_WITH_AS(c.load_state_dict(wrong),
                         "load_state_dict: shape mismatch for 'enc.weight'; got [3, 4], expected [4, 3]", ShapeError);
    wrong.set("enc.weight", reshape(index_tensor({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}), {4, 3}));
    CHECK_THROWS_WITH_AS(c.load_state_dict(wrong),
                         "load_state_dict: dtype mismatch for 'enc.weight'; got int64, expected float32", DtypeError);
    (void)missing;
  }

  TEST_CASE(
      "load_state_dict: non-strict returns what did not match; strict lists every problem and hints at a prefix") {
    Tiny a, c;
    StateDict extra = a.state_dict().sub("");
    extra.insert("decoder.weight", zeros({2}));
    const auto r = c.load_state_dict(extra, /*strict=*/false);
    CHECK(r.missing_keys.empty());
    CHECK(r.unexpected_keys == std::vector<std::string>{"decoder.weight"});
    CHECK(c.load_state_dict(a.state_dict()).ok());

    // Several problems at once: one error names them all, typed by the first.
    StateDict several = a.state_dict().sub("");
    several.set("enc.weight", zeros({3, 4}));
    StateDict pruned;
    for (const auto& [n, t] : several)
      if (n != "scale") pruned.insert(n, t);
    pruned.insert("bogus", zeros({1}));
    CHECK_THROWS_WITH_AS(
        c.load_state_dict(pruned),
        "load_state_dict: 3 entries do not match; got shape mismatch for 'enc.weight' ([3, 4], expected "
        "[4, 3]), no 'scale', unexpected 'bogus', expected every parameter and buffer with its shape and "
        "kind, and nothing else",
        ShapeError);
    // Non-strict still refuses a shape mismatch (nothing is written).
    CHECK_THROWS_AS(c.load_state_dict(pruned, /*strict=*/false), ShapeError);

    // A sub-module's dict is found inside the whole model's under a prefix, and the other way round.
    nn::Linear enc(3, 4);
    StateDict enc_entries;
    enc_entries.merge(a.state_dict().sub("enc."), "enc.");
    CHECK_THROWS_WITH_AS(
        enc.load_state_dict(enc_entries),
        "load_state_dict: 4 entries do not match; got no 'weight', no 'bias', unexpected 'enc.weight', "
        "unexpected 'enc.bias', expected every parameter and buffer with its shape and kind, and nothing "
        "else; found 'enc.weight' for 'weight': load the sub-dict with StateDict::sub(\"enc.\")",
        ValueError);
    // The whole model's dict: 22 problems, the first 8 listed.
    CHECK_THROWS_WITH_AS(
        enc.load_state_dict(a.state_dict()),
        "load_state_dict: 22 entries do not match; got no 'weight', no 'bias', unexpected 'scale', "
        "unexpected 'running', unexpected 'enc.weight', unexpected 'enc.bias', unexpected "
        "'rnn.weight_ih_l0', unexpected 'rnn.weight_hh_l0' and 14 more, expected every parameter and buffer "
        "with its shape and kind, and nothing else; found 'enc.weight' for 'weight': load the sub-dict "
        "with StateDict::sub(\"enc.\")",
        ValueError);
    enc.load_state_dict(a.state_dict().sub("enc."));
    CHECK(enc.weight.to_vector() == a.enc.weight.to_vector());
    struct Outer : nn::Module {
      nn::Linear cell{3, 4};
      Outer() { register_module("cell", cell); }
    } outer;
    CHECK_THROWS_WITH_AS(
        outer.load_state_dict(enc.state_dict()),
        "load_state_dict: 4 entries do not match; got no 'cell.weight', no 'cell.bias', unexpected "
        "'weight', unexpected 'bias', expected every parameter and buffer with its shape and kind, and "
        "nothing else; found 'weight' for 'cell.weight': the dict lacks the prefix \"cell.\" (add it "
        "with StateDict::merge(dict, \"cell.\"))",
        ValueError);
  }

  TEST_CASE("check_registered finds a Tensor member that was never registered") {
    struct Forgetful : nn::Module {
      Tensor w = randn({3, 2}).requires_grad_();
      Tensor u = randn({2}).requires_grad_();  // forgotten: never trained, never saved
      Forgetful() { register_parameter("w", w); }
      Tensor forward(const Tensor& x) const { return matmul(x, w) * u; }
    } m;
    const Tensor x = randn({4, 3});
    CHECK_THROWS_WITH_AS(
        m.check_registered([&] { (void)m.forward(x); }),
        "Module::check_registered: the forward used 1 tensor(s) that require grad but are not "
        "registered; got [2] float32, expected every trained tensor registered with register_parameter "
        "(or an input marked requires_grad_)",
        StateError);
    m.register_parameter("u", m.u);
    m.check_registered([&] { (void)m.forward(x); });
    // Its limit: a member made without requires_grad_() is a constant to autograd, so the check cannot see it.
    struct PlainMember : nn::Module {
      Tensor w = randn({3, 2}).requires_grad_();
      Tensor u = randn({2});  // forgotten and never marked: invisible
      PlainMember() { register_parameter("w", w); }
    } plain;
    plain.check_registered([&] { (void)(matmul(x, plain.w) * plain.u); });
    CHECK(autograd::Tape::current().size() == 0);  // the check's tape was its own
    NoGradGuard off;
    CHECK_THROWS_AS(m.check_registered([&] { (void)m.forward(x); }), StateError);
  }

  TEST_CASE("loading writes in place (an optimizer's handles see it) and converts float64 to float32") {
    nn::Linear l(2, 2);
    Tensor handle = l.parameters()[0];
    StateDict d;
    d.insert("weight", tensor({1, 2, 3, 4}, {2, 2}, Dtype::float64));
    d.insert("bias", tensor({5, 6}, {2}, Dtype::float64));
    l.load_state_dict(d);
    CHECK(handle.to_vector() == std::vector<double>{1, 2, 3, 4});
    CHECK(l.weight.dtype() == Dtype::float32);
  }

  TEST_CASE("to(float64) converts parameters to new leaves") {
    nn::GRU g({.input_size = 2, .hidden_size = 3});
    const auto v = g.weights(0).weight_ih.to_vector();
    g.to(Dtype::float64);
    for (const auto& [n, t] : g.named_parameters()) {
      CHECK(t.dtype() == Dtype::float64);
      CHECK(t.requires_grad());
      CHECK(t.is_leaf());
    }
    CHECK(g.weights(0).weight_ih.to_vector() == std::vector<double>(v.begin(), v.end()));
    auto r = g(randn({4, 1, 2}, Dtype::float64));
    CHECK(r.output.dtype() == Dtype::float64);
    CHECK_THROWS_AS(g.to(Dtype::int64), DtypeError);
  }

  TEST_CASE("registration errors") {
    struct Bad : nn::Module {
      Tensor w = zeros({2});
      Tensor u;
    } m;
    m.register_parameter("w", m.w);
    CHECK_THROWS_WITH_AS(m.register_parameter("w", m.w),
                         "register_parameter: name already registered; got 'w', expected a new name", ValueError);
    CHECK_THROWS_WITH_AS(m.register_parameter("a.b", m.w),
                         "register_parameter: invalid name; got 'a.b', expected a non-empty name without '.'",
                         ValueError);
    Tensor op_output = m.w * 2.0;
    CHECK_THROWS_AS(m.register_parameter("v", op_output), StateError);
    CHECK_THROWS_WITH_AS(m.register_parameter("u", m.u),
                         "register_parameter: 'u' must be a defined floating-point tensor; got undefined", ValueError);
  }

  TEST_CASE("default initialisation follows PyTorch's bounds") {
    manual_seed(7);
    nn::Linear l(100, 50);
    const double k = 1.0 / std::sqrt(100.0);
    CHECK(max_abs(l.weight) <= k);
    CHECK(max_abs(l.weight) > 0.9 * k);  // really spread over the range
    CHECK(max_abs(l.bias) <= k);
    nn::LSTM lstm({.input_size = 10, .hidden_size = 64});
    for (const auto& [n, t] : lstm.named_parameters()) {
      CHECK(max_abs(t) <= 1.0 / 8.0);
      CHECK(max_abs(t) > 0.9 / 8.0);
    }
    nn::Embedding e(1000, 8, 3);
    auto w = e.weight.to_vector();
    double mean = 0, var = 0;
    for (double v : w) mean += v / static_cast<double>(w.size());
    for (double v : w) var += (v - mean) * (v - mean) / static_cast<double>(w.size());
    CHECK(std::abs(mean) < 0.05);
    CHECK(std::abs(var - 1.0) < 0.05);
    for (int j = 0; j < 8; ++j) CHECK(w[static_cast<std::size_t>(3 * 8 + j)] == 0.0);
    nn::LayerNorm ln({4});
    CHECK(ln.weight.to_vector() == std::vector<double>(4, 1.0));
    CHECK(ln.bias.to_vector() == std::vector<double>(4, 0.0));
    Tensor t = zeros({30, 20});
    nn::init::xavier_uniform_(t);
    CHECK(max_abs(t) <= std::sqrt(6.0 / 50.0));
    CHECK(nn::init::gain("tanh") == doctest::Approx(5.0 / 3.0));
    CHECK_THROWS_WITH_AS(
        nn::init::gain("swish"),
        "init::gain: unknown nonlinearity; got 'swish', expected linear, sigmoid, tanh, relu, leaky_relu or selu",
        ValueError);
  }

  TEST_CASE("layer error texts") {
    nn::LSTM lstm({.input_size = 3, .hidden_size = 4, .num_layers = 2});
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2, 4})), "LSTM: input size differs; got x=[5, 2, 4], expected input_size 3",
                         ShapeError);
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2, 3}), zeros({1, 2, 4})),
                         "LSTM: h0 has the wrong shape; got [1, 2, 4], expected [2, 2, 4]", ShapeError);
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2, 3}), {}, {}, {5, 6}),
                         "LSTM: sequence length out of range; got lengths[1]=6, expected 1 <= length <= 5", ValueError);
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2, 3}), {}, {}, {5}),
                         "LSTM: one length per batch row; got 1 lengths, expected 2", ShapeError);
    CHECK_THROWS_WITH_AS(lstm(zeros({0, 2, 3})),
                         "LSTM: empty sequence; got x=[0, 2, 3], expected at least one time step", ValueError);
    CHECK_THROWS_AS(lstm(zeros({5, 2, 3}, Dtype::float64)), DtypeError);
    CHECK_THROWS_WITH_AS(nn::GRU({.input_size = 0, .hidden_size = 4}),
                         "GRU: sizes must be positive; got input_size=0 hidden_size=4 num_layers=1", ValueError);
    nn::GRUCell cell(3, 4);
    CHECK_THROWS_WITH_AS(cell(zeros({2, 3}), zeros({2, 5})),
                         "GRUCell: state has the wrong shape; got [2, 5], expected [2, 4]", ShapeError);
    CHECK_THROWS_WITH_AS(nn::Dropout(1.5), "Dropout: probability out of range; got p=1.5, expected 0 <= p <= 1",
                         ValueError);
    nn::LayerNorm ln({3, 5});
    CHECK_THROWS_WITH_AS(ln(zeros({2, 5, 3})),
                         "LayerNorm: input does not end in the normalised shape; got x=[2, 5, 3], expected [..., 3, 5]",
                         ShapeError);
  }

  TEST_CASE("unbatched input and inter-layer dropout") {
    nn::LSTM lstm({.input_size = 3, .hidden_size = 4, .num_layers = 2, .dropout = 0.5, .dtype = Dtype::float64});
    Tensor x = randn({6, 3}, Dtype::float64);
    auto r = lstm(x);
    CHECK(r.output.shape() == Shape({6, 4}));
    CHECK(r.h_n.shape() == Shape({2, 4}));
    lstm.eval();
    auto e1 = lstm(x), e2 = lstm(x);
    CHECK(e1.output.to_vector() == e2.output.to_vector());  // no dropout in eval mode
    auto batched = lstm(unsqueeze(x, 1));
    CHECK(squeeze(batched.output, 1).to_vector() == e1.output.to_vector());
    lstm.train();
    CHECK(lstm(x).output.to_vector() != e1.output.to_vector());  // dropout between the layers in training
  }
}
