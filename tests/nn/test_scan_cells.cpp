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
  const std::int64_t I = cfg.at("input_size"), H = cfg.at("hidden_size");
  const bool log_space = cfg.at("log_space");
  if (c.at("module") == "MinGRU") return std::make_unique<nn::MinGRU>(I, H, log_space, true, dt);
  return std::make_unique<nn::MinLSTM>(I, H, log_space, true, dt);
}
Tensor run(const nn::Module& m, const Tensor& x, const Tensor& h0, const ScanOptions& o) {
  if (const auto* gru = dynamic_cast<const nn::MinGRU*>(&m)) return (*gru)(x, h0, o);
  return dynamic_cast<const nn::MinLSTM&>(m)(x, h0, o);
}

void check_case(const json& c, Dtype dt, double tol) {
  CAPTURE(c.at("name").get<std::string>());
  auto cell = make_cell(c, dt);
  StateDict sd;
  for (const auto& [name, t] : c.at("state_dict").items()) sd.insert(name, test_support::to_tensor(t, dt));
  cell->load_state_dict(sd);
  const json& in = c.at("inputs");
  Tensor x = test_support::to_tensor(in.at("x"), dt).requires_grad_();
  Tensor h0 = in.contains("h0") ? test_support::to_tensor(in.at("h0"), dt).requires_grad_() : Tensor();
  ScanOptions o;
  if (in.contains("lengths")) o.lengths = in.at("lengths").get<std::vector<std::int64_t>>();
  const Tensor out = run(*cell, x, h0, o);
  CHECK(test_support::tolerance_ratio(out, test_support::to_tensor(c.at("output")), tol, tol) <= 1.0);
  sum(out * test_support::to_tensor(c.at("grad_output"), dt)).backward();
  const json& g = c.at("grads");
  CHECK(test_support::tolerance_ratio(x.grad(), test_support::to_tensor(g.at("x")), tol, tol) <= 1.0);
  if (h0.defined())
    CHECK(test_support::tolerance_ratio(h0.grad(), test_support::to_tensor(g.at("h0")), tol, tol) <= 1.0);
  for (const auto& [name, p] : cell->named_parameters()) {
    CAPTURE(name);
    CHECK(test_support::tolerance_ratio(p.grad(), test_support::to_tensor(g.at(name)), tol, tol) <= 1.0);
  }
}
}  // namespace

TEST_SUITE("nn/scan_cells") {
  TEST_CASE("MinGRU and MinLSTM match the paper's sequential recurrence in PyTorch (values and every gradient)") {
    const json fixtures = test_support::load_fixture("scan_cells.json");
    const json& cases = fixtures.at("cases");
    REQUIRE(cases.size() >= 8);
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
            log_space ? "log" : "plain", [&](const std::vector<Tensor>& p) { return run(*m, p[0], p[1], {}); }, in);
        CHECK_MESSAGE(r.ok, r.message);
      }
    }
    nn::MinGRU gru(2, 3);
    CHECK_THROWS_WITH_AS(gru(zeros({5, 2, 4})), "MinGRU: input must be [T, B, 2]; got x=[5, 2, 4]", ShapeError);
    nn::MinLSTM lstm(2, 3);
    CHECK_THROWS_WITH_AS(lstm(zeros({5, 2})), "MinLSTM: input must be [T, B, 2]; got x=[5, 2]", ShapeError);
    CHECK_THROWS_AS(lstm(zeros({5, 2, 2}), zeros({3})), ShapeError);  // the scan names a wrong h0
  }
}
