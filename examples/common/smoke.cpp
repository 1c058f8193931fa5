#include "smoke.hpp"

#include <fmt/format.h>

#include "error.hpp"

namespace unroll::examples {

std::string LossFall::detail() const {
  return fmt::format("got {:.4g} at the end, expected below {} x {:.4g} ({})", last, factor, first, first_what);
}

int check_loss_fell(std::string_view program, bool smoke, bool fell, std::string_view detail, std::string_view hint,
                    std::FILE* err) {
  if (fell) return 0;
  if (smoke) {
    fmt::print(err, "{}: the loss did not fall; {}\n", program, detail);
    return 1;
  }
  fmt::print(err, "{}: warning: the loss did not fall; {}; {}\n", program, detail, hint);
  return 0;
}

int check_loss_fell(std::string_view program, bool smoke, const LossFall& loss, std::string_view hint, std::FILE* err) {
  return check_loss_fell(program, smoke, loss.fell(), loss.detail(), hint, err);
}

std::string locate_non_finite(nn::Module& model, const std::function<Tensor()>& loss) {
  model.zero_grad();
  std::string where;
  {
    const autograd::DetectAnomaly anomaly;
    try {
      loss().backward();
    } catch (const NonFiniteError& e) {
      where = e.what();
    }
  }
  model.zero_grad();
  return where;
}

void DivergenceWatch::check(std::int64_t step, double loss, const std::function<std::string()>& locate) {
  if (!std::isfinite(loss)) {
    const std::string where = locate ? locate() : std::string();
    ::unroll::detail::throw_error<examples::DivergedError>(
        "{}: training diverged at step {}; got loss {}, expected a finite loss{}; {}", o_.program, step, loss,
        where.empty() ? std::string() : fmt::format(" (the step run again stops at: {})", where), o_.hint);
  }
  above_ = loss > o_.ceiling ? above_ + 1 : 0;
  UNROLL_CHECK(above_ < o_.patience, examples::DivergedError,
               "{}: training diverged at step {}; got loss {:.4g} for {} checks in a row, expected below {:.4g} (the "
               "loss of a uniform prediction); {}",
               o_.program, step, loss, above_, o_.ceiling, o_.hint);
}

}  // namespace unroll::examples
