#pragma once
// Reading the PyTorch reference fixtures written by tools/make_fixtures.py.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include <unroll/unroll.hpp>

namespace test_support {

inline nlohmann::json load_fixture(const std::string& file) {
  const std::string path = std::string(UNROLL_FIXTURE_DIR) + "/" + file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path + " (regenerate with tools/make_fixtures.py)");
  return nlohmann::json::parse(in);
}

/// {"shape": [...], "dtype": "...", "data": [...]} -> Tensor (floating data as `float_dtype`).
inline unroll::Tensor to_tensor(const nlohmann::json& j, unroll::Dtype float_dtype = unroll::Dtype::float64) {
  const unroll::Shape shape(j.at("shape").get<std::vector<std::int64_t>>());
  if (j.at("dtype") == "int64") {
    const auto v = j.at("data").get<std::vector<std::int64_t>>();
    return unroll::index_tensor(v, shape);
  }
  const auto v = j.at("data").get<std::vector<double>>();
  return unroll::tensor(v, shape, float_dtype);
}

/// A float64 leaf that requires grad, N(0, scale²) from `gen` (the usual gradcheck input).
inline unroll::Tensor random_leaf(const unroll::Shape& shape, unroll::Generator& gen, double scale = 0.5) {
  return unroll::randn(shape, unroll::Dtype::float64, gen, 0.0, scale).requires_grad_();
}

/// Largest |a - b| / (atol + rtol |b|) over all elements (> 1 means outside tolerance); shapes must match.
inline double tolerance_ratio(const unroll::Tensor& a, const unroll::Tensor& b, double atol, double rtol) {
  if (!(a.shape() == b.shape())) return INFINITY;
  const auto va = a.to_vector(), vb = b.to_vector();
  double worst = 0;
  for (std::size_t i = 0; i < va.size(); ++i) {
    const double r = std::abs(va[i] - vb[i]) / (atol + rtol * std::abs(vb[i]));
    if (!(r <= worst)) worst = r;  // NaN-safe
  }
  return worst;
}

}  // namespace test_support
