#pragma once
// Shape ops. Results are contiguous: reshape, and narrow/select/slice along a leading dimension, are
// views sharing storage (x[t] of a [T, B, F] tensor copies nothing); other rearrangements copy.
// Backward of a narrowing op adds into the matching region of the input's gradient buffer, so unrolling
// over x[t] costs O(size of x) in total, not O(T * size of x).
#include <cstdint>
#include <span>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll {

/// x -> the same elements in `shape` (one entry may be -1: inferred).
Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& shape);
/// [.., a, .., b, ..] -> [.., b, .., a, ..].
Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1);
/// Reorders dims: result dim d is x's dim dims[d].
Tensor permute(const Tensor& x, const std::vector<std::int64_t>& dims);
/// Elements [start, start + length) along dim.
Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length);
/// Elements start, start + step, ... before end along dim (Python slice semantics: negative start/end
/// count from the end and both are clamped to the dim).
Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step = 1);
/// Element `index` along dim, which is removed: [A, B, C] select(1, i) -> [A, C].
Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index);
/// Splits into `chunks` pieces along dim, each ceil(size / chunks) long (the last may be shorter).
std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim = 0);
/// Splits into pieces of `split_size` along dim (the last may be shorter).
std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim = 0);
/// Joins along an existing dim: sizes may differ only along dim.
Tensor cat(std::span<const Tensor> xs, std::int64_t dim);
Tensor cat(std::initializer_list<Tensor> xs, std::int64_t dim);
/// Joins equal shapes along a new dim: n x [A, B] stack(dim=1) -> [A, n, B].
Tensor stack(std::span<const Tensor> xs, std::int64_t dim);
Tensor stack(std::initializer_list<Tensor> xs, std::int64_t dim);
/// Adds a dim of size 1 at `dim` / removes a size-1 dim.
Tensor unsqueeze(const Tensor& x, std::int64_t dim);
Tensor squeeze(const Tensor& x, std::int64_t dim);

}  // namespace unroll
