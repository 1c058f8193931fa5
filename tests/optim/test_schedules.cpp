// Learning-rate schedules against PyTorch (tests/fixtures/optim.json, exact to the last bit), state_dict
// round trips that resume exactly, and error texts.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <variant>

#include <unroll/optim/optim.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;

namespace {
const json& fixture() {
  static const json j = test_support::load_fixture("optim.json");
  return j;
}

double num_or(const json& s, const char* key, double fallback) {
  return s.contains(key) ? s.at(key).get<double>() : fallback;
}
std::int64_t int_or(const json& s, const char* key, std::int64_t fallback) {
  return s.contains(key) ? s.at(key).get<std::int64_t>() : fallback;
}
std::string str_or(const json& s, const char* key, const char* fallback) {
  return s.contains(key) ? s.at(key).get<std::string>() : fallback;
}

using AnySchedule = std::variant<std::unique_ptr<optim::LRScheduler>, std::unique_ptr<optim::ReduceLROnPlateau>>;

// A schedule from a fixture spec; PyTorch's defaults fill in what the spec does not give.
AnySchedule make_schedule(optim::Optimizer& opt, const json& s) {
  const std::string type = s.at("type");
  if (type == "StepLR")
    return std::make_unique<optim::StepLR>(opt, s.at("step_size").get<std::int64_t>(), num_or(s, "gamma", 0.1));
  if (type == "ExponentialLR") return std::make_unique<optim::ExponentialLR>(opt, s.at("gamma").get<double>());
  if (type == "CosineAnnealingLR")
    return std::make_unique<optim::CosineAnnealingLR>(opt, s.at("T_max").get<std::int64_t>(), num_or(s, "eta_min", 0));
  if (type == "LinearLR") {
    return std::make_unique<optim::LinearLR>(opt, num_or(s, "start_factor", 1.0 / 3), num_or(s, "end_factor", 1.0),
                                             int_or(s, "total_iters", 5));
  }
  REQUIRE(type == "ReduceLROnPlateau");
  return std::make_unique<optim::ReduceLROnPlateau>(
      opt, optim::ReduceLROnPlateauOptions{.mode = str_or(s, "mode", "min"),
                                           .factor = num_or(s, "factor", 0.1),
                                           .patience = int_or(s, "patience", 10),
                                           .threshold = num_or(s, "threshold", 1e-4),
                                           .threshold_mode = str_or(s, "threshold_mode", "rel"),
                                           .cooldown = int_or(s, "cooldown", 0),
                                           .min_lr = num_or(s, "min_lr", 0),
                                           .eps = num_or(s, "eps", 1e-8)});
}

void step(AnySchedule& s, const json& c, std::size_t k) {
  if (auto* e = std::get_if<0>(&s))
    (*e)->step();
  else
    std::get<1>(s)->step(c.at("metrics")[k].get<double>());
}
double last_lr(const AnySchedule& s) { return s.index() == 0 ? std::get<0>(s)->last_lr() : std::get<1>(s)->last_lr(); }
StateDict state_dict(const AnySchedule& s) {
  return s.index() == 0 ? std::get<0>(s)->state_dict() : std::get<1>(s)->state_dict();
}
void load_state_dict(AnySchedule& s, const StateDict& d) {
  if (s.index() == 0)
    std::get<0>(s)->load_state_dict(d);
  else
    std::get<1>(s)->load_state_dict(d);
}

struct Setup {
  Tensor p = zeros({2}, Dtype::float64).requires_grad_();
  optim::SGD opt;
  std::vector<AnySchedule> schedules;
  Setup(const json& c, double lr) : opt({p}, {.lr = lr}) {
    for (const json& s : c.at("schedulers")) schedules.push_back(make_schedule(opt, s));
  }
  void step(const json& c, std::size_t k) {
    for (auto& s : schedules) ::step(s, c, k);
  }
};
}  // namespace

TEST_SUITE("optim/schedules") {
  TEST_CASE("learning rates match PyTorch exactly") {
    for (const json& c : fixture().at("schedules")) {
      const std::string name = c.at("name");
      CAPTURE(name);
      const auto lrs = c.at("lrs").get<std::vector<double>>();
      Setup s(c, c.at("lr").get<double>());
      CHECK(s.opt.lr() == lrs[0]);
      for (std::size_t k = 1; k < lrs.size(); ++k) {
        CAPTURE(k);
        s.step(c, k - 1);
        CHECK(s.opt.lr() == lrs[k]);  // exact: same operations in the same order as PyTorch
        if (s.schedules.size() == 1) CHECK(last_lr(s.schedules[0]) == lrs[k]);
      }
    }
  }

  TEST_CASE("state_dict round trip resumes exactly") {
    for (const json& c : fixture().at("schedules")) {
      const std::string name = c.at("name");
      CAPTURE(name);
      Setup a(c, c.at("lr").get<double>());
      for (std::size_t k = 0; k < 11; ++k) a.step(c, k);
      const StateDict opt_state = a.opt.state_dict();
      std::vector<StateDict> saved;
      for (const auto& s : a.schedules) saved.push_back(state_dict(s));

      // Fresh objects (whose construction already moved the lr), then restore optimizer and schedules.
      Setup b(c, 1.0);
      b.opt.load_state_dict(opt_state);
      for (std::size_t i = 0; i < saved.size(); ++i) load_state_dict(b.schedules[i], saved[i]);
      CHECK(b.opt.lr() == a.opt.lr());
      for (std::size_t k = 11; k < 30; ++k) {
        a.step(c, k);
        b.step(c, k);
        CHECK(a.opt.lr() == b.opt.lr());
      }
      CHECK(a.opt.lr() == c.at("lrs").back().get<double>());
    }
  }

  TEST_CASE("construction sets the epoch-0 lr and the base lr") {
    Tensor p = zeros({1}).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.3});
    optim::LinearLR warmup(opt, 0.5, 1.0, 2);
    CHECK(opt.lr() == 0.15);
    CHECK(warmup.last_lr() == 0.15);
    CHECK(warmup.last_epoch() == 0);
    CHECK(warmup.base_lr() == 0.3);
    CHECK(opt.initial_lr() == 0.3);
    optim::StepLR later(opt, 2);  // a second schedule shares the first one's base lr (PyTorch's initial_lr)
    CHECK(later.base_lr() == 0.3);
    CHECK(opt.lr() == 0.15);
    const StateDict sd = warmup.state_dict();
    std::vector<std::string> names;
    for (const auto& [n, t] : sd) names.push_back(n);
    CHECK(names == std::vector<std::string>{"start_factor", "end_factor", "total_iters", "base_lrs.0", "last_epoch",
                                            "_last_lr.0"});
    CHECK(sd.at("total_iters").dtype() == Dtype::int64);
    CHECK(opt.state_dict().at("param_groups.0.initial_lr").item() == 0.3);

    optim::ReduceLROnPlateau plateau(opt);
    CHECK(plateau.last_lr() == 0.15);
    CHECK(plateau.best() == INFINITY);
    plateau.step(NAN);  // never an improvement
    CHECK(plateau.num_bad_epochs() == 1);
  }

  TEST_CASE("invalid schedule hyper-parameters name themselves") {
    Tensor p = zeros({1}).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.1});
    CHECK_THROWS_WITH_AS(optim::StepLR(opt, 0), "StepLR: invalid step_size; got 0, expected step_size >= 1",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::StepLR(opt, 3, -0.5), "StepLR: invalid gamma; got -0.5, expected gamma >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::ExponentialLR(opt, -1), "ExponentialLR: invalid gamma; got -1, expected gamma >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::CosineAnnealingLR(opt, 0),
                         "CosineAnnealingLR: invalid T_max; got 0, expected T_max >= 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::CosineAnnealingLR(opt, 10, -0.1),
                         "CosineAnnealingLR: invalid eta_min; got -0.1, expected eta_min >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::LinearLR(opt, 0.0),
                         "LinearLR: invalid start_factor; got 0, expected 0 < start_factor <= 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::LinearLR(opt, 1.5),
                         "LinearLR: invalid start_factor; got 1.5, expected 0 < start_factor <= 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::LinearLR(opt, 0.5, 1.1),
                         "LinearLR: invalid end_factor; got 1.1, expected 0 <= end_factor <= 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::LinearLR(opt, 0.5, 1.0, 0),
                         "LinearLR: invalid total_iters; got 0, expected total_iters >= 1", ValueError);
    CHECK(opt.lr() == 0.1);  // failed constructions changed nothing

    using Opts = optim::ReduceLROnPlateauOptions;
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.mode = "avg"}),
                         "ReduceLROnPlateau: invalid mode; got 'avg', expected 'min' or 'max'", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.factor = 1.0}),
                         "ReduceLROnPlateau: invalid factor; got 1, expected 0 <= factor < 1", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.patience = -1}),
                         "ReduceLROnPlateau: invalid patience; got -1, expected patience >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.threshold = -1e-4}),
                         "ReduceLROnPlateau: invalid threshold; got -0.0001, expected threshold >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.threshold_mode = "relative"}),
                         "ReduceLROnPlateau: invalid threshold_mode; got 'relative', expected 'rel' or 'abs'",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.cooldown = -2}),
                         "ReduceLROnPlateau: invalid cooldown; got -2, expected cooldown >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.min_lr = -1}),
                         "ReduceLROnPlateau: invalid min_lr; got -1, expected min_lr >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::ReduceLROnPlateau(opt, Opts{.eps = -1}),
                         "ReduceLROnPlateau: invalid eps; got -1, expected eps >= 0", ValueError);
  }

  TEST_CASE("load_state_dict rejects another schedule's dict and bad entries") {
    Tensor p = zeros({1}).requires_grad_();
    optim::SGD opt({p}, {.lr = 0.1});
    optim::StepLR step_lr(opt, 3);
    optim::ExponentialLR exp_lr(opt, 0.9);
    step_lr.step();
    const StateDict before = step_lr.state_dict();
    CHECK_THROWS_WITH_AS(
        step_lr.load_state_dict(exp_lr.state_dict()),
        "StepLR::load_state_dict: missing entry 'step_size'; got a state dict without it, expected every "
        "hyper-parameter of StepLR (is the dict from another type?)",
        ValueError);
    CHECK_THROWS_WITH_AS(
        exp_lr.load_state_dict(before),
        "ExponentialLR::load_state_dict: unexpected entry 'step_size'; got an entry ExponentialLR does not "
        "have, expected only its own entries (is the dict from another type or configuration?)",
        ValueError);
    StateDict bad;
    for (const auto& [n, t] : before) bad.insert(n, n == "step_size" ? full({}, 3, Dtype::float64) : t);
    CHECK_THROWS_WITH_AS(step_lr.load_state_dict(bad),
                         "StepLR::load_state_dict: entry 'step_size' has the wrong dtype; got float64, expected int64",
                         ValueError);
    StateDict zero_step;
    for (const auto& [n, t] : before) zero_step.insert(n, n == "step_size" ? index_tensor({0}).view_as_shape({}) : t);
    CHECK_THROWS_WITH_AS(step_lr.load_state_dict(zero_step),
                         "StepLR: invalid step_size; got 0, expected step_size >= 1", ValueError);
    CHECK(step_lr.last_epoch() == 1);

    optim::ReduceLROnPlateau plateau(opt);
    StateDict pd;
    for (const auto& [n, t] : plateau.state_dict()) pd.insert(n, n == "mode" ? index_tensor({3}).view_as_shape({}) : t);
    CHECK_THROWS_WITH_AS(plateau.load_state_dict(pd),
                         "ReduceLROnPlateau: invalid mode; got 3, expected 0 (min) or 1 (max)", ValueError);
    CHECK_THROWS_WITH_AS(
        plateau.load_state_dict(before),
        "ReduceLROnPlateau::load_state_dict: missing entry 'mode'; got a state dict without it, expected "
        "every hyper-parameter of ReduceLROnPlateau (is the dict from another type?)",
        ValueError);
  }

}  // TEST_SUITE
