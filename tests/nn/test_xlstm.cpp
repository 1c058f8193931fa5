// SLSTM and MLSTM (nn/xlstm.hpp) against the paper's stabilised equations run as a plain sequential loop in
// PyTorch (tests/fixtures/xlstm.json, tools/make_xlstm_fixtures.py): outputs, final states and the gradients of
// the input, the initial state and every parameter, in float64 to round-off and float32 within 1e-4; the mLSTM
// in both forms. Also: recurrent == parallel mLSTM (values and all gradients, with and without a state),
// truncated BPTT across windows, run_cell on the cells themselves, float64 gradchecks, error texts, and a long
// sequence with large gate pre-activations staying finite.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <unroll/nn/xlstm.hpp>
#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;
using test_support::to_tensor;
using test_support::tolerance_ratio;

namespace {
// A state's tensors by name ("h", "c", ... / "C", "n", "m"), for both state structs.
std::vector<std::pair<std::string, Tensor*>> named(nn::SLSTMState& s) {
  return {{"h", &s.h}, {"c", &s.c}, {"n", &s.n}, {"m", &s.m}};
}
std::vector<std::pair<std::string, Tensor*>> named(nn::MLSTMState& s) {
  return {{"C", &s.C}, {"n", &s.n}, {"m", &s.m}};
}

// sum(out * g) + Σ_k sum(final.k * gs.k): the loss the fixture's gradients are of.
template <class State>
Tensor fixture_loss(const nn::SequenceOutput<State>& r, const json& c, Dtype dt) {
  Tensor loss = sum(r.output * to_tensor(c.at("grad_output"), dt));
  State fin = r.state;
  for (auto& [k, t] : named(fin)) loss = loss + sum(*t * to_tensor(c.at("grad_state").at(k), dt));
  return loss;
}

template <class Cell, class State, class Run>
void check_case(const json& c, Dtype dt, double tol, Run&& run) {
  const auto& cfg = c.at("config");
  const std::int64_t I = cfg.at("input_size"), H = cfg.at("hidden_size"), heads = cfg.at("heads");
  auto cell = [&] {
    if constexpr (std::is_same_v<Cell, nn::MLSTM>)
      return std::make_unique<Cell>(I, H, heads, nn::MLSTMForm::parallel, dt);
    else
      return std::make_unique<Cell>(I, H, heads, dt);
  }();
  StateDict sd;
  for (const auto& [name, t] : c.at("state_dict").items()) sd.insert(name, to_tensor(t, dt));
  cell->load_state_dict(sd);
  const json& in = c.at("inputs");
  Tensor x = to_tensor(in.at("x"), dt).requires_grad_();
  State s0;
  if (in.contains("state"))
    for (auto& [k, t] : named(s0)) *t = to_tensor(in.at("state").at(k), dt).requires_grad_();
  const auto r = run(*cell, x, s0);
  CHECK(tolerance_ratio(r.output, to_tensor(c.at("output")), tol, tol) <= 1.0);
  State fin = r.state;
  for (auto& [k, t] : named(fin)) {
    CAPTURE(k);
    CHECK(tolerance_ratio(*t, to_tensor(c.at("state").at(k)), tol, tol) <= 1.0);
  }
  fixture_loss(r, c, dt).backward();
  const json& g = c.at("grads");
  CHECK(tolerance_ratio(x.grad(), to_tensor(g.at("x")), tol, tol) <= 1.0);
  for (auto& [k, t] : named(s0)) {
    CAPTURE(k);
    if (t->defined()) CHECK(tolerance_ratio(t->grad(), to_tensor(g.at("state." + k)), tol, tol) <= 1.0);
  }
  for (const auto& [name, p] : cell->named_parameters()) {
    CAPTURE(name);
    CHECK(tolerance_ratio(p.grad(), to_tensor(g.at(name)), tol, tol) <= 1.0);
  }
}

// A random float64 state for an MLSTM (h left undefined: not read).
nn::MLSTMState random_mlstm_state(std::int64_t B, std::int64_t heads, std::int64_t D, Generator& gen) {
  return {Tensor(), test_support::random_leaf({B, heads, D, D}, gen), test_support::random_leaf({B, heads, D}, gen),
          test_support::random_leaf({B, heads}, gen)};
}

// Everything a run produced, flattened into one vector (for gradcheck: output and final state).
template <class State>
Tensor flat(const nn::SequenceOutput<State>& r) {
  State fin = r.state;
  std::vector<Tensor> parts = {reshape(r.output, {-1})};
  for (auto& [k, t] : named(fin)) parts.push_back(reshape(*t, {-1}));
  return cat(parts, 0);
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}
}  // namespace

TEST_SUITE("nn/xlstm") {
  TEST_CASE("SLSTM and MLSTM (both forms) match the paper's sequential loop in PyTorch: values, states, gradients") {
    const json fixtures = test_support::load_fixture("xlstm.json");
    const json& cases = fixtures.at("cases");
    REQUIRE(cases.size() >= 8);
    int slstm = 0, mlstm = 0;
    for (const json& c : cases) {
      CAPTURE(c.at("name").get<std::string>());
      for (const auto& [dt, tol] : {std::pair{Dtype::float64, 1e-10}, std::pair{Dtype::float32, 1e-4}}) {
        if (c.at("module") == "SLSTM") {
          ++slstm;
          check_case<nn::SLSTM, nn::SLSTMState>(
              c, dt, tol, [](const nn::SLSTM& m, const Tensor& x, const nn::SLSTMState& s) { return m(x, s); });
          continue;
        }
        ++mlstm;
        for (nn::MLSTMForm form : {nn::MLSTMForm::recurrent, nn::MLSTMForm::parallel}) {
          CAPTURE(form == nn::MLSTMForm::parallel);
          check_case<nn::MLSTM, nn::MLSTMState>(
              c, dt, tol,
              [form](const nn::MLSTM& m, const Tensor& x, const nn::MLSTMState& s) { return m.forward(x, s, form); });
        }
      }
    }
    CHECK(slstm >= 6);
    CHECK(mlstm >= 6);
  }

  TEST_CASE("MLSTM: the recurrent and parallel forms are equal in float64 (values and every gradient)") {
    Generator gen(7);
    manual_seed(7);
    const std::int64_t I = 3, H = 8, heads = 2, D = 4, T = 9, B = 3;
    nn::MLSTM cell(I, H, heads, nn::MLSTMForm::recurrent, Dtype::float64);
    for (bool with_state : {false, true}) {
      CAPTURE(with_state);
      const Tensor x0 = randn({T, B, I}, Dtype::float64, gen, 0.0, 2.0);
      const nn::MLSTMState s_init = random_mlstm_state(B, heads, D, gen);
      const Tensor gout = randn({T, B, H}, Dtype::float64, gen);
      const Tensor gC = randn({B, heads, D, D}, Dtype::float64, gen), gn = randn({B, heads, D}, Dtype::float64, gen),
                   gm = randn({B, heads}, Dtype::float64, gen);
      std::vector<std::vector<double>> results[2];
      for (int f = 0; f < 2; ++f) {
        const nn::MLSTMForm form = f == 0 ? nn::MLSTMForm::recurrent : nn::MLSTMForm::parallel;
        cell.zero_grad();
        Tensor x = copy_of(x0).requires_grad_();
        nn::MLSTMState s;
        if (with_state)
          s = {Tensor(), copy_of(s_init.C).requires_grad_(), copy_of(s_init.n).requires_grad_(),
               copy_of(s_init.m).requires_grad_()};
        const auto r = cell.forward(x, s, form);
        (sum(r.output * gout) + sum(r.state.C * gC) + sum(r.state.n * gn) + sum(r.state.m * gm)).backward();
        auto& v = results[f];
        for (const Tensor& t : {r.output, r.state.h, r.state.C, r.state.n, r.state.m, x.grad()})
          v.push_back(t.to_vector());
        if (with_state)
          for (const Tensor& t : {s.C.grad(), s.n.grad(), s.m.grad()}) v.push_back(t.to_vector());
        for (const Tensor& p : cell.parameters()) v.push_back(p.grad().to_vector());
      }
      REQUIRE(results[0].size() == results[1].size());
      for (std::size_t i = 0; i < results[0].size(); ++i) {
        CAPTURE(i);
        REQUIRE(results[0][i].size() == results[1][i].size());
        double worst = 0;
        for (std::size_t j = 0; j < results[0][i].size(); ++j)
          worst = std::max(
              worst, std::abs(results[0][i][j] - results[1][i][j]) / (1e-12 + 1e-10 * std::abs(results[0][i][j])));
        CHECK(worst <= 1.0);
      }
    }
  }

  TEST_CASE("SLSTM and MLSTM: truncated BPTT windows carrying the state equal one pass; run_cell on the cell") {
    Generator gen(11);
    manual_seed(11);
    const std::int64_t I = 2, H = 6, T = 8, B = 2;
    const Tensor x = randn({T, B, I}, Dtype::float64, gen);
    const auto close = [](const Tensor& a, const Tensor& b) { return tolerance_ratio(a, b, 1e-12, 1e-10) <= 1.0; };

    nn::SLSTM s(I, H, 3, Dtype::float64);
    const auto full_s = s(x);
    const auto first_s = s(narrow(x, 0, 0, 3));
    const auto second_s = s(narrow(x, 0, 3, T - 3), nn::detach_state(first_s.state));
    CHECK(close(cat({first_s.output, second_s.output}, 0), full_s.output));
    CHECK(close(second_s.state.c, full_s.state.c));
    CHECK(close(second_s.state.m, full_s.state.m));
    // The cell object itself as a run_cell step: an undefined start becomes its initial_state.
    const auto via_run_cell = nn::run_cell(x, nn::SLSTMState{}, s.as_step());
    CHECK(close(via_run_cell.output, full_s.output));
    CHECK(close(via_run_cell.state.n, full_s.state.n));

    for (nn::MLSTMForm form : {nn::MLSTMForm::recurrent, nn::MLSTMForm::parallel}) {
      CAPTURE(form == nn::MLSTMForm::parallel);
      nn::MLSTM m(I, H, 2, form, Dtype::float64);
      const auto full = m(x);
      const auto first = m(narrow(x, 0, 0, 5));
      const auto second = m(narrow(x, 0, 5, T - 5), nn::detach_state(first.state));
      CHECK(close(cat({first.output, second.output}, 0), full.output));
      CHECK(close(second.state.C, full.state.C));
      CHECK(close(second.state.n, full.state.n));
      CHECK(close(second.state.m, full.state.m));
      CHECK(close(full.state.h, full.output[T - 1]));
      const auto via_run_cell = nn::run_cell(x, m.initial_state(B, Dtype::float64), m.as_step());
      CHECK(close(via_run_cell.output, full.output));
      CHECK(close(via_run_cell.state.C, full.state.C));
    }
  }

  TEST_CASE("SLSTM and MLSTM: float64 gradcheck of the output and final state, with an initial state") {
    Generator gen(3);
    manual_seed(3);
    const std::int64_t I = 2, H = 4, T = 4, B = 2;
    {
      nn::SLSTM cell(I, H, 2, Dtype::float64);
      std::vector<Tensor> in = {test_support::random_leaf({T, B, I}, gen, 1.0), test_support::random_leaf({B, H}, gen),
                                test_support::random_leaf({B, H}, gen),
                                (rand({B, H}, Dtype::float64, gen) + 0.5).requires_grad_(),
                                test_support::random_leaf({B, H}, gen)};
      for (const Tensor& p : cell.parameters()) in.push_back(p);
      auto r = autograd::gradcheck(
          "SLSTM",
          [&](const std::vector<Tensor>& p) {
            return flat(cell(p[0], {p[1], p[2], p[3], p[4]}));
          },
          in);
      CHECK_MESSAGE(r.ok, r.message);
    }
    for (nn::MLSTMForm form : {nn::MLSTMForm::recurrent, nn::MLSTMForm::parallel}) {
      nn::MLSTM cell(I, H, 2, form, Dtype::float64);
      const nn::MLSTMState s = random_mlstm_state(B, 2, 2, gen);
      std::vector<Tensor> in = {test_support::random_leaf({T, B, I}, gen, 1.0), s.C, s.n, s.m};
      for (const Tensor& p : cell.parameters()) in.push_back(p);
      auto r = autograd::gradcheck(
          form == nn::MLSTMForm::parallel ? "MLSTM parallel" : "MLSTM recurrent",
          [&](const std::vector<Tensor>& p) {
            return flat(cell(p[0], {Tensor(), p[1], p[2], p[3]}));
          },
          in);
      CHECK_MESSAGE(r.ok, r.message);
    }
  }

  TEST_CASE("SLSTM and MLSTM: a long sequence with large gate pre-activations stays finite (the stabiliser)") {
    Generator gen(5);
    manual_seed(5);
    const std::int64_t I = 3, H = 4, T = 200, B = 2;
    // |pre-activations| in the tens: e^ĩ alone would overflow float32 within a few steps, and Σ log f reaches -10^3.
    const Tensor x = randn({T, B, I}, Dtype::float32, gen, 0.0, 30.0).requires_grad_();
    nn::SLSTM s(I, H, 2);
    auto rs = s(x);
    CHECK(all_finite(rs.output));
    sum(rs.output).backward();
    CHECK(all_finite(x.grad()));
    for (nn::MLSTMForm form : {nn::MLSTMForm::recurrent, nn::MLSTMForm::parallel}) {
      CAPTURE(form == nn::MLSTMForm::parallel);
      nn::MLSTM m(I, H, 2, form);
      Tensor xm = copy_of(x.detach()).requires_grad_();
      auto rm = m(xm);
      CHECK(all_finite(rm.output));
      CHECK(all_finite(rm.state.C));
      sum(rm.output).backward();
      CHECK(all_finite(xm.grad()));
      for (const Tensor& p : m.parameters()) CHECK(all_finite(p.grad()));
    }
  }

  TEST_CASE("SLSTM and MLSTM: error texts") {
    CHECK_THROWS_WITH_AS(nn::SLSTM(3, 10, 3),
                         "SLSTM: hidden_size must be divisible by heads; got hidden_size=10 and heads=3", ValueError);
    CHECK_THROWS_WITH_AS(nn::MLSTM(3, 10, 4),
                         "MLSTM: hidden_size must be divisible by heads; got hidden_size=10 and heads=4", ValueError);
    CHECK_THROWS_WITH_AS(nn::MLSTM(3, 0, 1), "MLSTM: sizes must be positive; got input_size=3 hidden_size=0 heads=1",
                         ValueError);
    nn::SLSTM s(3, 4, 2);
    CHECK_THROWS_WITH_AS(s(zeros({5, 2, 4})), "SLSTM: input must be [T, B, 3] with T >= 1; got x=[5, 2, 4]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(s(zeros({5, 2})), "SLSTM: input must be [T, B, 3] with T >= 1; got x=[5, 2]", ShapeError);
    CHECK_THROWS_WITH_AS(s(zeros({5, 2, 3}), {zeros({2, 4}), zeros({3, 4}), zeros({2, 4}), zeros({2, 4})}),
                         "SLSTM: state.c must be [2, 4]; got [3, 4]", ShapeError);
    CHECK_THROWS_WITH_AS(s(zeros({5, 2, 3}), {zeros({2, 4}), zeros({2, 4}), Tensor(), zeros({2, 4})}),
                         "SLSTM: state.n must be [2, 4]; got undefined", ShapeError);
    CHECK_THROWS_WITH_AS(s(zeros({5, 2, 3}), s.initial_state(2, Dtype::float64)),
                         "SLSTM: state.h must have the input's dtype; got float64, expected float32", DtypeError);
    CHECK_THROWS_WITH_AS(s.step(zeros({2, 2}), s.initial_state(2, Dtype::float32)),
                         "SLSTM: step input must be [B, 3]; got x_t=[2, 2]", ShapeError);

    nn::MLSTM m(3, 4, 2);
    CHECK_THROWS_WITH_AS(m(zeros({5, 2, 1})), "MLSTM: input must be [T, B, 3] with T >= 1; got x=[5, 2, 1]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(m(zeros({5, 2, 3}), {Tensor(), zeros({2, 2, 2}), zeros({2, 2, 2}), zeros({2, 2})}),
                         "MLSTM: state.C must be [2, 2, 2, 2]; got [2, 2, 2]", ShapeError);
    CHECK_THROWS_WITH_AS(m(zeros({5, 2, 3}), {Tensor(), zeros({2, 2, 2, 2}), zeros({2, 2, 2}), zeros({2, 1})}),
                         "MLSTM: state.m must be [2, 2]; got [2, 1]", ShapeError);
    CHECK_THROWS_WITH_AS(m(zeros({5, 2, 3}), {zeros({2, 3}), zeros({2, 2, 2, 2}), zeros({2, 2, 2}), zeros({2, 2})}),
                         "MLSTM: state.h must be [2, 4]; got [2, 3]", ShapeError);
    CHECK_THROWS_WITH_AS(m.step(zeros({2, 3}), {Tensor(), zeros({2, 2, 2, 2}), zeros({2, 2, 2}), zeros({2, 2})}),
                         "MLSTM: state.h must be [2, 4]; got undefined", ShapeError);
    // Inside run_cell, the step's message with the step named.
    CHECK_THROWS_WITH_AS(nn::run_cell(zeros({4, 2, 3}), s.initial_state(3, Dtype::float32), s.as_step()),
                         "run_cell: step t=0 of 4: SLSTM: state.h must be [2, 4]; got [3, 4]", ShapeError);
  }
}
