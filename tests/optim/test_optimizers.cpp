// Optimizers against PyTorch: each case in tests/fixtures/optim.json (tools/make_optim_fixtures.py) runs six
// steps on the same loss, comparing the parameters and every state tensor after each step, in float64 (to
// round-off) and float32. Plus: state_dict round trips that resume bit-for-bit, every invalid hyper-parameter's
// error text, load_state_dict's checks, skipped parameters, and that updates are not recorded.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>

#include <unroll/optim/optim.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;
using test_support::to_tensor;
using test_support::tolerance_ratio;

namespace {
constexpr Dtype f32 = Dtype::float32;
constexpr Dtype f64 = Dtype::float64;

const json& fixture() {
  static const json j = test_support::load_fixture("optim.json");
  return j;
}

double opt_or(const json& o, const char* key, double fallback) {
  return o.contains(key) ? o.at(key).get<double>() : fallback;
}
bool flag_or(const json& o, const char* key, bool fallback) {
  return o.contains(key) ? o.at(key).get<bool>() : fallback;
}

// The optimizer of a fixture case; PyTorch's defaults fill in the options the case does not give.
std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& kind, const json& o, std::vector<Tensor> params) {
  if (kind == "SGD") {
    return std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = o.at("lr").get<double>(),
                                                                  .momentum = opt_or(o, "momentum", 0),
                                                                  .dampening = opt_or(o, "dampening", 0),
                                                                  .weight_decay = opt_or(o, "weight_decay", 0),
                                                                  .nesterov = flag_or(o, "nesterov", false)});
  }
  if (kind == "Adam" || kind == "AdamW") {
    const optim::AdamWOptions d;
    const std::array<double, 2> betas =
        o.contains("betas") ? std::array<double, 2>{o.at("betas")[0].get<double>(), o.at("betas")[1].get<double>()}
                            : d.betas;
    if (kind == "Adam") {
      return std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = opt_or(o, "lr", 1e-3),
                                                                      .betas = betas,
                                                                      .eps = opt_or(o, "eps", 1e-8),
                                                                      .weight_decay = opt_or(o, "weight_decay", 0),
                                                                      .amsgrad = flag_or(o, "amsgrad", false)});
    }
    return std::make_unique<optim::AdamW>(params, optim::AdamWOptions{.lr = opt_or(o, "lr", 1e-3),
                                                                      .betas = betas,
                                                                      .eps = opt_or(o, "eps", 1e-8),
                                                                      .weight_decay = opt_or(o, "weight_decay", 1e-2),
                                                                      .amsgrad = flag_or(o, "amsgrad", false)});
  }
  if (kind == "RMSprop") {
    return std::make_unique<optim::RMSprop>(params, optim::RMSpropOptions{.lr = opt_or(o, "lr", 1e-2),
                                                                          .alpha = opt_or(o, "alpha", 0.99),
                                                                          .eps = opt_or(o, "eps", 1e-8),
                                                                          .weight_decay = opt_or(o, "weight_decay", 0),
                                                                          .momentum = opt_or(o, "momentum", 0),
                                                                          .centered = flag_or(o, "centered", false)});
  }
  REQUIRE(kind == "Adagrad");
  return std::make_unique<optim::Adagrad>(
      params, optim::AdagradOptions{.lr = opt_or(o, "lr", 1e-2),
                                    .lr_decay = opt_or(o, "lr_decay", 0),
                                    .weight_decay = opt_or(o, "weight_decay", 0),
                                    .initial_accumulator_value = opt_or(o, "initial_accumulator_value", 0),
                                    .eps = opt_or(o, "eps", 1e-10)});
}

// The fixture's problem in one dtype: fresh leaf parameters and the loss constants.
struct Problem {
  std::vector<Tensor> params, c, d;
  explicit Problem(Dtype dtype) {
    const json& p = fixture().at("problem");
    for (std::size_t i = 0; i < p.at("init").size(); ++i) {
      params.push_back(to_tensor(p.at("init")[i], dtype).requires_grad_());
      c.push_back(to_tensor(p.at("c")[i], dtype));
      d.push_back(to_tensor(p.at("d")[i], dtype));
    }
  }
  // sum_i sum(tanh(p_i) c_i) + sum(p_i^2 d_i), then backward; params listed in `skip` lose their gradient.
  void gradients(const json& skip) {
    Tensor loss;
    for (std::size_t i = 0; i < params.size(); ++i) {
      Tensor li = sum(unroll::tanh(params[i]) * c[i]) + sum(unroll::pow(params[i], 2.0) * d[i]);
      loss = loss.defined() ? loss + li : li;
    }
    loss.backward();
    for (const auto& i : skip) params[i.get<std::size_t>()].zero_grad();
  }
};

// Deep copies of the entries of a state dict (to check later that a saved dict never changes).
StateDict snapshot(const StateDict& sd) {
  StateDict out;
  for (const auto& [name, t] : sd) out.insert(name, copy_of(t));
  return out;
}

void check_equal_dicts(const StateDict& a, const StateDict& b) {
  REQUIRE(a.size() == b.size());
  auto ib = b.begin();
  for (const auto& [name, t] : a) {
    CAPTURE(name);
    REQUIRE(name == ib->first);
    REQUIRE(t.shape() == ib->second.shape());
    REQUIRE(t.dtype() == ib->second.dtype());
    if (t.dtype() == Dtype::int64)
      CHECK(t.to_vector<std::int64_t>() == ib->second.to_vector<std::int64_t>());
    else
      CHECK(t.to_vector() == ib->second.to_vector());  // exact
    ++ib;
  }
}

// Runs every fixture case in `dtype` and returns the worst tolerance ratio (<= 1 passes).
void check_trajectories(Dtype dtype, double atol, double rtol) {
  for (const json& cs : fixture().at("optimizers")) {
    const std::string name = cs.at("name");
    CAPTURE(name);
    Problem prob(dtype);
    auto opt = make_optimizer(cs.at("optimizer"), cs.at("options"), prob.params);
    for (std::size_t k = 0; k < cs.at("steps").size(); ++k) {
      CAPTURE(k);
      const json& expect = cs.at("steps")[k];
      opt->zero_grad();
      prob.gradients(cs.at("skip")[k]);
      opt->step();
      for (std::size_t i = 0; i < prob.params.size(); ++i) {
        CAPTURE(i);
        CHECK(tolerance_ratio(prob.params[i], to_tensor(expect.at("params")[i]), atol, rtol) <= 1);
      }
      const StateDict sd = opt->state_dict();
      std::set<std::string> ours, theirs;
      for (const auto& [entry, t] : sd)
        if (entry.rfind("state.", 0) == 0) ours.insert(entry);
      for (const auto& [entry, value] : expect.at("state").items()) {
        theirs.insert(entry);
        CAPTURE(entry);
        const Tensor* t = sd.find(entry);
        REQUIRE(t != nullptr);
        if (value.is_number_integer()) {
          CHECK(t->dtype() == Dtype::int64);
          CHECK(t->to_vector<std::int64_t>() == std::vector<std::int64_t>{value.get<std::int64_t>()});
        } else {
          CHECK(t->dtype() == dtype);
          CHECK(tolerance_ratio(*t, to_tensor(value), atol, rtol) <= 1);
        }
      }
      CHECK(ours == theirs);
    }
  }
}
}  // namespace

TEST_SUITE("optim/optimizers") {
  TEST_CASE("trajectories and state match PyTorch in float64") { check_trajectories(f64, 1e-14, 1e-12); }

  TEST_CASE("trajectories and state match PyTorch in float32") { check_trajectories(f32, 1e-5, 1e-5); }

  TEST_CASE("state_dict round trip resumes bit-for-bit") {
    for (const Dtype dtype : {f64, f32}) {
      for (const json& cs : fixture().at("optimizers")) {
        const std::string name = cs.at("name");
        CAPTURE(name);
        CAPTURE(dtype);
        Problem a(dtype);
        auto opt_a = make_optimizer(cs.at("optimizer"), cs.at("options"), a.params);
        for (int k = 0; k < 3; ++k) {
          opt_a->zero_grad();
          a.gradients(cs.at("skip")[k]);
          opt_a->step();
        }
        const StateDict saved = opt_a->state_dict();
        const StateDict saved_copy = snapshot(saved);

        // A fresh optimizer of the same type with other hyper-parameters: loading must restore them too.
        Problem b(dtype);
        for (std::size_t i = 0; i < b.params.size(); ++i) {
          b.params[i] = copy_of(a.params[i]).requires_grad_();
        }
        auto opt_b = make_optimizer(cs.at("optimizer"), json{{"lr", 0.5}}, b.params);
        opt_b->load_state_dict(saved);
        check_equal_dicts(opt_b->state_dict(), saved_copy);

        for (int k = 3; k < 6; ++k) {
          opt_a->zero_grad();
          a.gradients(cs.at("skip")[k]);
          opt_a->step();
          opt_b->zero_grad();
          b.gradients(cs.at("skip")[k]);
          opt_b->step();
        }
        for (std::size_t i = 0; i < a.params.size(); ++i) CHECK(a.params[i].to_vector() == b.params[i].to_vector());
        check_equal_dicts(opt_a->state_dict(), opt_b->state_dict());
        // Both optimizers kept stepping; what was saved must not have changed under them.
        check_equal_dicts(saved, saved_copy);
      }
    }
  }

  TEST_CASE("state_dict names, dtypes and hyper-parameters") {
    Tensor w = zeros({2, 3}, f32).requires_grad_(), b = zeros({3}, f32).requires_grad_();
    optim::Adam opt({w, b}, {.lr = 0.01, .betas = {0.8, 0.9}, .amsgrad = true});
    std::vector<std::string> names;
    for (const auto& [name, t] : opt.state_dict()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"param_groups.0.lr", "param_groups.0.betas.0", "param_groups.0.betas.1",
                                            "param_groups.0.eps", "param_groups.0.weight_decay",
                                            "param_groups.0.amsgrad", "param_groups.0.decoupled_weight_decay",
                                            "param_groups.0.params"});
    sum(w * 2.0).backward();  // only w has a gradient
    opt.step();
    const StateDict sd = opt.state_dict();
    CHECK(sd.at("state.0.step").dtype() == Dtype::int64);
    CHECK(sd.at("state.0.step").item() == 1);
    CHECK(sd.at("state.0.exp_avg").dtype() == f32);
    CHECK(sd.at("state.0.max_exp_avg_sq").shape() == Shape{2, 3});
    CHECK_FALSE(sd.contains("state.1.step"));
    CHECK(sd.at("param_groups.0.lr").dtype() == f64);
    CHECK(sd.at("param_groups.0.betas.0").item() == 0.8);
    CHECK(sd.at("param_groups.0.amsgrad").dtype() == Dtype::int64);
    CHECK(sd.at("param_groups.0.amsgrad").item() == 1);
    CHECK(sd.at("param_groups.0.params").to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1});
    CHECK(opt.options().betas[0] == 0.8);
  }

  TEST_CASE("parameters without a gradient are skipped and keep their state") {
    Tensor w = ones({3}, f64).requires_grad_(), b = ones({2}, f64).requires_grad_();
    const Tensor model_w = w;  // the model's handle: shares storage and gradient record
    optim::SGD opt({w, b}, {.lr = 0.5, .momentum = 0.9});
    sum(w * 2.0).backward();
    opt.step();
    CHECK(model_w.to_vector() == std::vector<double>{0, 0, 0});  // 1 - 0.5 * 2
    CHECK(b.to_vector() == std::vector<double>{1, 1});
    CHECK(opt.state_dict().contains("state.0.momentum_buffer"));
    CHECK_FALSE(opt.state_dict().contains("state.1.momentum_buffer"));
    opt.zero_grad();
    CHECK_FALSE(w.grad().defined());
    opt.step();  // no gradients at all: nothing moves
    CHECK(model_w.to_vector() == std::vector<double>{0, 0, 0});

    // Adagrad has state from the start; a skipped parameter's step count stays 0.
    Tensor p = ones({2}, f64).requires_grad_(), q = ones({2}, f64).requires_grad_();
    optim::Adagrad ada({p, q}, {.initial_accumulator_value = 0.25});
    CHECK(ada.state_dict().at("state.1.sum").to_vector() == std::vector<double>{0.25, 0.25});
    sum(p * 3.0).backward();
    ada.step();
    CHECK(ada.state_dict().at("state.0.step").item() == 1);
    CHECK(ada.state_dict().at("state.1.step").item() == 0);
    CHECK(q.to_vector() == std::vector<double>{1, 1});
  }

  TEST_CASE("updates are written in place and not recorded") {
    Tensor w = tensor({1, 2}, {2}, f32).requires_grad_();
    const void* storage = w.raw();
    optim::Adam opt({w}, {.lr = 0.1});
    sum(w * w).backward();
    const std::size_t before = autograd::Tape::current().size();
    opt.step();
    CHECK(autograd::Tape::current().size() == before);
    CHECK(w.raw() == storage);
    CHECK(w.is_leaf());
    CHECK(w.to_vector()[0] == doctest::Approx(0.9).epsilon(1e-6));  // Adam's first step moves by lr
  }

  TEST_CASE("invalid parameter lists") {
    CHECK_THROWS_WITH_AS(optim::Adam({}), "Adam: empty parameter list; got 0 parameters, expected at least one",
                         ValueError);
    CHECK_THROWS_WITH_AS(
        optim::Adam({ones({2}).requires_grad_(), Tensor()}),
        "Adam: parameter 1 is undefined; got an undefined tensor, expected a leaf tensor that requires "
        "grad",
        ValueError);
    CHECK_THROWS_WITH_AS(optim::SGD({arange(3, Dtype::int64)}, {.lr = 0.1}),
                         "SGD: parameter 0 is not floating-point; got int64, expected float32 or float64", ValueError);
    CHECK_THROWS_WITH_AS(
        optim::RMSprop({ones({2, 3})}),
        "RMSprop: parameter 0 does not require grad; got a tensor of shape [2, 3] without requires_grad, "
        "expected a leaf that requires grad (call requires_grad_() before collecting parameters)",
        ValueError);
    Tensor leaf = ones({2}).requires_grad_();
    CHECK_THROWS_WITH_AS(optim::Adagrad({leaf * 2.0}),
                         "Adagrad: parameter 0 is not a leaf; got the output of an op, expected a leaf tensor that "
                         "requires grad",
                         ValueError);
    CHECK_THROWS_WITH_AS(
        optim::AdamW({leaf, ones({1}).requires_grad_(), leaf}),
        "AdamW: parameter 2 is repeated; got the same tensor as parameter 0, expected distinct parameters", ValueError);
  }

  TEST_CASE("invalid hyper-parameters name themselves") {
    const std::vector<Tensor> p{ones({2}).requires_grad_()};
    // SGD
    CHECK_THROWS_WITH_AS(optim::SGD(p, {}),
                         "SGD: missing lr; got no learning rate, expected lr >= 0 (SGD has no default)", ValueError);
    CHECK_THROWS_WITH_AS(optim::SGD(p, {.lr = -0.1}), "SGD: invalid lr; got -0.1, expected lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::SGD(p, {.lr = 0.1, .momentum = -1}),
                         "SGD: invalid momentum; got -1, expected momentum >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::SGD(p, {.lr = 0.1, .weight_decay = -0.5}),
                         "SGD: invalid weight_decay; got -0.5, expected weight_decay >= 0", ValueError);
    CHECK_THROWS_WITH_AS(
        optim::SGD(p, {.lr = 0.1, .nesterov = true}),
        "SGD: invalid nesterov; got nesterov with momentum=0 and dampening=0, expected momentum > 0 and "
        "dampening == 0",
        ValueError);
    CHECK_THROWS_WITH_AS(
        optim::SGD(p, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}),
        "SGD: invalid nesterov; got nesterov with momentum=0.9 and dampening=0.1, expected momentum > 0 "
        "and dampening == 0",
        ValueError);
    // Adam and AdamW
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.lr = -1}), "Adam: invalid lr; got -1, expected lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.eps = -1e-8}), "Adam: invalid eps; got -1e-08, expected eps >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.betas = {1.5, 0.999}}),
                         "Adam: invalid betas.0; got 1.5, expected 0 <= betas.0 < 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.betas = {0.9, 1.0}}),
                         "Adam: invalid betas.1; got 1, expected 0 <= betas.1 < 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.betas = {-0.1, 0.9}}),
                         "Adam: invalid betas.0; got -0.1, expected 0 <= betas.0 < 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adam(p, {.weight_decay = -1}),
                         "Adam: invalid weight_decay; got -1, expected weight_decay >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::AdamW(p, {.lr = NAN}), "AdamW: invalid lr; got nan, expected lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::AdamW(p, {.betas = {0.9, 2.0}}),
                         "AdamW: invalid betas.1; got 2, expected 0 <= betas.1 < 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::AdamW(p, {.weight_decay = -0.01}),
                         "AdamW: invalid weight_decay; got -0.01, expected weight_decay >= 0", ValueError);
    // RMSprop
    CHECK_THROWS_WITH_AS(optim::RMSprop(p, {.lr = -1}), "RMSprop: invalid lr; got -1, expected lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::RMSprop(p, {.alpha = -0.5}), "RMSprop: invalid alpha; got -0.5, expected alpha >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::RMSprop(p, {.eps = -1}), "RMSprop: invalid eps; got -1, expected eps >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::RMSprop(p, {.weight_decay = -1}),
                         "RMSprop: invalid weight_decay; got -1, expected weight_decay >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::RMSprop(p, {.momentum = -0.9}),
                         "RMSprop: invalid momentum; got -0.9, expected momentum >= 0", ValueError);
    // Adagrad
    CHECK_THROWS_WITH_AS(optim::Adagrad(p, {.lr = -1}), "Adagrad: invalid lr; got -1, expected lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adagrad(p, {.lr_decay = -1}),
                         "Adagrad: invalid lr_decay; got -1, expected lr_decay >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adagrad(p, {.weight_decay = -1}),
                         "Adagrad: invalid weight_decay; got -1, expected weight_decay >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::Adagrad(p, {.initial_accumulator_value = -1}),
                         "Adagrad: invalid initial_accumulator_value; got -1, expected initial_accumulator_value >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::Adagrad(p, {.eps = -1}), "Adagrad: invalid eps; got -1, expected eps >= 0", ValueError);
    // set_lr (what schedules call)
    optim::Adam opt(p);
    CHECK_THROWS_WITH_AS(opt.set_lr(-0.5), "Adam::set_lr: invalid lr; got -0.5, expected lr >= 0", ValueError);
    CHECK(opt.lr() == 1e-3);
  }

  TEST_CASE("load_state_dict checks every entry and changes nothing on error") {
    auto make = [] {
      return std::vector<Tensor>{zeros({2, 3}, f64).requires_grad_(), zeros({4}, f64).requires_grad_()};
    };
    const std::vector<Tensor> params = make();
    optim::Adam trained(params, {.lr = 0.1});
    sum(params[0] * 2.0).backward();
    trained.step();
    const StateDict good = trained.state_dict();

    optim::Adam target(make(), {.lr = 0.7});
    sum(target.params()[1] * 3.0).backward();
    target.step();
    const StateDict before = snapshot(target.state_dict());
    auto with = [&](const std::string& name, Tensor value) {
      StateDict d;
      for (const auto& [n, t] : good) d.insert(n, n == name ? value : t);
      if (!good.contains(name)) d.insert(name, value);
      return d;
    };
    auto without = [&](const std::string& name) {
      StateDict d;
      for (const auto& [n, t] : good)
        if (n != name) d.insert(n, t);
      return d;
    };

    CHECK_THROWS_WITH_AS(target.load_state_dict(without("param_groups.0.betas.1")),
                         "Adam::load_state_dict: missing entry 'param_groups.0.betas.1'; got a state dict without it, "
                         "expected every hyper-parameter of Adam (is the dict from another type?)",
                         ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(without("state.0.exp_avg_sq")),
                         "Adam::load_state_dict: missing entry 'state.0.exp_avg_sq'; got other state of parameter 0, "
                         "expected all of it",
                         ValueError);
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(without("state.0.step")),
        "Adam::load_state_dict: missing entry 'state.0.step'; got other state of parameter 0, expected "
        "all of it",
        ValueError);
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(with("state.0.exp_avg", zeros({3, 2}, f64))),
        "Adam::load_state_dict: entry 'state.0.exp_avg' has the wrong shape; got [3, 2], expected [2, 3]", ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("state.0.exp_avg", zeros({2, 3}, f32))),
                         "Adam::load_state_dict: entry 'state.0.exp_avg' has the wrong dtype; got float32, expected "
                         "float64",
                         ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("param_groups.0.eps", zeros({1}, f64))),
                         "Adam::load_state_dict: entry 'param_groups.0.eps' has the wrong shape; got [1], expected []",
                         ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("param_groups.0.eps", full({}, 1, f32))),
                         "Adam::load_state_dict: entry 'param_groups.0.eps' has the wrong dtype; got float32, expected "
                         "float64",
                         ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("param_groups.0.betas.0", full({}, 1.5, f64))),
                         "Adam: invalid betas.0; got 1.5, expected 0 <= betas.0 < 1", ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("param_groups.0.amsgrad", index_tensor({2}).view_as_shape({}))),
                         "Adam::load_state_dict: entry 'param_groups.0.amsgrad' is not a flag; got 2, expected 0 or 1",
                         ValueError);
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(with("param_groups.0.params", index_tensor({0, 1, 2}))),
        "Adam::load_state_dict: entry 'param_groups.0.params' does not match the parameters; got int64 "
        "[3], expected int64 [2]",
        ValueError);
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(with("state.0.momentum_buffer", zeros({2, 3}, f64))),
        "Adam::load_state_dict: unexpected entry 'state.0.momentum_buffer'; got an entry Adam does not "
        "have, expected only its own entries (is the dict from another type or configuration?)",
        ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(with("state.2.exp_avg", zeros({4}, f64))),
                         "Adam::load_state_dict: unexpected entry 'state.2.exp_avg'; got an entry Adam does not have, "
                         "expected only its own entries (is the dict from another type or configuration?)",
                         ValueError);
    // amsgrad = 1 in the dict makes max_exp_avg_sq required.
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(with("param_groups.0.amsgrad", index_tensor({1}).view_as_shape({}))),
        "Adam::load_state_dict: missing entry 'state.0.max_exp_avg_sq'; got other state of parameter 0, "
        "expected all of it",
        ValueError);
    // Another optimizer's dict.
    optim::AdamW adamw(make());
    CHECK_THROWS_WITH_AS(
        target.load_state_dict(adamw.state_dict()),
        "Adam::load_state_dict: entry 'param_groups.0.decoupled_weight_decay' is from another optimizer; "
        "got 1 (AdamW), expected 0 (Adam)",
        ValueError);
    CHECK_THROWS_WITH_AS(adamw.load_state_dict(good),
                         "AdamW::load_state_dict: entry 'param_groups.0.decoupled_weight_decay' is from another "
                         "optimizer; got 0 (Adam), expected 1 (AdamW)",
                         ValueError);
    optim::SGD sgd(make(), {.lr = 0.1, .momentum = 0.9});
    CHECK_THROWS_WITH_AS(sgd.load_state_dict(good),
                         "SGD::load_state_dict: missing entry 'param_groups.0.momentum'; got a state dict without it, "
                         "expected every hyper-parameter of SGD (is the dict from another type?)",
                         ValueError);
    CHECK_THROWS_WITH_AS(target.load_state_dict(sgd.state_dict()),
                         "Adam::load_state_dict: missing entry 'param_groups.0.betas.0'; got a state dict without it, "
                         "expected every hyper-parameter of Adam (is the dict from another type?)",
                         ValueError);
    optim::Adagrad adagrad(make());
    StateDict partial = adagrad.state_dict();
    StateDict no_state;
    for (const auto& [n, t] : partial)
      if (n.rfind("state.1.", 0) != 0) no_state.insert(n, t);
    CHECK_THROWS_WITH_AS(adagrad.load_state_dict(no_state),
                         "Adagrad::load_state_dict: missing state of parameter 1; got no 'state.1.*' entries, expected "
                         "them for every parameter",
                         ValueError);

    // All-or-nothing: every failed load above left the target as it was.
    check_equal_dicts(target.state_dict(), before);
    CHECK(target.lr() == 0.7);
    target.load_state_dict(good);
    CHECK(target.lr() == 0.1);
    CHECK_FALSE(target.state_dict().contains("state.1.step"));  // the loaded dict had no state for parameter 1
  }

}  // TEST_SUITE
