#include "layers.hpp"

#include <cmath>

#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/linear.hpp"
#include "../ops/norm.hpp"
#include "init.hpp"

namespace unroll::nn {

Linear::Linear(std::int64_t in_features, std::int64_t out_features, bool with_bias, Dtype dtype) {
  UNROLL_CHECK(in_features >= 0 && out_features >= 0, ValueError,
               "Linear: sizes must not be negative; got in_features={} out_features={}", in_features, out_features);
  weight = Tensor::empty({out_features, in_features}, dtype);
  register_parameter("weight", weight);
  if (with_bias) {
    bias = Tensor::empty({out_features}, dtype);
    register_parameter("bias", bias);
  }
  reset_parameters();
}

// PyTorch: kaiming_uniform_(a = sqrt 5) for the weight, i.e. U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the
// bias.
void Linear::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const std::int64_t fan_in = weight.shape()[1];
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

Embedding::Embedding(std::int64_t num_embeddings, std::int64_t embedding_dim, std::optional<std::int64_t> pad,
                     Dtype dtype) {
  UNROLL_CHECK(num_embeddings >= 0 && embedding_dim >= 0, ValueError,
               "Embedding: sizes must not be negative; got num_embeddings={} embedding_dim={}", num_embeddings,
               embedding_dim);
  if (pad) {
    UNROLL_CHECK(*pad >= -num_embeddings && *pad < num_embeddings, ValueError,
                 "Embedding: padding_idx out of range; got {}, expected -{} <= padding_idx < {}", *pad, num_embeddings,
                 num_embeddings);
    padding_idx = *pad < 0 ? *pad + num_embeddings : *pad;
  }
  weight = Tensor::empty({num_embeddings, embedding_dim}, dtype);
  register_parameter("weight", weight);
  reset_parameters();
}

void Embedding::reset_parameters() {
  init::normal_(weight);
  if (padding_idx) {
    dispatch_floating("Embedding", weight.dtype(), [&]<class T>(T*) {
      const std::int64_t d = weight.shape()[1];
      std::fill_n(weight.data<T>() + *padding_idx * d, d, T(0));
    });
  }
}

Tensor Embedding::forward(const Tensor& indices) const { return embedding(weight, indices, padding_idx); }

Dropout::Dropout(double p_) : p(p_) {
  UNROLL_CHECK(p >= 0 && p <= 1, ValueError, "Dropout: probability out of range; got p={}, expected 0 <= p <= 1", p);
}

Tensor Dropout::forward(const Tensor& x) const {
  return dropout(x, p, is_training(), generator ? *generator : default_generator());
}

LayerNorm::LayerNorm(std::vector<std::int64_t> shape, double eps_, bool elementwise_affine, Dtype dtype)
    : normalized_shape(std::move(shape)), eps(eps_) {
  UNROLL_CHECK(!normalized_shape.empty(), ValueError,
               "LayerNorm: normalized_shape is empty; got [], expected at least one dim");
  if (elementwise_affine) {
    weight = Tensor::empty(Shape(normalized_shape), dtype);
    bias = Tensor::empty(Shape(normalized_shape), dtype);
    register_parameter("weight", weight);
    register_parameter("bias", bias);
  }
  reset_parameters();
}

void LayerNorm::reset_parameters() {
  if (weight.defined()) init::ones_(weight);
  if (bias.defined()) init::zeros_(bias);
}

Tensor LayerNorm::forward(const Tensor& x) const {
  const int n = static_cast<int>(normalized_shape.size());
  UNROLL_CHECK(x.dim() >= n && x.shape().tail(x.dim() - n) == Shape(normalized_shape), ShapeError,
               "LayerNorm: input does not end in the normalised shape; got x={}, expected [..., {}]", x.shape(),
               fmt::join(normalized_shape, ", "));
  return layer_norm(x, n, weight, bias, eps);
}

}  // namespace unroll::nn
