#include "anomaly.hpp"

#include <cmath>
#include <cstdint>

namespace unroll::autograd {

DetectAnomaly::DetectAnomaly(bool on) : prev_(detect_anomaly_enabled()) { set_detect_anomaly(on); }
DetectAnomaly::~DetectAnomaly() { set_detect_anomaly(prev_); }
void set_detect_anomaly(bool on) { detail::anomaly_on.store(on, std::memory_order_relaxed); }
bool detect_anomaly_enabled() { return detail::anomaly_checks(); }
}  // namespace unroll::autograd

namespace unroll::detail {
namespace {
struct BadCount {
  std::int64_t nan = 0;
  std::int64_t inf = 0;
  std::int64_t first = -1;  // flat index of the first bad element
};

BadCount count_bad(const Tensor& t) {
  BadCount c;
  if (!t.defined() || !is_floating(t.dtype())) return c;
  dispatch(t.dtype(), [&]<class T>(T*) {
    if constexpr (std::is_floating_point_v<T>) {
      const T* p = static_cast<const T*>(t.raw());
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        if (std::isfinite(p[i])) [[likely]]
          continue;
        if (c.first < 0) c.first = i;
        ++(std::isnan(p[i]) ? c.nan : c.inf);
      }
    }
  });
  return c;
}
}  // namespace

void AnomalyWhere::set(std::string where) {
  where_ = std::make_shared<const std::string>(std::move(where));
  if (!set_) prev_ = tls_anomaly_where;
  set_ = true;
  tls_anomaly_where = &where_;
}

void check_outputs(const char* op, std::span<Tensor* const> outputs) {
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const BadCount c = count_bad(*outputs[k]);
    UNROLL_CHECK(c.first < 0, NonFiniteError,
                 "{}: non-finite output (anomaly detection); got {} of {} elements non-finite ({} nan, {} inf; the "
                 "first at flat index {}) in output {} of shape {}, expected all finite",
                 op, c.nan + c.inf, outputs[k]->numel(), c.nan, c.inf, c.first, k, outputs[k]->shape());
  }
}

void check_gradient(const char* op, std::size_t input, const Tensor& g, const char* what) {
  const BadCount c = count_bad(g);
  UNROLL_CHECK(c.first < 0, NonFiniteError,
               "backward of {}: non-finite {} for input {} (anomaly detection); got {} of {} elements non-finite ({} "
               "nan, {} inf; the first at flat index {}) in shape {}, expected all finite",
               op, what, input, c.nan + c.inf, g.numel(), c.nan, c.inf, c.first, g.shape());
}
}  // namespace unroll::detail
