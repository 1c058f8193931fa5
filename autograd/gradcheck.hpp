#pragma once
// Finite-difference check of analytic gradients, in float64.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   ///< central-difference step
  double atol = 1e-6;  ///< pass when |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-5;
  std::uint64_t seed = 1234;  ///< for the random projection of the output (see gradcheck)
};

/// The worst element found: which input, where (a multi-index; for a [T, ...] input its first entry is the
/// time step), and both derivatives.
struct GradcheckResult {
  bool ok = true;
  std::string name;
  std::size_t input = 0;
  std::vector<std::int64_t> index;
  double analytic = 0, numeric = 0, error = 0;  ///< error: |analytic - numeric| / (atol + rtol * |numeric|)
  std::string message;                          ///< one line naming all of the above
};

/// Checks d(sum(f(inputs) * w))/d(input) for every element of every float64 input that requires grad,
/// against central differences, with w a fixed random tensor (so errors a plain sum would cancel show up).
/// `name` labels the report. Inputs that do not require grad are held constant.
GradcheckResult gradcheck(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace unroll::autograd
