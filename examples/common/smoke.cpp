#include "smoke.hpp"

#include <fmt/format.h>

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

}  // namespace unroll::examples
