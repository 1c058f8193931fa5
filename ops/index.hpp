#pragma once
// Gathering rows by integer index: index_select and embedding lookup. Backward scatter-adds, so
// repeated indices accumulate.
#include <cstdint>
#include <optional>

#include "../core/tensor.hpp"

namespace unroll {

/// Entries idx[0], idx[1], ... of x along dim (idx: 1-D int64).  x [.., n, ..] -> [.., len(idx), ..].
Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& idx);
/// Rows of weight [V, D] for each index (idx: int64 of any shape) -> idx.shape + [D]. Rows equal to
/// padding_idx get no gradient (as PyTorch).
Tensor embedding(const Tensor& weight, const Tensor& idx, std::optional<std::int64_t> padding_idx = std::nullopt);

}  // namespace unroll
