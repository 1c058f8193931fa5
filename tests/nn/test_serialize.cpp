// Module files and training checkpoints: a module round-trips through safetensors; a mismatched file is an
// IoError naming the file and the entry (module untouched); and training N steps equals training k steps,
// checkpointing, loading into a FRESH process and training N - k — bit for bit, with dropout, Adam and a
// step schedule, so model, optimizer, schedule, step and RNG state must all come back exactly.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("unroll_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

// A small character-LM-like model with inter-layer dropout (so the RNG stream matters).
struct LM : nn::Module {
  nn::Embedding embed{20, 6};
  nn::LSTM lstm{{.input_size = 6, .hidden_size = 8, .num_layers = 2, .dropout = 0.3}};
  nn::Linear head{8, 20};
  LM() {
    register_module("embed", embed);
    register_module("lstm", lstm);
    register_module("head", head);
  }
};

struct Run {
  LM model;
  optim::Adam opt{model.parameters(), {.lr = 1e-2}};
  optim::StepLR sched{opt, 2, 0.5};
  std::int64_t step = 0;

  // One step: random batch from the default generator, forward with dropout, backward, clip, Adam, schedule.
  double train_step() {
    Tensor tokens = randint({5, 3}, 0, 20), targets = randint({15}, 0, 20);
    Tensor loss = cross_entropy(reshape(model.head(model.lstm(model.embed(tokens)).output), {15, 20}), targets);
    loss.backward();
    optim::clip_grad_norm_(model.parameters(), 1.0);
    opt.step();
    opt.zero_grad();
    sched.step();
    ++step;
    return loss.item();
  }
  Checkpoint checkpoint() const {
    return {model.state_dict(), opt.state_dict(), sched.state_dict(), step, default_generator().state(), {}, {}};
  }
  void restore(const Checkpoint& c) {
    model.load_state_dict(c.model);
    opt.load_state_dict(c.optimizer);
    sched.load_state_dict(c.scheduler);
    step = c.step;
    default_generator().set_state(c.rng);
  }
};

// Runs f in a forked child (a fresh process image for the training state); true if it exited with 0.
template <class F>
bool in_child(F&& f) {
  std::fflush(nullptr);  // or the child would print the parent's buffered output again
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 1;
    try {
      code = f() ? 0 : 1;
    } catch (...) {
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
}  // namespace

TEST_SUITE("nn/serialize") {
  TEST_CASE("a module round-trips through a safetensors file") {
    const std::string path = temp_path("lm.safetensors");
    LM a, b;
    nn::save(a, path, {{"note", "test"}});
    nn::load(b, path);
    for (const auto& [n, t] : a.state_dict()) CHECK(b.state_dict().at(n).to_vector() == t.to_vector());
    CHECK(load_safetensors(path).metadata.at("note") == "test");
    std::filesystem::remove(path);
  }

  TEST_CASE("a file that does not match the module is an IoError naming the file; the module is unchanged") {
    const std::string path = temp_path("mismatch.safetensors");
    nn::Linear small(3, 4), other(3, 5);
    nn::save(small, path);
    const auto before = other.weight.to_vector();
    CHECK_THROWS_WITH_AS(
        nn::load(other, path),
        doctest::Contains(("nn::load: '" + path +
                           "' does not match the module: 2 entries do not match; got shape mismatch "
                           "for 'weight' ([4, 3], expected [5, 3]), shape mismatch for 'bias' ([4], expected [5])")
                              .c_str()),
        IoError);
    CHECK(other.weight.to_vector() == before);
    StateDict only_w;
    only_w.insert("weight", small.weight);
    save_safetensors(path, only_w);
    CHECK_THROWS_WITH_AS(nn::load(small, path),
                         doctest::Contains("does not match the module: missing entry; got no 'bias'"), IoError);
    const auto loaded = nn::load(small, path, /*strict=*/false);
    CHECK(loaded.missing_keys == std::vector<std::string>{"bias"});
    CHECK(loaded.unexpected_keys.empty());
    CHECK_THROWS_WITH_AS(nn::load(small, temp_path("does_not_exist.safetensors")),
                         doctest::Contains("does_not_exist.safetensors"), IoError);
    std::filesystem::remove(path);
  }

  TEST_CASE("training resumes bit-for-bit from a checkpoint in a fresh process") {
    constexpr int N = 7, K = 3;
    const std::string ckpt = temp_path("resume.ckpt"), final_path = temp_path("final.safetensors");

    // Reference: N uninterrupted steps.
    manual_seed(2024);
    Run ref;
    std::vector<double> ref_losses;
    for (int i = 0; i < N; ++i) ref_losses.push_back(ref.train_step());

    // Process 1: the same start, K steps, then a checkpoint.
    REQUIRE(in_child([&] {
      manual_seed(2024);
      Run r;
      for (int i = 0; i < K; ++i) r.train_step();
      save_checkpoint(ckpt, r.checkpoint());
      return true;
    }));
    // Process 2: a different seed and initialisation, everything restored from the checkpoint, N - K more steps.
    REQUIRE(in_child([&] {
      manual_seed(99);
      Run r;
      r.restore(load_checkpoint(ckpt));
      std::vector<double> losses;
      while (r.step < N) losses.push_back(r.train_step());
      // Losses of the resumed steps equal the reference's exactly.
      for (std::size_t i = 0; i < losses.size(); ++i)
        if (losses[i] != ref_losses[K + i]) return false;
      nn::save(r.model, final_path);
      return true;
    }));
    LM resumed;
    nn::load(resumed, final_path);
    for (const auto& [n, t] : ref.model.state_dict()) {
      CAPTURE(n);
      CHECK(resumed.state_dict().at(n).to_vector() == t.to_vector());
    }
    // And the comparison can fail: without the RNG state the continuation differs.
    REQUIRE(in_child([&] {
      manual_seed(99);
      Run r;
      Checkpoint c = load_checkpoint(ckpt);
      c.rng = Generator(7).state();
      r.restore(c);
      while (r.step < N) r.train_step();
      nn::save(r.model, final_path);
      return true;
    }));
    nn::load(resumed, final_path);
    CHECK(resumed.state_dict().at("head.weight").to_vector() != ref.model.state_dict().at("head.weight").to_vector());
    std::filesystem::remove(ckpt);
    std::filesystem::remove(final_path);
  }
}
