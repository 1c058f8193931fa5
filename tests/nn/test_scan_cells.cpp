// MinGRU and MinLSTM (nn/scan_cells.hpp) against the paper's equations run as a plain sequential loop in PyTorch
// (tests/fixtures/scan_cells.json, tools/make_scan_cell_fixtures.py): outputs and the gradients of the input, h0
// and every parameter, in float64 to round-off and float32 within 1e-4; both modes (plain and log space), with
// h0, without, and with lengths. Also: g and log g, a float64 gradcheck through each cell, error texts.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>

#include <unroll/nn/scan_cells.hpp>
#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;

namespace {
std::unique_ptr<nn::Module> make_cell(const json& c, Dtype dt) {
  const auto& cfg = c.at("config");
  const std::string module = c.at("module");
  if (module == "RGLRU") return std::make_unique<nn::RGLRU>(cfg.at("width"), cfg.at("num_heads"), dt);
  if (module == "RGLRUBlock")
    return std::make_unique<nn::RGLRUBlock>(cfg.at("width"), cfg.at("lru_width"), cfg.at("num_heads"),
                                            cfg.at("conv_width"), dt);
  if (module == "MinRNNBlock")
    return std::make_unique<nn::MinRNNBlock>(cfg.at("dim"),
                                             cfg.at("kind") == "gru" ? nn::MinRNNKind::gru : nn::MinRNNKind::lstm,
                                             cfg.at("log_space").get<bool>(), 4, dt);
  const std::int64_t I = cfg.at("input_size"), H = cfg.at("hidden_size");
  const bool log_space = cfg.at("log_space");
  if (module == "MinGRU") return std::make_unique<nn::MinGRU>(I, H, log_space, true, dt);
  return std::make_unique<nn::MinLSTM>(I, H, log_space, true, dt);
}

// A cell's results: every output, and for the blocks the state after the last step.
struct Result {
  Tensor output, final_h = {}, final_conv = {};
};
Result run(const nn::Module& m, const Tensor& x, const Tensor& h0, const ScanOptions& o, const Tensor& conv0 = {}) {
  if (const auto* gru = dynamic_cast<const nn::MinGRU*>(&m)) return {(*gru)(x, h0, o)};
  if (const auto* rglru = dynamic_cast<const nn::RGLRU*>(&m)) return {(*rglru)(x, h0, o)};
  if (const auto* block = dynamic_cast<const nn::MinRNNBlock*>(&m)) {
    auto [y, h] = (*block)(x, h0);
    return {y, h};
  }
  if (const auto* block = dynamic_cast<const nn::RGLRUBlock*>(&m)) {
    auto [y, state] = (*block)(x, {h0, conv0});
    return {y, state.h, state.conv};
  }
  return {dynamic_cast<const nn::MinLSTM&>(m)(x, h0, o)};
}

void check_case(const json& c, Dtype dt, double tol) {
  CAPTURE(c.at("name").get<std::string>());
  CAPTURE(dt);
  auto cell = make_cell(c, dt);
  StateDict sd;
  for (const auto& [name, t] : c.at("state_dict").items()) sd.insert(name, test_support::to_tensor(t, dt));
  cell->load_state_dict(sd);
  const json& in = c.at("inputs");
  const auto input = [&](const char* name) {
    return in.contains(name) ? test_support::to_tensor(in.at(name), dt).requires_grad_() : Tensor();
  };
  Tensor x = input("x"), h0 = input("h0"), conv0 = input("conv0");
  ScanOptions o;
  if (in.contains("lengths")) o.lengths = in.at("lengths").get<std::vector<std::int64_t>>();
  if (in.contains("resets")) {
    std::vector<double> flat;
    for (const auto& row : in.at("resets"))
      for (const auto& v : row) flat.push_back(v.get<double>());
    o.resets = tensor(flat, {x.size(0), x.size(1)});
  }
  const Result r = run(*cell, x, h0, o, conv0);
  const auto close = [&](const Tensor& got, const json& want) {
    return test_support::tolerance_ratio(got, test_support::to_tensor(want), tol, tol) <= 1.0;
  };
  CHECK(close(r.output, c.at("output")));
  Tensor loss = sum(r.output * test_support::to_tensor(c.at("grad_output"), dt));
  if (c.contains("final")) {
    CHECK(close(r.final_h, c.at("final").at("h")));
    if (c.at("final").contains("conv")) CHECK(close(r.final_conv, c.at("final").at("conv")));
    loss = loss + sum(r.final_h * test_support::to_tensor(c.at("grad_final_h"), dt));
  }
  loss.backward();
  const json& g = c.at("grads");
  CHECK(close(x.grad(), g.at("x")));
  if (h0.defined()) CHECK(close(h0.grad(), g.at("h0")));
  if (conv0.defined()) CHECK(close(conv0.grad(), g.at("conv0")));
  for (const auto& [name, p] : cell->named_parameters()) {
    CAPTURE(name);
    CHECK(close(p.grad(), g.at(name)));
  }
  CHECK(cell->named_parameters().size() == c.at("state_dict").size());
}
}  // namespace

TEST_SUITE("nn/scan_cells") {
  TEST_CASE("MinGRU, MinLSTM, MinRNNBlock, RGLRU and RGLRUBlock match the papers' sequential loops in PyTorch") {
    const json fixtures = test_support::load_fixture("scan_cells.json");
    const json& cases = fixtures.at("cases");
    REQUIRE(cases.size() >= 14);
    for (const json& c : cases) {
      check_case(c, Dtype::float64, 1e-10);
      check_case(c, Dtype::float32, 1e-4);
    }
  }

  TEST_CASE("g and log g: the paper's piecewise form, log g finite far below zero") {
    const Tensor x = tensor({-3, -0.5, 0, 0.5, 2}, {5}, Dtype::float64);
    const auto gv = nn::min_rnn_g(x).to_vector(), lg = nn::min_rnn_log_g(x).to_vector();
    const std::vector<double> xs = {-3, -0.5, 0, 0.5, 2};
    for (std::size_t i = 0; i < xs.size(); ++i) {
      const double expected = xs[i] >= 0 ? xs[i] + 0.5 : 1.0 / (1.0 + std::exp(-xs[i]));
      CHECK(gv[i] == doctest::Approx(expected).epsilon(1e-14));
      CHECK(lg[i] == doctest::Approx(std::log(expected)).epsilon(1e-14));
    }
    CHECK(nn::min_rnn_log_g(full({1}, -500.0, Dtype::float32)).item() == doctest::Approx(-500.0));
  }

  TEST_CASE("MinGRU and MinLSTM: float64 gradcheck in both modes; error texts") {
    manual_seed(51);
    for (bool log_space : {false, true}) {
      nn::MinGRU gru(2, 3, log_space, true, Dtype::float64);
      nn::MinLSTM lstm(2, 3, log_space, true, Dtype::float64);
      for (nn::Module* m : {static_cast<nn::Module*>(&gru), static_cast<nn::Module*>(&lstm)}) {
        std::vector<Tensor> in = {randn({5, 2, 2}, Dtype::float64).requires_grad_(),
                                  (rand({2, 3}, Dtype::float64) + 0.5).requires_grad_()};
        for (const Tensor& p : m->parameters()) in.push_back(p);
        auto r = autograd::gradcheck(
            log_space ? "log" : "plain", [&](const std::vector<Tensor>& p) { return run(*m, p[0], p[1], {}).output; },
            in);
        CHECK_MESSAGE(r.ok, r.message);
      }
    }
    nn::MinGRU gru(2, 3);
    CHECK_THROWS_WITH_AS(gru(zeros({5, 2, 4})), "MinGRU: input must be [T, B, 2]; got x=[5, 2, 4]", ShapeError);
    nn::MinLSTM lstm(2, 3);
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2})), "MinLSTM: input must be [T, B, 2]; got x=[5, 2]", ShapeError);
    CHECK_THROWS_AS(lstm(zeros({5, 2, 2}), zeros({3})), ShapeError);  // the scan names a wrong h0
  }

  TEST_CASE("RGLRU, RGLRUBlock and MinRNNBlock: float64 gradcheck, with resets and carried state") {
    manual_seed(52);
    nn::RGLRU rglru(4, 2, Dtype::float64);
    ScanOptions o;
    o.resets = tensor({0, 0, 0, 1, 0, 0, 1, 0}, {4, 2});
    std::vector<Tensor> in = {randn({4, 2, 4}, Dtype::float64).requires_grad_(),
                              randn({2, 4}, Dtype::float64).requires_grad_()};
    for (const Tensor& p : rglru.parameters()) in.push_back(p);
    auto r = autograd::gradcheck(
        "rglru", [&](const std::vector<Tensor>& p) { return rglru(p[0], p[1], o); }, in);
    CHECK_MESSAGE(r.ok, r.message);

    nn::RGLRUBlock block(3, 4, 2, 3, Dtype::float64);
    in = {randn({4, 2, 3}, Dtype::float64).requires_grad_(), randn({2, 4}, Dtype::float64).requires_grad_(),
          randn({2, 2, 4}, Dtype::float64).requires_grad_()};
    for (const Tensor& p : block.parameters()) in.push_back(p);
    r = autograd::gradcheck(
        "rglru_block",
        [&](const std::vector<Tensor>& p) {
          auto [y, state] = block(p[0], {p[1], p[2]});
          return cat({reshape(y, {-1}), reshape(state.h, {-1}), reshape(state.conv, {-1})}, 0);
        },
        in);
    CHECK_MESSAGE(r.ok, r.message);

    for (bool log_space : {false, true}) {
      nn::MinRNNBlock mb(3, log_space ? nn::MinRNNKind::lstm : nn::MinRNNKind::gru, log_space, 2, Dtype::float64);
      in = {randn({4, 2, 3}, Dtype::float64).requires_grad_(), (rand({2, 3}, Dtype::float64) + 0.5).requires_grad_()};
      for (const Tensor& p : mb.parameters()) in.push_back(p);
      r = autograd::gradcheck(
          "min_block",
          [&](const std::vector<Tensor>& p) {
            auto [y, h] = mb(p[0], p[1]);
            return cat({reshape(y, {-1}), reshape(h, {-1})}, 0);
          },
          in);
      CHECK_MESSAGE(r.ok, r.message);
    }
  }

  TEST_CASE("RGLRUBlock and Conv1D: a stream run in windows with the carried state equals one run") {
    manual_seed(53);
    nn::RGLRUBlock block(3, 5, 1, 4, Dtype::float64);
    const Tensor x = randn({9, 2, 3}, Dtype::float64);
    const auto [whole, end_state] = block(x);
    nn::RGLRUBlock::State state;
    std::vector<Tensor> parts;
    for (auto [begin, size] : {std::pair<std::int64_t, std::int64_t>{0, 2}, {2, 1}, {3, 6}}) {
      auto [y, next] = block(narrow(x, 0, begin, size), state);
      parts.push_back(y);
      state = next;
    }
    CHECK(test_support::tolerance_ratio(cat(parts, 0), whole, 1e-13, 1e-13) <= 1.0);
    CHECK(test_support::tolerance_ratio(state.h, end_state.h, 1e-13, 1e-13) <= 1.0);
    CHECK(test_support::tolerance_ratio(state.conv, end_state.conv, 1e-13, 1e-13) <= 1.0);
  }

  TEST_CASE("sqrt_bound_derivative: sqrt's value, its gradient clipped at max_gradient") {
    const Tensor x = tensor({0.0, 1e-12, 0.25, 4.0}, {4}, Dtype::float64).requires_grad_();
    const Tensor y = nn::sqrt_bound_derivative(x);
    CHECK(y.to_vector() == std::vector<double>{0.0, 1e-6, 0.5, 2.0});
    sum(y).backward();
    const auto g = x.grad().to_vector();
    CHECK(g[0] == doctest::Approx(1000.0));  // 1/sqrt(1e-6), not infinity
    CHECK(g[1] == doctest::Approx(1000.0));
    CHECK(g[2] == doctest::Approx(1.0));
    CHECK(g[3] == doctest::Approx(0.25));
  }

  TEST_CASE("RGLRU: a_param starts on the ring 0.9 <= exp(-softplus(a_param)) <= 0.999; error texts") {
    manual_seed(54);
    nn::RGLRU rglru(64, 4);
    for (double a : exp(neg(softplus(rglru.a_param))).to_vector()) {
      CHECK(a >= 0.9 - 1e-6);
      CHECK(a <= 0.999 + 1e-6);
    }
    CHECK(rglru.input_gate.w.shape() == Shape({4, 16, 16}));
    CHECK_THROWS_WITH_AS(rglru(zeros({5, 2, 8})), "RGLRU: input must be [T, B, 64]; got x=[5, 2, 8]", ShapeError);
    ScanOptions o;
    o.resets = zeros({4, 2});
    CHECK_THROWS_WITH_AS(rglru(zeros({5, 2, 64}), {}, o), "RGLRU: resets must be [T, B] = [5, 2]; got resets=[4, 2]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(nn::RGLRU(6, 4),
                         "BlockDiagonalLinear: width must be a positive multiple of num_blocks; got "
                         "width=6 num_blocks=4",
                         ValueError);
    nn::RGLRUBlock block(4, 6, 1, 3);
    CHECK_THROWS_WITH_AS(block(zeros({5, 2, 4}), {{}, zeros({3, 2, 6})}),
                         "Conv1D: tail must be [K-1, B, W] = [2, 2, 6]; got tail=[3, 2, 6]", ShapeError);
    CHECK_THROWS_WITH_AS(block(zeros({5, 2, 6})), "RGLRUBlock: input must be [T, B, 4]; got x=[5, 2, 6]", ShapeError);
    nn::MinRNNBlock mb(4);
    CHECK_THROWS_WITH_AS(mb(zeros({5, 2, 3})), "MinRNNBlock: input must be [T, B, 4]; got x=[5, 2, 3]", ShapeError);
  }
}
