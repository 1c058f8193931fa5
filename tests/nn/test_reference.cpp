// Every nn layer and cell against PyTorch: tools/make_nn_fixtures.py saves PyTorch's state dict, inputs,
// outputs and gradients (inputs, initial states, every parameter); here the state dict is loaded into the
// unroll module and everything is recomputed, in float64 (to 1e-10) and float32 (1e-5 abs, 1e-4 rel).
#include <doctest/doctest.h>

#include <map>
#include <memory>

#include <unroll/core/blas.hpp>
#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;

namespace {

// A module built from a fixture's config, with a uniform way to run it: named inputs -> named outputs.
struct Built {
  std::unique_ptr<nn::Module> module;
  std::function<std::map<std::string, Tensor>(const std::map<std::string, Tensor>&, const json& inputs)> run;
};

Tensor get(const std::map<std::string, Tensor>& m, const std::string& k) {
  auto it = m.find(k);
  return it == m.end() ? Tensor() : it->second;
}

nn::RecurrentOptions recurrent_options(const json& c, Dtype dtype) {
  nn::RecurrentOptions o;
  o.input_size = c.at("input_size");
  o.hidden_size = c.at("hidden_size");
  o.num_layers = c.at("num_layers");
  o.bias = c.at("bias");
  o.batch_first = c.at("batch_first");
  o.bidirectional = c.at("bidirectional");
  o.dropout = c.at("dropout");
  o.nonlinearity = c.value("nonlinearity", "tanh") == "relu" ? RnnActivation::relu : RnnActivation::tanh;
  o.dtype = dtype;
  return o;
}

std::vector<std::int64_t> lengths_of(const json& inputs) {
  return inputs.contains("lengths") ? inputs.at("lengths").get<std::vector<std::int64_t>>()
                                    : std::vector<std::int64_t>{};
}

Built build(const std::string& kind, const json& c, Dtype dtype) {
  Built b;
  auto act = [&] { return c.value("nonlinearity", "tanh") == "relu" ? RnnActivation::relu : RnnActivation::tanh; };
  if (kind == "RNN" || kind == "GRU") {
    b.module =
        std::unique_ptr<nn::Module>(kind == "RNN" ? static_cast<nn::Module*>(new nn::RNN(recurrent_options(c, dtype)))
                                                  : static_cast<nn::Module*>(new nn::GRU(recurrent_options(c, dtype))));
    auto* mod = static_cast<nn::RecurrentLayer*>(b.module.get());
    b.run = [mod, kind](const std::map<std::string, Tensor>& in, const json& j) {
      nn::RecurrentOutput r = kind == "RNN"
                                  ? static_cast<nn::RNN*>(mod)->forward(get(in, "x"), get(in, "h0"), lengths_of(j))
                                  : static_cast<nn::GRU*>(mod)->forward(get(in, "x"), get(in, "h0"), lengths_of(j));
      return std::map<std::string, Tensor>{{"output", r.output}, {"h_n", r.h_n}};
    };
  } else if (kind == "LSTM") {
    auto* m = new nn::LSTM(recurrent_options(c, dtype));
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json& j) {
      auto r = m->forward(get(in, "x"), get(in, "h0"), get(in, "c0"), lengths_of(j));
      return std::map<std::string, Tensor>{{"output", r.output}, {"h_n", r.h_n}, {"c_n", r.c_n}};
    };
  } else if (kind == "RNNCell") {
    auto* m = new nn::RNNCell(c.at("input_size"), c.at("hidden_size"), c.at("bias"), act(), dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      return std::map<std::string, Tensor>{{"h", m->forward(get(in, "x"), get(in, "h0"))}};
    };
  } else if (kind == "GRUCell") {
    auto* m = new nn::GRUCell(c.at("input_size"), c.at("hidden_size"), c.at("bias"), dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      return std::map<std::string, Tensor>{{"h", m->forward(get(in, "x"), get(in, "h0"))}};
    };
  } else if (kind == "LSTMCell") {
    auto* m = new nn::LSTMCell(c.at("input_size"), c.at("hidden_size"), c.at("bias"), dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      auto [h, cc] = m->forward(get(in, "x"), get(in, "h0"), get(in, "c0"));
      return std::map<std::string, Tensor>{{"h", h}, {"c", cc}};
    };
  } else if (kind == "Linear") {
    auto* m = new nn::Linear(c.at("in_features"), c.at("out_features"), c.at("bias"), dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      return std::map<std::string, Tensor>{{"y", m->forward(get(in, "x"))}};
    };
  } else if (kind == "Embedding") {
    std::optional<std::int64_t> pad;
    if (!c.at("padding_idx").is_null()) pad = c.at("padding_idx").get<std::int64_t>();
    auto* m = new nn::Embedding(c.at("num_embeddings"), c.at("embedding_dim"), pad, dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      return std::map<std::string, Tensor>{{"y", m->forward(get(in, "indices"))}};
    };
  } else if (kind == "LayerNorm") {
    auto* m = new nn::LayerNorm(c.at("normalized_shape").get<std::vector<std::int64_t>>(), c.at("eps"),
                                c.at("elementwise_affine"), dtype);
    b.module.reset(m);
    b.run = [m](const std::map<std::string, Tensor>& in, const json&) {
      return std::map<std::string, Tensor>{{"y", m->forward(get(in, "x"))}};
    };
  } else {
    FAIL("unknown module in fixture: " << kind);
  }
  return b;
}

void run_case(const json& c, Dtype dtype, double atol, double rtol) {
  const std::string name = c.at("name");
  const std::string kind = c.at("module");
  CAPTURE(name);
  CAPTURE(dtype);
  Built b = build(kind, c.at("config"), dtype);

  // Parameter names and order match PyTorch's state dict.
  std::vector<std::string> ours;
  for (const auto& [n, t] : b.module->state_dict()) ours.push_back(n);
  CHECK(ours == c.at("state_dict_order").get<std::vector<std::string>>());

  StateDict sd;
  for (const auto& n : c.at("state_dict_order"))
    sd.insert(n, test_support::to_tensor(c.at("state_dict").at(n.get<std::string>())));
  b.module->load_state_dict(sd);

  std::map<std::string, Tensor> inputs;
  for (const auto& [k, v] : c.at("inputs").items()) {
    if (k == "lengths") continue;
    Tensor t = test_support::to_tensor(v, dtype);
    if (is_floating(t.dtype())) t.requires_grad_();
    inputs[k] = t;
  }
  const auto outputs = b.run(inputs, c.at("inputs"));

  Tensor loss = zeros({}, dtype);
  for (const auto& [k, expected] : c.at("outputs").items()) {
    CAPTURE(k);
    const Tensor got = get(outputs, k);
    REQUIRE(got.defined());
    CHECK(test_support::tolerance_ratio(to(got, Dtype::float64), test_support::to_tensor(expected), atol, rtol) <= 1.0);
    loss = loss + sum(got * test_support::to_tensor(c.at("grad_outputs").at(k), dtype));
  }
  loss.backward();

  const StateDict params = b.module->named_parameters();
  for (const auto& [k, expected] : c.at("grads").items()) {
    CAPTURE(k);
    Tensor g = inputs.count(k) ? inputs[k].grad() : params.at(k).grad();
    REQUIRE(g.defined());
    CHECK(test_support::tolerance_ratio(convert(g, Dtype::float64), test_support::to_tensor(expected), atol, rtol) <=
          1.0);
  }
}

}  // namespace

TEST_SUITE("nn/reference") {
  TEST_CASE("every layer and cell reproduces PyTorch's outputs and gradients (float64 and float32)") {
    const json fixture = test_support::load_fixture("nn.json");
    REQUIRE(fixture.at("cases").size() >= 100);
    std::map<std::string, int> seen;
    for (const json& c : fixture.at("cases")) {
      run_case(c, Dtype::float64, 1e-10, 1e-10);
      run_case(c, Dtype::float32, 1e-5, 1e-4);
      ++seen[c.at("module").get<std::string>()];
    }
    for (const char* m : {"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "Linear", "Embedding", "LayerNorm"})
      CHECK_MESSAGE(seen[m] > 0, m);
  }

  TEST_CASE("the sequence layers reproduce PyTorch with weight_hh packed (gemm_packed) at every size") {
    // The fixtures' sizes are small, so their products run the inline kernel and the layers do not pack
    // weight_hh. With both thresholds at 0 every product counts as a BLAS one and every layer packs.
    struct Thresholds {
      std::int64_t work = unroll::detail::kSmallGemmWork, rows = unroll::detail::kSmallGemmRows;
      Thresholds() { unroll::detail::kSmallGemmWork = 0, unroll::detail::kSmallGemmRows = 0; }
      ~Thresholds() { unroll::detail::kSmallGemmWork = work, unroll::detail::kSmallGemmRows = rows; }
    } all_to_blas;
    const json fixture = test_support::load_fixture("nn.json");
    int layers = 0;
    for (const json& c : fixture.at("cases")) {
      const std::string m = c.at("module").get<std::string>();
      if (m != "RNN" && m != "LSTM" && m != "GRU") continue;
      run_case(c, Dtype::float64, 1e-10, 1e-10);
      run_case(c, Dtype::float32, 1e-5, 1e-4);
      ++layers;
    }
    CHECK(layers >= 80);
  }
}
