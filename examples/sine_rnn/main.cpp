// sine_rnn: the smallest complete recurrent training program. An Elman RNN composed from primitives,
// h_t = tanh(x_t W + h_{t-1} U + b), y_t = h_t V + c, learns to predict the next value of a noisy sine
// wave, trained with truncated backpropagation through time (carry h across windows, detach it) and plain
// SGD. It prints the training loss falling and ends with the loss of a fresh window.
//
//   sine_rnn [--steps N] [--hidden H] [--window T] [--lr LR] [--seed S] [--smoke] [--help]
#include <cmath>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/smoke.hpp"

using namespace unroll;

namespace {
constexpr const char* kProgram = "sine_rnn";

struct Options {
  std::int64_t steps = 1500, hidden = 32, window = 25;
  double lr = 0.05;
  std::uint64_t seed = 7;
  bool smoke = false;
};

// The series: sin(0.1 t) + 0.5 sin(0.31 t) + small noise, as a [n, 1, 1] tensor (time, batch, feature).
Tensor make_series(std::int64_t n, Generator& gen) {
  std::vector<double> v = randn({n}, Dtype::float32, gen, 0.0, 0.02).to_vector();  // the noise, then the waves
  for (std::int64_t t = 0; t < n; ++t) v[static_cast<std::size_t>(t)] += std::sin(0.1 * t) + 0.5 * std::sin(0.31 * t);
  return tensor(v, {n, 1, 1});
}

int run(const Options& o) {
  Generator gen(o.seed);
  const std::int64_t H = o.hidden, T = o.window;
  const double s = 1.0 / std::sqrt(static_cast<double>(H));  // PyTorch's RNN initialisation bound
  Tensor W = uniform({1, H}, -s, s, Dtype::float32, gen).requires_grad_();
  Tensor U = uniform({H, H}, -s, s, Dtype::float32, gen).requires_grad_();
  Tensor b = uniform({H}, -s, s, Dtype::float32, gen).requires_grad_();
  Tensor V = uniform({H, 1}, -s, s, Dtype::float32, gen).requires_grad_();
  Tensor c = uniform({1}, -s, s, Dtype::float32, gen).requires_grad_();
  std::vector<Tensor*> params = {&W, &U, &b, &V, &c};

  const std::int64_t length = 20000;
  const Tensor series = make_series(length + 1, gen);
  Tensor h = zeros({1, H});
  std::int64_t pos = 0;
  double running = 0, first = 0;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    if (pos + T + 1 > length) pos = 0, h = zeros({1, H});
    // Forward over one window: the tape records the loop; backward is BPTT over it.
    Tensor loss = zeros({});
    for (std::int64_t t = 0; t < T; ++t) {
      h = tanh(matmul(series[pos + t], W) + matmul(h, U) + b);
      loss = loss + mse_loss(matmul(h, V) + c, series[pos + t + 1]);
    }
    loss = loss / static_cast<double>(T);
    loss.backward();
    {
      NoGradGuard no_grad;
      for (Tensor* p : params) {
        add_(*p, p->grad(), -o.lr);
        p->zero_grad();
      }
    }
    h = h.detach();  // truncated BPTT: keep the state, cut the graph
    pos += T;
    running = step == 1 ? loss.item() : 0.95 * running + 0.05 * loss.item();
    if (step == 1) first = running;
    if (step % 100 == 0 || step == 1) fmt::print("step {:5d}  loss {:.5f}\n", step, running);
  }
  // Evaluate on a window the model has not been trained on, from a fresh state.
  NoGradGuard no_grad;
  const Tensor test = make_series(2 * T + 1, gen);
  Tensor hv = zeros({1, H});
  double mse = 0;
  for (std::int64_t t = 0; t < 2 * T; ++t) {
    hv = tanh(matmul(test[t], W) + matmul(hv, U) + b);
    if (t >= T) mse += mse_loss(matmul(hv, V) + c, test[t + 1]).item() / static_cast<double>(T);
  }
  fmt::print("held-out next-step MSE {:.5f} (the series has variance ~0.62)\n", mse);
  // --smoke (what CI runs) fails unless the loss halved; a real run warns.
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = first, .last = running, .first_what = "the first step's", .factor = 0.5});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "sine_rnn: an Elman RNN composed from primitives learns to predict a noisy sine wave (truncated "
        "BPTT, plain SGD).",
        kProgram};
    app.add_option("--steps", o.steps, "training steps (windows)")->capture_default_str();
    app.add_option("--hidden", o.hidden, "hidden size")->capture_default_str();
    app.add_option("--window", o.window, "T: time steps per truncated-BPTT window")->capture_default_str();
    app.add_option("--lr", o.lr, "SGD learning rate")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a run of a fraction of a second (what CI runs); fails unless the loss halves");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--steps", o.steps, 200);
    }
    examples::check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
    examples::check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
    examples::check_flag_range<std::int64_t>(kProgram, "--window", o.window, 1, 1000);  // within the series
    examples::check_flag_range(kProgram, "--lr", o.lr, 0.0, 10.0);
    return run(o);
  });
}
