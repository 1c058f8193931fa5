#include "schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>

namespace unroll::optim {

namespace {
using Kind = HyperParam::Kind;

// Python's % for a positive divisor: the result is never negative.
std::int64_t floor_mod(std::int64_t a, std::int64_t b) {
  const std::int64_t r = a % b;
  return r < 0 ? r + b : r;
}

void insert_all(StateDict& out, const std::vector<HyperParam>& entries) {
  for (const HyperParam& h : entries) out.insert(h.name, detail::hyper_tensor(h));
}

// Reads `like`'s names and kinds from `dict` into values (in order).
std::vector<double> read_all(std::string_view where, const StateDict& dict, const std::vector<HyperParam>& like,
                             std::vector<std::string>& used) {
  std::vector<double> values;
  for (const HyperParam& h : like) values.push_back(detail::read_hyper(where, dict, h.name, h.kind, used));
  return values;
}
}  // namespace

// ---- LRScheduler ----

LRScheduler::LRScheduler(std::string name, Optimizer& optimizer)
    : name_(std::move(name)), optimizer_(&optimizer), base_lr_(optimizer.default_initial_lr(optimizer.lr())) {}

void LRScheduler::step() {
  ++last_epoch_;
  const double lr = compute_lr();
  optimizer_->set_lr(lr);
  last_lr_ = optimizer_->lr();
}

StateDict LRScheduler::state_dict() const {
  StateDict out;
  insert_all(out, hyper_params());
  insert_all(out, {{"base_lrs.0", base_lr_},
                   {"last_epoch", static_cast<double>(last_epoch_), Kind::integer},
                   {"_last_lr.0", last_lr_}});
  return out;
}

void LRScheduler::load_state_dict(const StateDict& dict) {
  std::vector<std::string> used;
  const std::vector<double> values = read_all(name_, dict, hyper_params(), used);
  check_hyper_params(values);
  const std::vector<double> progress =
      read_all(name_, dict, {{"base_lrs.0", 0}, {"last_epoch", 0, Kind::integer}, {"_last_lr.0", 0}}, used);
  detail::check_hyper(progress[0] >= 0, name_, "base_lrs.0", progress[0], "base_lrs.0 >= 0");
  detail::check_hyper(progress[1] >= 0, name_, "last_epoch", progress[1], "last_epoch >= 0");
  detail::check_hyper(progress[2] >= 0, name_, "_last_lr.0", progress[2], "_last_lr.0 >= 0");
  detail::check_no_extra(name_, dict, used);
  set_hyper_params(values);
  base_lr_ = progress[0];
  last_epoch_ = detail::to_int64(progress[1]);
  last_lr_ = progress[2];
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma)
    : LRScheduler("StepLR", optimizer), step_size_(step_size), gamma_(gamma) {
  check_hyper_params(std::vector<double>{static_cast<double>(step_size), gamma});
  initial_step();
}

double StepLR::compute_lr() const {
  const double lr = optimizer().lr();
  if (last_epoch() == 0 || last_epoch() % step_size_ != 0) return lr;
  return lr * gamma_;
}

std::vector<HyperParam> StepLR::hyper_params() const {
  return {{"step_size", static_cast<double>(step_size_), Kind::integer}, {"gamma", gamma_}};
}

void StepLR::check_hyper_params(std::span<const double> v) const {
  detail::check_hyper(v[0] >= 1, name(), "step_size", v[0], "step_size >= 1");
  detail::check_hyper(v[1] >= 0, name(), "gamma", v[1], "gamma >= 0");
}

void StepLR::set_hyper_params(std::span<const double> v) noexcept {
  step_size_ = detail::to_int64(v[0]);
  gamma_ = v[1];
}

// ---- ExponentialLR ----

ExponentialLR::ExponentialLR(Optimizer& optimizer, double gamma)
    : LRScheduler("ExponentialLR", optimizer), gamma_(gamma) {
  check_hyper_params(std::vector<double>{gamma});
  initial_step();
}

double ExponentialLR::compute_lr() const {
  const double lr = optimizer().lr();
  return last_epoch() == 0 ? lr : lr * gamma_;
}

std::vector<HyperParam> ExponentialLR::hyper_params() const { return {{"gamma", gamma_}}; }

void ExponentialLR::check_hyper_params(std::span<const double> v) const {
  detail::check_hyper(v[0] >= 0, name(), "gamma", v[0], "gamma >= 0");
}

void ExponentialLR::set_hyper_params(std::span<const double> v) noexcept { gamma_ = v[0]; }

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min)
    : LRScheduler("CosineAnnealingLR", optimizer), t_max_(t_max), eta_min_(eta_min) {
  check_hyper_params(std::vector<double>{static_cast<double>(t_max), eta_min});
  initial_step();
}

// PyTorch's recursive form, operation for operation: the closed form differs in the last bits.
double CosineAnnealingLR::compute_lr() const {
  constexpr double pi = std::numbers::pi;
  const double lr = optimizer().lr();
  const std::int64_t e = last_epoch();
  const double t_max = static_cast<double>(t_max_);
  if (e == 0) return lr;
  // Leaving the bottom of a period the ratio below would divide by 1 + cos(pi) = 0, so PyTorch steps up from
  // the base lr instead. Its test, (e - 1 - T_max) % (2 T_max) == 0, written so that 2 T_max cannot overflow:
  const std::int64_t from_bottom = e - 1 - t_max_;
  if (from_bottom % t_max_ == 0 && floor_mod(from_bottom / t_max_, 2) == 0)
    return lr + (base_lr() - eta_min_) * (1 - std::cos(pi / t_max)) / 2;
  return (1 + std::cos(pi * static_cast<double>(e) / t_max)) / (1 + std::cos(pi * static_cast<double>(e - 1) / t_max)) *
             (lr - eta_min_) +
         eta_min_;
}

std::vector<HyperParam> CosineAnnealingLR::hyper_params() const {
  return {{"T_max", static_cast<double>(t_max_), Kind::integer}, {"eta_min", eta_min_}};
}

void CosineAnnealingLR::check_hyper_params(std::span<const double> v) const {
  detail::check_hyper(v[0] >= 1, name(), "T_max", v[0], "T_max >= 1");
  detail::check_hyper(v[1] >= 0, name(), "eta_min", v[1], "eta_min >= 0");
}

void CosineAnnealingLR::set_hyper_params(std::span<const double> v) noexcept {
  t_max_ = detail::to_int64(v[0]);
  eta_min_ = v[1];
}

// ---- LinearLR ----

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, std::int64_t total_iters)
    : LRScheduler("LinearLR", optimizer),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  check_hyper_params(std::vector<double>{start_factor, end_factor, static_cast<double>(total_iters)});
  initial_step();
}

double LinearLR::compute_lr() const {
  const double lr = optimizer().lr();
  const std::int64_t e = last_epoch();
  if (e == 0) return lr * start_factor_;
  if (e > total_iters_) return lr;
  return lr * (1. + (end_factor_ - start_factor_) / (static_cast<double>(total_iters_) * start_factor_ +
                                                     static_cast<double>(e - 1) * (end_factor_ - start_factor_)));
}

std::vector<HyperParam> LinearLR::hyper_params() const {
  return {{"start_factor", start_factor_},
          {"end_factor", end_factor_},
          {"total_iters", static_cast<double>(total_iters_), Kind::integer}};
}

void LinearLR::check_hyper_params(std::span<const double> v) const {
  // start_factor = 0 would divide by zero in the recursive formula (PyTorch 1.13 accepts it, then fails).
  detail::check_hyper(v[0] > 0 && v[0] <= 1, name(), "start_factor", v[0], "0 < start_factor <= 1");
  detail::check_hyper(v[1] >= 0 && v[1] <= 1, name(), "end_factor", v[1], "0 <= end_factor <= 1");
  detail::check_hyper(v[2] >= 1, name(), "total_iters", v[2], "total_iters >= 1");
}

void LinearLR::set_hyper_params(std::span<const double> v) noexcept {
  start_factor_ = v[0];
  end_factor_ = v[1];
  total_iters_ = detail::to_int64(v[2]);
}

// ---- ReduceLROnPlateau ----

namespace {
constexpr const char* kPlateau = "ReduceLROnPlateau";

// Options in state-dict order; mode and threshold_mode as 0/1.
std::vector<HyperParam> plateau_hyper(const ReduceLROnPlateauOptions& o) {
  return {{"mode", o.mode == "max" ? 1.0 : 0.0, Kind::integer},
          {"factor", o.factor},
          {"patience", static_cast<double>(o.patience), Kind::integer},
          {"threshold", o.threshold},
          {"threshold_mode", o.threshold_mode == "abs" ? 1.0 : 0.0, Kind::integer},
          {"cooldown", static_cast<double>(o.cooldown), Kind::integer},
          {"min_lrs.0", o.min_lr},
          {"eps", o.eps}};
}

void check_plateau(const ReduceLROnPlateauOptions& o) {
  UNROLL_CHECK(o.mode == "min" || o.mode == "max", ValueError, "{}: invalid mode; got '{}', expected 'min' or 'max'",
               kPlateau, o.mode);
  detail::check_hyper(o.factor >= 0 && o.factor < 1, kPlateau, "factor", o.factor, "0 <= factor < 1");
  detail::check_hyper(o.patience >= 0, kPlateau, "patience", static_cast<double>(o.patience), "patience >= 0");
  detail::check_hyper(o.threshold >= 0, kPlateau, "threshold", o.threshold, "threshold >= 0");
  UNROLL_CHECK(o.threshold_mode == "rel" || o.threshold_mode == "abs", ValueError,
               "{}: invalid threshold_mode; got '{}', expected 'rel' or 'abs'", kPlateau, o.threshold_mode);
  detail::check_hyper(o.cooldown >= 0, kPlateau, "cooldown", static_cast<double>(o.cooldown), "cooldown >= 0");
  detail::check_hyper(o.min_lr >= 0, kPlateau, "min_lr", o.min_lr, "min_lr >= 0");
  detail::check_hyper(o.eps >= 0, kPlateau, "eps", o.eps, "eps >= 0");
}
}  // namespace

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& options)
    : optimizer_(&optimizer), options_(options), last_lr_(optimizer.lr()) {
  check_plateau(options_);
  best_ = options_.mode == "min" ? INFINITY : -INFINITY;
}

bool ReduceLROnPlateau::is_better(double a) const {
  const bool rel = options_.threshold_mode == "rel";
  if (options_.mode == "min") return rel ? a < best_ * (1. - options_.threshold) : a < best_ - options_.threshold;
  return rel ? a > best_ * (options_.threshold + 1.) : a > best_ + options_.threshold;
}

void ReduceLROnPlateau::step(double metric) {
  ++last_epoch_;
  if (is_better(metric)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    num_bad_epochs_ = 0;  // bad epochs in cooldown do not count
  }
  if (num_bad_epochs_ > options_.patience) {
    const double old_lr = optimizer_->lr();
    const double new_lr = std::max(old_lr * options_.factor, options_.min_lr);
    if (old_lr - new_lr > options_.eps) optimizer_->set_lr(new_lr);
    cooldown_counter_ = options_.cooldown;
    num_bad_epochs_ = 0;
  }
  last_lr_ = optimizer_->lr();
}

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict out;
  insert_all(out, plateau_hyper(options_));
  insert_all(out, {{"last_epoch", static_cast<double>(last_epoch_), Kind::integer},
                   {"best", best_},
                   {"num_bad_epochs", static_cast<double>(num_bad_epochs_), Kind::integer},
                   {"cooldown_counter", static_cast<double>(cooldown_counter_), Kind::integer},
                   {"_last_lr.0", last_lr_}});
  return out;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& dict) {
  std::vector<std::string> used;
  const std::vector<double> v = read_all(kPlateau, dict, plateau_hyper(options_), used);
  detail::check_hyper(v[0] == 0 || v[0] == 1, kPlateau, "mode", v[0], "0 (min) or 1 (max)");
  detail::check_hyper(v[4] == 0 || v[4] == 1, kPlateau, "threshold_mode", v[4], "0 (rel) or 1 (abs)");
  const ReduceLROnPlateauOptions o{.mode = v[0] == 1 ? "max" : "min",
                                   .factor = v[1],
                                   .patience = detail::to_int64(v[2]),
                                   .threshold = v[3],
                                   .threshold_mode = v[4] == 1 ? "abs" : "rel",
                                   .cooldown = detail::to_int64(v[5]),
                                   .min_lr = v[6],
                                   .eps = v[7]};
  check_plateau(o);
  const std::vector<double> p = read_all(kPlateau, dict,
                                         {{"last_epoch", 0, Kind::integer},
                                          {"best", 0},
                                          {"num_bad_epochs", 0, Kind::integer},
                                          {"cooldown_counter", 0, Kind::integer},
                                          {"_last_lr.0", 0}},
                                         used);
  detail::check_hyper(p[0] >= 0, kPlateau, "last_epoch", p[0], "last_epoch >= 0");
  detail::check_hyper(p[2] >= 0, kPlateau, "num_bad_epochs", p[2], "num_bad_epochs >= 0");
  detail::check_hyper(p[3] >= 0, kPlateau, "cooldown_counter", p[3], "cooldown_counter >= 0");
  detail::check_hyper(p[4] >= 0, kPlateau, "_last_lr.0", p[4], "_last_lr.0 >= 0");
  detail::check_no_extra(kPlateau, dict, used);
  options_ = o;
  last_epoch_ = detail::to_int64(p[0]);
  best_ = p[1];
  num_bad_epochs_ = detail::to_int64(p[2]);
  cooldown_counter_ = detail::to_int64(p[3]);
  last_lr_ = p[4];
}

}  // namespace unroll::optim
