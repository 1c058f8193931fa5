#pragma once
// RMSprop (with momentum, centering and L2 weight decay), as torch.optim.RMSprop.
#include <vector>

#include "optimizer.hpp"

namespace unroll::optim {

/// RMSprop hyper-parameters; defaults as PyTorch's.
struct RMSpropOptions {
  double lr = 1e-2;         ///< >= 0
  double alpha = 0.99;      ///< >= 0, smoothing constant of the running averages
  double eps = 1e-8;        ///< >= 0, added after the square root (as PyTorch)
  double weight_decay = 0;  ///< >= 0
  double momentum = 0;      ///< >= 0
  bool centered = false;    ///< normalise by an estimate of the gradient's variance
};

/// g' = g + weight_decay p;  s = alpha s + (1 - alpha) g'^2;  a = alpha a + (1 - alpha) g' (centered);
/// avg = sqrt(s - a^2 or s) + eps;  buf = momentum buf + g' / avg, p -= lr buf (momentum > 0) or p -= lr g' / avg.
/// State: "step", "square_avg", "momentum_buffer" (momentum > 0), "grad_avg" (centered); zeros at first.
class RMSprop : public Optimizer {
 public:
  /// ValueError naming the first invalid option (e.g. `RMSprop: invalid alpha; got -0.5, expected alpha >= 0`).
  RMSprop(std::vector<Tensor> params, const RMSpropOptions& options = {});
  void step() override;
  /// The hyper-parameters in effect (lr as lr()).
  RMSpropOptions options() const;

 protected:
  std::vector<HyperParam> hyper_params() const override;
  StateLayout check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  RMSpropOptions options_;
};

}  // namespace unroll::optim
