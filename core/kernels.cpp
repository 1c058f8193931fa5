#include "kernels.hpp"

#include "parallel.hpp"

namespace unroll::detail {
void accumulate(Tensor& dst, const Tensor& src) {
  dispatch(dst.dtype(), [&]<class T>(T*) {
    T* __restrict d = static_cast<T*>(dst.raw());
    const T* __restrict s = static_cast<const T*>(src.raw());
    parallel_for(dst.numel(), kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) d[i] += s[i];
    });
  });
}
}  // namespace unroll::detail
