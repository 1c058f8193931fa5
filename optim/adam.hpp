#pragma once
// Adam (with AMSGrad and L2 weight decay) and AdamW (decoupled weight decay), as torch.optim.Adam/AdamW.
#include <array>
#include <vector>

#include "optimizer.hpp"

namespace unroll::optim {

/// Adam hyper-parameters; defaults as PyTorch's.
struct AdamOptions {
  double lr = 1e-3;                            ///< >= 0
  std::array<double, 2> betas = {0.9, 0.999};  ///< each in [0, 1)
  double eps = 1e-8;                           ///< >= 0
  double weight_decay = 0;                     ///< >= 0; L2 penalty added to the gradient (AdamW: decoupled)
  bool amsgrad = false;
};
/// AdamW hyper-parameters: as Adam's, but PyTorch's AdamW defaults to weight_decay = 1e-2.
struct AdamWOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

/// t += 1;  g' = g + weight_decay p;  m = beta1 m + (1 - beta1) g';  v = beta2 v + (1 - beta2) g'^2;
/// v_max = max(v_max, v) (amsgrad);  p -= lr / (1 - beta1^t) * m / (sqrt(v or v_max) / sqrt(1 - beta2^t) + eps).
/// State: "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq" (amsgrad only); zeros before the first step.
class Adam : public Optimizer {
 public:
  /// ValueError naming the first invalid option (e.g. `Adam: invalid betas.0; got 1.5, expected 0 <= betas.0 < 1`).
  Adam(std::vector<Tensor> params, const AdamOptions& options = {});
  void step() override;
  /// The hyper-parameters in effect (lr as lr()).
  AdamOptions options() const;

 protected:
  /// For AdamW: `decoupled` applies weight decay as p *= 1 - lr weight_decay before the Adam update.
  Adam(const char* name, std::vector<Tensor> params, const AdamOptions& options, bool decoupled);
  std::vector<HyperParam> hyper_params() const override;
  StateLayout check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  AdamOptions options_;
  bool decoupled_;  ///< saved as "decoupled_weight_decay", which tells an Adam dict from an AdamW one
};

/// Adam with decoupled weight decay: p *= 1 - lr weight_decay, then the Adam update of the raw gradient.
class AdamW : public Adam {
 public:
  /// ValueError naming the first invalid option (`AdamW: invalid eps; got -1, expected eps >= 0`).
  AdamW(std::vector<Tensor> params, const AdamWOptions& options = {});
};

}  // namespace unroll::optim
