#pragma once
// Adagrad (with learning-rate decay, an initial accumulator value and L2 weight decay), as
// torch.optim.Adagrad.
#include <vector>

#include "optimizer.hpp"

namespace unroll::optim {

/// Adagrad hyper-parameters; defaults as PyTorch's.
struct AdagradOptions {
  double lr = 1e-2;                      ///< >= 0
  double lr_decay = 0;                   ///< >= 0
  double weight_decay = 0;               ///< >= 0
  double initial_accumulator_value = 0;  ///< >= 0, the starting value of "sum"
  double eps = 1e-10;                    ///< >= 0
};

/// t += 1;  g' = g + weight_decay p;  sum += g'^2;  p -= lr / (1 + (t - 1) lr_decay) * g' / (sqrt(sum) + eps).
/// State: "step", "sum"; made for every parameter at construction (sum = initial_accumulator_value), as PyTorch.
class Adagrad : public Optimizer {
 public:
  /// ValueError naming the first invalid option (e.g. `Adagrad: invalid lr_decay; got -1, expected lr_decay >= 0`).
  Adagrad(std::vector<Tensor> params, const AdagradOptions& options = {});
  void step() override;
  /// The hyper-parameters in effect (lr as lr()).
  AdagradOptions options() const;

 protected:
  std::vector<HyperParam> hyper_params() const override;
  StateLayout check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  AdagradOptions options_;
};

}  // namespace unroll::optim
