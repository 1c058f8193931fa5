// Every op against PyTorch: forward values and input gradients for each case in tests/fixtures/ops.json
// (written by tools/make_fixtures.py), in float64 (to round-off) and float32; plus a float64 finite-
// difference gradcheck of each case, which covers broadcasting and size-1 dimensions. The op checklist
// closes itself: every public op declared in ops/*.hpp has cases (or a stated exemption), and the op map
// below and ops.json name the same ops.
#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <set>

#include "../support/fixtures.hpp"
#include "../support/public_ops.hpp"

using namespace unroll;
using nlohmann::json;
using OpFn = std::function<Tensor(const std::vector<Tensor>&, const json&)>;

namespace {
std::optional<double> opt(const json& p, const char* key) {
  return p.at(key).is_null() ? std::nullopt : std::optional<double>(p.at(key).get<double>());
}
std::vector<std::int64_t> ints(const json& p, const char* key) { return p.at(key).get<std::vector<std::int64_t>>(); }
// The optional trailing inputs of linear, layer_norm, conv1d and the fused steps: input i if the case has it.
Tensor opt_input(const std::vector<Tensor>& x, std::size_t i, bool present) { return present ? x.at(i) : Tensor(); }
// A fused step's b_hh and mask follow its `n` fixed inputs, each present when its param says so.
Tensor step_bias(const std::vector<Tensor>& x, const json& p, std::size_t n) { return opt_input(x, n, p.at("bias")); }
Tensor step_mask(const std::vector<Tensor>& x, const json& p, std::size_t n) {
  return opt_input(x, n + (p.at("bias").get<bool>() ? 1 : 0), p.at("mask"));
}

// linear_scan / log_linear_scan: the options from the case's params (tools/make_fixtures.py, _scan).
ScanOptions scan_options(const json& p) {
  ScanOptions o;
  o.reverse = p.at("reverse");
  if (!p.at("lengths").is_null()) o.lengths = ints(p, "lengths");
  if (!p.at("resets").is_null()) {
    const auto rows = p.at("resets").get<std::vector<std::vector<double>>>();
    std::vector<double> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    o.resets = tensor(flat, {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(rows.at(0).size())});
  }
  return o;
}

const std::map<std::string, OpFn>& ops() {
  static const std::map<std::string, OpFn> table = {
      {"add", [](auto& x, auto&) { return add(x[0], x[1]); }},
      {"sub", [](auto& x, auto&) { return sub(x[0], x[1]); }},
      {"mul", [](auto& x, auto&) { return mul(x[0], x[1]); }},
      {"div", [](auto& x, auto&) { return div(x[0], x[1]); }},
      {"add_scalar", [](auto& x, auto& p) { return x[0] + p.at("scalar").template get<double>(); }},
      {"sub_scalar", [](auto& x, auto& p) { return x[0] - p.at("scalar").template get<double>(); }},
      {"rsub_scalar", [](auto& x, auto& p) { return p.at("scalar").template get<double>() - x[0]; }},
      {"mul_scalar", [](auto& x, auto& p) { return x[0] * p.at("scalar").template get<double>(); }},
      {"div_scalar", [](auto& x, auto& p) { return x[0] / p.at("scalar").template get<double>(); }},
      {"rdiv_scalar", [](auto& x, auto& p) { return p.at("scalar").template get<double>() / x[0]; }},
      {"neg", [](auto& x, auto&) { return -x[0]; }},
      {"exp", [](auto& x, auto&) { return unroll::exp(x[0]); }},
      {"log", [](auto& x, auto&) { return unroll::log(x[0]); }},
      {"sqrt", [](auto& x, auto&) { return unroll::sqrt(x[0]); }},
      {"abs", [](auto& x, auto&) { return unroll::abs(x[0]); }},
      {"tanh", [](auto& x, auto&) { return unroll::tanh(x[0]); }},
      {"sigmoid", [](auto& x, auto&) { return sigmoid(x[0]); }},
      {"relu", [](auto& x, auto&) { return relu(x[0]); }},
      {"pow", [](auto& x, auto& p) { return unroll::pow(x[0], p.at("exponent").template get<double>()); }},
      {"softplus", [](auto& x, auto& p) { return softplus(x[0], p.at("beta"), p.at("threshold")); }},
      {"clamp", [](auto& x, auto& p) { return clamp(x[0], opt(p, "min"), opt(p, "max")); }},
      {"matmul", [](auto& x, auto&) { return matmul(x[0], x[1]); }},
      {"transpose", [](auto& x, auto& p) { return transpose(x[0], p.at("dim0"), p.at("dim1")); }},
      {"permute", [](auto& x, auto& p) { return permute(x[0], ints(p, "dims")); }},
      {"reshape", [](auto& x, auto& p) { return reshape(x[0], ints(p, "shape")); }},
      {"narrow", [](auto& x, auto& p) { return narrow(x[0], p.at("dim"), p.at("start"), p.at("length")); }},
      {"select", [](auto& x, auto& p) { return select(x[0], p.at("dim"), p.at("index")); }},
      {"slice", [](auto& x, auto& p) { return slice(x[0], p.at("dim"), p.at("start"), p.at("end"), p.at("step")); }},
      {"chunk", [](auto& x, auto& p) { return chunk(x[0], p.at("chunks"), p.at("dim")).at(p.at("index")); }},
      {"split", [](auto& x, auto& p) { return split(x[0], p.at("split_size"), p.at("dim")).at(p.at("index")); }},
      {"cat", [](auto& x, auto& p) { return cat(x, p.at("dim")); }},
      {"stack", [](auto& x, auto& p) { return stack(x, p.at("dim")); }},
      {"index_select", [](auto& x, auto& p) { return index_select(x[0], p.at("dim"), x[1]); }},
      {"embedding",
       [](auto& x, auto& p) {
         const auto pad = p.at("padding_idx");
         return embedding(x[0], x[1],
                          pad.is_null() ? std::nullopt : std::optional<std::int64_t>(pad.template get<std::int64_t>()));
       }},
      {"where", [](auto& x, auto&) { return where(x[0], x[1], x[2]); }},
      {"masked_fill", [](auto& x, auto& p) { return masked_fill(x[0], x[1], p.at("value")); }},
      {"sum", [](auto& x,
                 auto& p) { return p.at("dims").is_null() ? sum(x[0]) : sum(x[0], ints(p, "dims"), p.at("keepdim")); }},
      {"mean",
       [](auto& x, auto& p) {
         return p.at("dims").is_null() ? mean(x[0]) : mean(x[0], ints(p, "dims"), p.at("keepdim"));
       }},
      {"max",
       [](auto& x, auto& p) {
         return p.at("dim").is_null() ? unroll::max(x[0]) : unroll::max(x[0], p.at("dim"), p.at("keepdim"));
       }},
      {"softmax", [](auto& x, auto& p) { return softmax(x[0], p.at("dim")); }},
      {"log_softmax", [](auto& x, auto& p) { return log_softmax(x[0], p.at("dim")); }},
      {"cross_entropy",
       [](auto& x, auto& p) {
         return cross_entropy(x[0], x[1], parse_reduction(p.at("reduction").template get<std::string>()),
                              p.at("ignore_index"));
       }},
      {"nll_loss",
       [](auto& x, auto& p) {
         return nll_loss(x[0], x[1], parse_reduction(p.at("reduction").template get<std::string>()),
                         p.at("ignore_index"));
       }},
      {"mse_loss",
       [](auto& x, auto& p) {
         return mse_loss(x[0], x[1], parse_reduction(p.at("reduction").template get<std::string>()));
       }},
      {"unsqueeze", [](auto& x, auto& p) { return unsqueeze(x[0], p.at("dim")); }},
      {"squeeze", [](auto& x, auto& p) { return squeeze(x[0], p.at("dim")); }},
      {"linear", [](auto& x, auto& p) { return linear(x[0], x[1], opt_input(x, 2, p.at("bias"))); }},
      {"layer_norm",
       [](auto& x, auto& p) {
         const bool affine = p.at("affine");
         return layer_norm(x[0], p.at("norm_dims"), opt_input(x, 1, affine), opt_input(x, 2, affine), p.at("eps"));
       }},
      {"rnn_step",
       [](auto& x, auto& p) {
         const auto act = p.at("nonlinearity") == "relu" ? RnnActivation::relu : RnnActivation::tanh;
         return rnn_step(x[0], x[1], x[2], step_bias(x, p, 3), act, step_mask(x, p, 3));
       }},
      {"lstm_step",
       [](auto& x, auto& p) {
         auto [h, c] = lstm_step(x[0], x[1], x[2], x[3], step_bias(x, p, 4), step_mask(x, p, 4));
         return p.at("output") == "h" ? h : c;
       }},
      {"gru_step", [](auto& x, auto& p) { return gru_step(x[0], x[1], x[2], step_bias(x, p, 3), step_mask(x, p, 3)); }},
      {"logsigmoid", [](auto& x, auto&) { return logsigmoid(x[0]); }},
      {"silu", [](auto& x, auto&) { return silu(x[0]); }},
      {"gelu",
       [](auto& x, auto& p) {
         return gelu(x[0], p.at("approximate") == "tanh" ? GeluApproximation::tanh : GeluApproximation::none);
       }},
      {"logaddexp", [](auto& x, auto&) { return logaddexp(x[0], x[1]); }},
      {"cumsum", [](auto& x, auto& p) { return cumsum(x[0], p.at("dim")); }},
      {"logcumsumexp", [](auto& x, auto& p) { return logcumsumexp(x[0], p.at("dim")); }},
      {"conv1d", [](auto& x, auto& p) { return conv1d(x[0], x[1], opt_input(x, 2, p.at("bias"))); }},
      {"scaled_dot_product_attention",
       [](auto& x, auto& p) {
         AttentionOptions o;
         o.is_causal = p.at("causal").template get<bool>();
         if (!p.at("scale").is_null()) o.scale = p.at("scale").template get<double>();
         return scaled_dot_product_attention(x[0], x[1], x[2], o);
       }},
      {"linear_scan",
       [](auto& x, auto& p) { return linear_scan(x[0], x[1], opt_input(x, 2, p.at("h0")), scan_options(p)); }},
      {"log_linear_scan",
       [](auto& x, auto& p) { return log_linear_scan(x[0], x[1], opt_input(x, 2, p.at("h0")), scan_options(p)); }},
  };
  return table;
}

// Runs one case in `dtype`: inputs with a gradient in the fixture require grad (masks/conditions and
// index tensors stay constant); returns the output and the input gradients.
std::pair<Tensor, std::vector<Tensor>> run_case(const json& c, Dtype dtype) {
  std::vector<Tensor> inputs;
  for (std::size_t i = 0; i < c.at("inputs").size(); ++i) {
    Tensor t = test_support::to_tensor(c["inputs"][i], dtype);
    if (!c["grads"][i].is_null()) t.requires_grad_();
    inputs.push_back(t);
  }
  Tensor out = ops().at(c.at("op"))(inputs, c.at("params"));
  out.backward(test_support::to_tensor(c.at("grad_output"), dtype));
  std::vector<Tensor> grads;
  for (const Tensor& t : inputs) grads.push_back(t.grad());
  return {out, grads};
}

// Public functions in ops/*.hpp that need no case in ops.json, each with the reason. Keep it short: an op
// with a gradient that PyTorch can compute belongs in tools/make_fixtures.py instead.
const std::map<std::string, std::string>& exempt_ops() {
  static const std::map<std::string, std::string> table = {
      {"argmax", "int64 result, no gradient"},
      {"parse_reduction", "not an op: parses a reduction's name (tests/ops/test_errors.cpp)"},
      {"add_", "in place and not recorded, no gradient (tests/ops/test_elementwise.cpp)"},
      {"mul_", "in place and not recorded, no gradient (tests/ops/test_elementwise.cpp)"},
      {"clamp_", "in place and not recorded, no gradient (tests/ops/test_elementwise.cpp)"},
      {"copy_", "in place and not recorded, no gradient (tests/ops/test_elementwise.cpp)"},
      {"dropout", "its random mask is not PyTorch's; eval, scaling, statistics, gradient: tests/ops/test_errors.cpp"},
      {"to", "a dtype cast, and a case runs in one dtype; its float32 gradient in tests/ops/test_errors.cpp"},
  };
  return table;
}

std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace

TEST_SUITE("ops/reference") {
  TEST_CASE("every op matches PyTorch: values and gradients, float64 and float32") {
    const json fixture = test_support::load_fixture("ops.json");
    REQUIRE(fixture.at("cases").size() > 150);
    for (const json& c : fixture.at("cases")) {
      const std::string name = c.at("name");
      REQUIRE_MESSAGE(ops().count(c.at("op")), "no unroll op for fixture op ", c.at("op"));
      for (const auto& [dtype, atol, rtol] :
           {std::tuple{Dtype::float64, 1e-12, 1e-10}, std::tuple{Dtype::float32, 1e-5, 1e-4}}) {
        CAPTURE(name);
        CAPTURE(dtype);
        auto [out, grads] = run_case(c, dtype);
        CHECK(out.dtype() == dtype);
        CHECK_MESSAGE(test_support::tolerance_ratio(out, test_support::to_tensor(c.at("output")), atol, rtol) <= 1.0,
                      name, " output ", out);
        for (std::size_t i = 0; i < grads.size(); ++i) {
          if (c["grads"][i].is_null()) continue;
          CHECK_MESSAGE(
              test_support::tolerance_ratio(grads[i], test_support::to_tensor(c["grads"][i]), atol, rtol) <= 1.0, name,
              " grad of input ", i, ": ", grads[i]);
        }
      }
    }
  }

  TEST_CASE("every op passes a float64 finite-difference gradcheck") {
    const json fixture = test_support::load_fixture("ops.json");
    for (const json& c : fixture.at("cases")) {
      const std::string name = c.at("name");
      // PyTorch's padding_idx deliberately zeroes a real gradient: finite differences cannot agree there.
      if (c.at("op") == "embedding" && !c["params"]["padding_idx"].is_null()) continue;
      std::vector<Tensor> inputs;
      for (std::size_t i = 0; i < c.at("inputs").size(); ++i) {
        Tensor t = test_support::to_tensor(c["inputs"][i]);
        if (!c["grads"][i].is_null()) t.requires_grad_();
        inputs.push_back(t);
      }
      const auto params = c.at("params");
      const auto& fn = ops().at(c.at("op"));
      auto result = autograd::gradcheck(
          name, [&](const std::vector<Tensor>& x) { return fn(x, params); }, inputs);
      CHECK_MESSAGE(result.ok, result.message);
    }
  }

  // A fixture op is named after the function it runs; "<f>_scalar" is f's tensor-scalar overload (add_scalar is
  // add(x, s)). The check is per name, so one case covers every overload of a function (sum(x), sum(x, dims)).
  TEST_CASE("op checklist: every public op in ops/*.hpp has a PyTorch case in ops.json, or a stated exemption") {
    const auto declared = test_support::public_functions_in(UNROLL_OPS_DIR);
    // The scanner read the headers (a wrong directory or a scanner that finds nothing must not pass).
    REQUIRE(declared.size() >= 40);
    REQUIRE(declared.count("matmul"));
    REQUIRE(declared.count("lstm_step"));

    const json fixture = test_support::load_fixture("ops.json");
    std::set<std::string> fixture_ops;
    for (const json& c : fixture.at("cases")) fixture_ops.insert(c.at("op").get<std::string>());
    auto function_of = [](const std::string& op) {
      const std::string suffix = "_scalar";
      return op.ends_with(suffix) ? op.substr(0, op.size() - suffix.size()) : op;
    };
    std::set<std::string> covered;
    for (const std::string& op : fixture_ops) covered.insert(function_of(op));

    std::set<std::string> missing, stale, exempt_but_covered, unknown_fixture_ops;
    for (const auto& [f, header] : declared)
      if (!covered.count(f) && !exempt_ops().count(f)) missing.insert(f + " (ops/" + header + ")");
    for (const auto& [f, why] : exempt_ops()) {
      if (!declared.count(f)) stale.insert(f);
      if (covered.count(f)) exempt_but_covered.insert(f);
    }
    for (const std::string& op : fixture_ops)
      if (!declared.count(function_of(op))) unknown_fixture_ops.insert(op);

    CHECK_MESSAGE(missing.empty(), "public ops without a PyTorch fixture case: ", joined(missing),
                  ". Add cases to tools/make_fixtures.py (OPS and the case table, appended at its end), regenerate "
                  "tests/fixtures/ops.json with `/usr/bin/python3 tools/make_fixtures.py`, and add the op to ops() in "
                  "tests/ops/test_reference.cpp; only an op without a gradient, or one PyTorch cannot reproduce, goes "
                  "in exempt_ops() there instead, with the reason");
    CHECK_MESSAGE(stale.empty(),
                  "exempt_ops() in tests/ops/test_reference.cpp names functions no header in ops/ "
                  "declares: ",
                  joined(stale), ". Remove them");
    CHECK_MESSAGE(exempt_but_covered.empty(),
                  "exempt_ops() in tests/ops/test_reference.cpp names ops that have fixture "
                  "cases: ",
                  joined(exempt_but_covered), ". Remove them from exempt_ops()");
    CHECK_MESSAGE(unknown_fixture_ops.empty(),
                  "tests/fixtures/ops.json has cases for ops no header in ops/ declares: ", joined(unknown_fixture_ops),
                  ". Name a fixture op after the function it runs (or <function>_scalar)");
  }

  TEST_CASE("op checklist: ops() here and the cases in ops.json name the same ops") {
    const json fixture = test_support::load_fixture("ops.json");
    std::set<std::string> fixture_ops, mapped;
    for (const json& c : fixture.at("cases")) fixture_ops.insert(c.at("op").get<std::string>());
    for (const auto& [op, fn] : ops()) mapped.insert(op);
    std::set<std::string> unmapped, without_cases;
    for (const std::string& op : fixture_ops)
      if (!mapped.count(op)) unmapped.insert(op);
    for (const std::string& op : mapped)
      if (!fixture_ops.count(op)) without_cases.insert(op);
    CHECK_MESSAGE(unmapped.empty(),
                  "tests/fixtures/ops.json has cases for ops that ops() in "
                  "tests/ops/test_reference.cpp does not run: ",
                  joined(unmapped), ". Add them to ops()");
    CHECK_MESSAGE(without_cases.empty(),
                  "ops() in tests/ops/test_reference.cpp maps ops that no case in "
                  "tests/fixtures/ops.json uses: ",
                  joined(without_cases),
                  ". Add cases to tools/make_fixtures.py and regenerate ops.json (or remove the entry)");
  }

  TEST_CASE("op checklist: the header scanner finds the free functions of namespace unroll and nothing else") {
    const std::string header = R"(#pragma once
#include <vector>  // Tensor not_a_declaration(int);
#define UNROLL_DECLARE(name) Tensor name(const Tensor&); \
  Tensor name##_too(const Tensor&);
// Tensor commented_out(const Tensor& x);
namespace unroll {
enum class Mode { a, b };
/// x -> y; a comment with ( and {
Tensor plain(const Tensor& x, const Tensor& b = {}, char c = '{', const char* s = ")};");
std::pair<Tensor, Tensor> multi_line(const Tensor& x,
                                     std::int64_t n = count(1));
inline Tensor operator+(const Tensor& a, const Tensor& b) { return plain(a, b); }
inline Tensor with_body(const Tensor& x) { if (x.defined()) { return x; } return x; }
template <class F> Tensor templated(F f);
class Thing {
 public:
  Thing(int) {}
  static Thing make(int n);
  void member() const;
};
struct Plain { int a = 0; std::int64_t b = 1'000; };
inline constexpr std::int64_t kConstant = compute(3);
using Callback = void (*)(int);
namespace detail {
Tensor internal(const Tensor& x);
}  // namespace detail
/* Tensor block_commented(); */
}  // namespace unroll
namespace unroll::detail { Tensor internal_too(); }
namespace other { Tensor elsewhere(); }
namespace { Tensor anonymous(); }
)";
    const std::set<std::string> expected = {"multi_line", "plain", "templated", "with_body"};
    CHECK(test_support::public_functions(header) == expected);
  }
}
