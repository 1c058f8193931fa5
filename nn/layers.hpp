#pragma once
// Basic layers with PyTorch's parameter names, shapes and default initialisation.
#include <cstdint>
#include <optional>
#include <vector>

#include "../core/random.hpp"
#include "module.hpp"

namespace unroll::nn {

/// y = x W^T + b.  x [..., in] -> [..., out].  weight [out, in], bias [out]; both U(-1/sqrt(in), 1/sqrt(in)).
class Linear : public Module {
 public:
  Linear(std::int64_t in_features, std::int64_t out_features, bool bias = true, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  void reset_parameters();

  Tensor weight, bias;  ///< bias undefined when constructed with bias = false
};

/// Rows of weight [num_embeddings, dim] for int64 indices of any shape -> indices.shape + [dim].
/// weight ~ N(0, 1); the padding_idx row (if any) is zero and gets no gradient.
class Embedding : public Module {
 public:
  Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim,
            std::optional<std::int64_t> padding_idx = std::nullopt, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& indices) const;
  Tensor operator()(const Tensor& indices) const { return forward(indices); }
  void reset_parameters();

  Tensor weight;
  std::optional<std::int64_t> padding_idx;  ///< normalised to [0, num_embeddings)
};

/// Inverted dropout while training (is_training()), identity in eval mode.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  double p;
  Generator* generator = nullptr;  ///< null: the thread's default generator
};

/// Normalises over the trailing `normalized_shape` dims; weight ones, bias zeros (when elementwise_affine).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(std::vector<std::int64_t> normalized_shape, double eps = 1e-5, bool elementwise_affine = true,
                     Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  void reset_parameters();

  Tensor weight, bias;
  std::vector<std::int64_t> normalized_shape;
  double eps;
};

}  // namespace unroll::nn
