#pragma once
// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay (PyTorch's
// torch.optim.SGD).
#include <limits>
#include <vector>

#include "optimizer.hpp"

namespace unroll::optim {

/// SGD hyper-parameters; defaults as PyTorch's. PyTorch's SGD has no default learning rate: lr is required.
struct SGDOptions {
  double lr = std::numeric_limits<double>::quiet_NaN();  ///< required, >= 0
  double momentum = 0;                                   ///< >= 0
  double dampening = 0;
  double weight_decay = 0;  ///< >= 0 (L2 penalty added to the gradient)
  bool nesterov = false;    ///< requires momentum > 0 and dampening == 0
};

/// g' = g + weight_decay p;  buf = g' on a parameter's first step, else momentum buf + (1 - dampening) g';
/// update d = nesterov ? g' + momentum buf : buf (d = g' without momentum);  p -= lr d.
/// State: "momentum_buffer" (only when momentum != 0).
class SGD : public Optimizer {
 public:
  /// ValueError naming the first invalid option (e.g. `SGD: invalid momentum; got -1, expected momentum >= 0`).
  SGD(std::vector<Tensor> params, const SGDOptions& options);
  void step() override;
  /// The hyper-parameters in effect (lr as lr()).
  SGDOptions options() const;

 protected:
  std::vector<HyperParam> hyper_params() const override;
  StateLayout check_hyper_params(std::span<const double> values) const override;
  void set_hyper_params(std::span<const double> values) noexcept override;

 private:
  SGDOptions options_;
};

}  // namespace unroll::optim
