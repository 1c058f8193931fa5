#pragma once
// Learning-rate schedules, as torch.optim.lr_scheduler (PyTorch 1.13). Constructing a schedule performs
// its epoch-0 step, as PyTorch's does (LinearLR multiplies the lr by start_factor right away); after that
// call step() once per epoch, after the optimizer's step(). The epoch schedules use PyTorch's recursive
// ("chainable") formulas, so their values match PyTorch's to the last bit and schedules attached to the
// same optimizer compose (e.g. LinearLR warm-up with CosineAnnealingLR). The first schedule attached sets
// the optimizer's initial_lr, the base lr of every schedule on it.
//
// state_dict() holds the hyper-parameters under PyTorch's attribute names ("step_size", "gamma", "T_max",
// ...; integers as 0-d int64, the rest 0-d float64) and the progress ("last_epoch", "base_lrs.0",
// "_last_lr.0"). Restore the optimizer's state dict too: the schedule reads the current lr from it.
// A schedule keeps a reference to its optimizer, which must outlive it.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/state_dict.hpp"
#include "optimizer.hpp"

namespace unroll::optim {

/// Base of the epoch schedules: each step() advances last_epoch and sets the optimizer's lr.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  /// Advances one epoch and sets the optimizer's learning rate.
  void step();
  /// The learning rate set by the last step (or by construction).
  double last_lr() const { return last_lr_; }
  /// Epochs stepped so far (0 right after construction).
  std::int64_t last_epoch() const { return last_epoch_; }
  /// The optimizer's initial_lr when this schedule was attached.
  double base_lr() const { return base_lr_; }
  /// "StepLR", ... (the prefix of this schedule's error messages).
  const std::string& name() const { return name_; }
  /// Hyper-parameters and progress as named 0-d tensors (see the header comment).
  StateDict state_dict() const;
  /// Restores what state_dict() saved, for the same schedule type. ValueError naming the entry for a
  /// missing, unexpected or mistyped entry, or an invalid value; all-or-nothing.
  void load_state_dict(const StateDict& dict);

 protected:
  LRScheduler(std::string name, Optimizer& optimizer);
  /// PyTorch's _initial_step (epoch 0); derived constructors call it last, once compute_lr() works.
  void initial_step() { step(); }
  /// PyTorch's chainable get_lr(): the lr for last_epoch() (already advanced) from the optimizer's lr.
  virtual double compute_lr() const = 0;
  /// Hyper-parameters in the order they are saved.
  virtual std::vector<HyperParam> hyper_params() const = 0;
  /// ValueError naming an invalid value (hyper_params() order); changes nothing.
  virtual void check_hyper_params(std::span<const double> values) const = 0;
  /// Adopts checked values.
  virtual void set_hyper_params(std::span<const double> values) noexcept = 0;

  Optimizer& optimizer() const { return *optimizer_; }

 private:
  std::string name_;
  Optimizer* optimizer_;
  double base_lr_;
  std::int64_t last_epoch_ = -1;
  double last_lr_ = 0;
};

/// lr *= gamma every step_size epochs. ValueError unless step_size >= 1 and gamma >= 0.
class StepLR : public LRScheduler {
 public:
  /// optimizer, step_size >= 1, gamma >= 0 (default 0.1).
  StepLR(Optimizer& optimizer, std::int64_t step_size, double gamma = 0.1);

 protected:
  double compute_lr() const override;
  std::vector<HyperParam> hyper_params() const override;
  void check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  std::int64_t step_size_;
  double gamma_;
};

/// lr *= gamma every epoch. ValueError unless gamma >= 0.
class ExponentialLR : public LRScheduler {
 public:
  /// optimizer, gamma >= 0.
  ExponentialLR(Optimizer& optimizer, double gamma);

 protected:
  double compute_lr() const override;
  std::vector<HyperParam> hyper_params() const override;
  void check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  double gamma_;
};

/// Cosine annealing from the base lr to eta_min over t_max epochs, then back up (period 2 t_max), by
/// PyTorch's recursive formula. ValueError unless t_max >= 1 and eta_min >= 0.
class CosineAnnealingLR : public LRScheduler {
 public:
  /// optimizer, t_max >= 1 (PyTorch's T_max), eta_min >= 0.
  CosineAnnealingLR(Optimizer& optimizer, std::int64_t t_max, double eta_min = 0);

 protected:
  double compute_lr() const override;
  std::vector<HyperParam> hyper_params() const override;
  void check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  std::int64_t t_max_;
  double eta_min_;
};

/// Linear warm-up (or decay): the lr factor goes linearly from start_factor to end_factor over total_iters
/// epochs, then stays. ValueError unless 0 < start_factor <= 1, 0 <= end_factor <= 1, total_iters >= 1.
class LinearLR : public LRScheduler {
 public:
  /// optimizer, start_factor in (0, 1], end_factor in [0, 1], total_iters >= 1.
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0, std::int64_t total_iters = 5);

 protected:
  double compute_lr() const override;
  std::vector<HyperParam> hyper_params() const override;
  void check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  double start_factor_, end_factor_;
  std::int64_t total_iters_;
};

/// ReduceLROnPlateau hyper-parameters; defaults as PyTorch's.
struct ReduceLROnPlateauOptions {
  std::string mode = "min";            ///< "min": lower metric is better; "max": higher is better
  double factor = 0.1;                 ///< in [0, 1): new lr = max(lr factor, min_lr)
  std::int64_t patience = 10;          ///< >= 0 bad epochs tolerated before reducing
  double threshold = 1e-4;             ///< >= 0, how much better counts as better
  std::string threshold_mode = "rel";  ///< "rel": relative to best; "abs": absolute
  std::int64_t cooldown = 0;           ///< >= 0 epochs after a reduction in which bad epochs are not counted
  double min_lr = 0;                   ///< >= 0
  double eps = 1e-8;                   ///< >= 0; reductions smaller than this are skipped
};

/// Reduces the lr by `factor` when a metric has stopped improving for more than `patience` epochs.
/// Not an LRScheduler (as in PyTorch): it steps on a metric. Construction does not change the lr.
/// state_dict(): the options ("mode": 0 min / 1 max, "threshold_mode": 0 rel / 1 abs, "min_lrs.0", ...)
/// and the progress ("last_epoch", "best", "num_bad_epochs", "cooldown_counter", "_last_lr.0").
class ReduceLROnPlateau {
 public:
  /// ValueError naming an invalid option (e.g. `ReduceLROnPlateau: invalid factor; got 1, expected 0 <= factor < 1`).
  ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& options = {});
  ReduceLROnPlateau(const ReduceLROnPlateau&) = delete;
  ReduceLROnPlateau& operator=(const ReduceLROnPlateau&) = delete;

  /// Records one epoch's metric (NaN is never an improvement) and reduces the lr if it has plateaued.
  void step(double metric);
  /// The optimizer's lr after the last step (its lr at construction before any).
  double last_lr() const { return last_lr_; }
  /// Epochs stepped so far.
  std::int64_t last_epoch() const { return last_epoch_; }
  /// The best metric so far (+inf in "min" mode, -inf in "max" mode before any step).
  double best() const { return best_; }
  /// Bad epochs counted since the last improvement or reduction.
  std::int64_t num_bad_epochs() const { return num_bad_epochs_; }
  /// The options in effect.
  const ReduceLROnPlateauOptions& options() const { return options_; }
  /// Options and progress as named 0-d tensors.
  StateDict state_dict() const;
  /// Restores what state_dict() saved; ValueError naming a bad entry; all-or-nothing.
  void load_state_dict(const StateDict& dict);

 private:
  bool is_better(double a) const;

  Optimizer* optimizer_;
  ReduceLROnPlateauOptions options_;
  std::int64_t last_epoch_ = 0;
  double best_;
  std::int64_t num_bad_epochs_ = 0;
  std::int64_t cooldown_counter_ = 0;
  double last_lr_;
};

}  // namespace unroll::optim
