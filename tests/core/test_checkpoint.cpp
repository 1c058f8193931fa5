// Training checkpoints: bit-exact round trip, bit-for-bit resume of a run, the on-disk layout, files that are
// not unroll checkpoints, and a writer SIGKILLed mid-save (the previous checkpoint must survive whole).
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <csignal>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unroll/core/checkpoint.hpp>
#include <unroll/core/safetensors.hpp>
#include <unroll/unroll.hpp>

using namespace unroll;
namespace fs = std::filesystem;

namespace {
// An int64 tensor of `shape` from integers.
Tensor i64(const std::vector<std::int64_t>& values, const Shape& shape) { return index_tensor(values, shape); }
constexpr Dtype f32 = Dtype::float32;
constexpr Dtype f64 = Dtype::float64;

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "unroll_checkpoint_XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), static_cast<std::size_t>(a.numel()) * dtype_size(a.dtype())) == 0;
}
bool same_dict(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  auto ib = b.begin();
  for (const auto& [name, t] : a) {
    if (ib->first != name || !same_bytes(t, ib->second)) return false;
    ++ib;
  }
  return true;
}
bool same_rng(const Generator::State& a, const Generator::State& b) {
  return a.s == b.s && std::memcmp(&a.spare_normal, &b.spare_normal, sizeof(double)) == 0 && a.has_spare == b.has_spare;
}

// A toy training run whose every piece of state lives in a Checkpoint: SGD with momentum on a quadratic with
// noisy gradients drawn from its own generator, and a decaying learning rate. Seven normals per step leave a
// cached Box-Muller value every other step, so resuming also needs the generator's spare.
struct ToyRun {
  Tensor w = tensor({0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0}, {7}, f64);
  Tensor momentum = zeros({7}, f64);
  Tensor lr = tensor({0.1}, {}, f64);
  Generator gen{1234};
  std::int64_t step = 0;

  void train_step() {
    const Tensor noise = randn({7}, f64, gen);
    double* pw = w.data<double>();
    double* pm = momentum.data<double>();
    const double* pn = noise.data<double>();
    double& rate = *lr.data<double>();
    for (int i = 0; i < 7; ++i) {
      const double grad = (pw[i] - 1.0) + 0.1 * pn[i];
      pm[i] = 0.9 * pm[i] + grad;
      pw[i] -= rate * pm[i];
    }
    rate *= 0.97;
    ++step;
  }
  Checkpoint checkpoint() const {
    Checkpoint c;
    c.model.insert("w", w);
    c.optimizer.insert("state.0.momentum_buffer", momentum);
    c.scheduler.insert("lr", lr);
    c.step = step;
    c.rng = gen.state();
    return c;
  }
  void restore(const Checkpoint& c) {
    w = copy_of(c.model.at("w"));
    momentum = copy_of(c.optimizer.at("state.0.momentum_buffer"));
    lr = copy_of(c.scheduler.at("lr"));
    step = c.step;
    gen.set_state(c.rng);
  }
};

// The parts of a valid checkpoint file, for building broken ones.
StateDict rng_tensors() {
  StateDict sd;
  sd.insert("rng.s", i64({1, 2, 3, 4}, {4}));
  sd.insert("rng.spare_normal", tensor({0.0}, {}, f64));
  sd.insert("rng.has_spare", i64({0}, {}));
  return sd;
}
std::map<std::string, std::string> tags() { return {{"unroll.format", "checkpoint-1"}, {"unroll.step", "3"}}; }

}  // namespace

TEST_SUITE("core/checkpoint") {
  TEST_CASE("round trip: every tensor, the step, the generator state, extra strings and tensors, bit for bit") {
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    Generator gen(99);
    (void)randn({3}, f64, gen);  // odd count: a spare normal is cached
    Checkpoint c;
    c.model.insert("rnn.weight_ih_l0", randn({4, 3}, f32, gen));
    c.model.insert("rnn.bias", tensor({-0.0}, {1}));
    c.optimizer.insert("state.0.step", i64({17}, {}));
    c.optimizer.insert("state.0.exp_avg", randn({4, 3}, f64, gen));
    c.scheduler.insert("last_epoch", i64({5}, {}));
    c.extra_tensors.insert("carry_h", randn({2, 4, 3}, f32, gen));  // a truncated-BPTT state (even count)
    c.extra_tensors.insert("tokens_seen", i64({123456789}, {}));
    c.step = -(std::int64_t{1} << 40) - 7;
    c.rng = gen.state();
    REQUIRE(c.rng.has_spare);
    c.extra = {{"note", "epoch 3"}, {"config", "{\"hidden\": 32}"}};
    save_checkpoint(path, c);

    const Checkpoint back = load_checkpoint(path);
    CHECK(same_dict(back.model, c.model));
    CHECK(same_dict(back.optimizer, c.optimizer));
    CHECK(same_dict(back.scheduler, c.scheduler));
    CHECK(back.step == c.step);
    CHECK(same_rng(back.rng, c.rng));
    CHECK(back.extra == c.extra);
    CHECK(same_dict(back.extra_tensors, c.extra_tensors));
    CHECK(load_safetensors(path).tensors.contains("extra.carry_h"));  // the layout other readers see
    // The restored generator continues the exact stream, cached normal first.
    Generator resumed;
    resumed.set_state(back.rng);
    CHECK(randn({5}, f64, resumed).to_vector() == randn({5}, f64, gen).to_vector());

    // Empty sections and a default Checkpoint round-trip too.
    save_checkpoint(path, Checkpoint{});
    const Checkpoint empty = load_checkpoint(path);
    CHECK(empty.model.empty());
    CHECK(empty.optimizer.empty());
    CHECK(empty.scheduler.empty());
    CHECK(empty.step == 0);
    CHECK(same_rng(empty.rng, Generator().state()));
    CHECK(empty.extra.empty());
    CHECK(empty.extra_tensors.empty());
  }

  TEST_CASE("resuming from a checkpoint reproduces the uninterrupted run bit for bit") {
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    ToyRun straight;
    for (int i = 0; i < 20; ++i) straight.train_step();

    ToyRun first;
    for (int i = 0; i < 11; ++i) first.train_step();
    save_checkpoint(path, first.checkpoint());
    ToyRun second;  // a fresh process, in effect
    second.restore(load_checkpoint(path));
    for (int i = 0; i < 9; ++i) second.train_step();

    CHECK(second.step == straight.step);
    CHECK(same_bytes(second.w, straight.w));
    CHECK(same_bytes(second.momentum, straight.momentum));
    CHECK(same_bytes(second.lr, straight.lr));
    CHECK(same_rng(second.gen.state(), straight.gen.state()));
    // Without the generator state the run diverges, so the comparison above is not vacuous.
    ToyRun forgetful;
    Checkpoint c = first.checkpoint();
    c.rng = Generator(1234).state();
    forgetful.restore(c);
    for (int i = 0; i < 9; ++i) forgetful.train_step();
    CHECK_FALSE(same_bytes(forgetful.w, straight.w));
  }

  TEST_CASE("the file is a plain safetensors file with prefixed names and tagged metadata") {
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    Checkpoint c;
    c.model.insert("w", ones({2}));
    c.optimizer.insert("m", zeros({2}));
    c.scheduler.insert("lr", tensor({0.5}, {}, f64));
    c.step = 42;
    c.rng = Generator(7).state();
    c.extra = {{"note", "x"}};
    save_checkpoint(path, c);
    const SafetensorsFile f = load_safetensors(path);
    std::vector<std::string> names;
    for (const auto& [name, t] : f.tensors) names.push_back(name);
    CHECK(names == std::vector<std::string>{"model.w", "optimizer.m", "scheduler.lr", "rng.s", "rng.spare_normal",
                                            "rng.has_spare"});
    CHECK(f.metadata ==
          std::map<std::string, std::string>{{"note", "x"}, {"unroll.format", "checkpoint-1"}, {"unroll.step", "42"}});
    CHECK(f.tensors.at("rng.s").dtype() == Dtype::int64);
    CHECK(f.tensors.at("rng.s").shape() == Shape{4});
    const auto s = Generator(7).state().s;
    for (std::size_t i = 0; i < 4; ++i)
      CHECK(static_cast<std::uint64_t>(f.tensors.at("rng.s").to_vector<std::int64_t>()[i]) == s[i]);
  }

  TEST_CASE("save errors") {
    TempDir dir;
    Checkpoint c;
    c.extra = {{"unroll.step", "5"}};
    CHECK_THROWS_WITH_AS(save_checkpoint(dir / "c.safetensors", c),
                         "save_checkpoint: extra key uses the reserved prefix 'unroll.'; got 'unroll.step', expected "
                         "another key",
                         ValueError);
    Checkpoint u;
    u.model.insert("w", Tensor());
    CHECK_THROWS_WITH_AS(
        save_checkpoint(dir / "c.safetensors", u),
        "save_checkpoint: tensor 'model.w' is undefined; got an undefined tensor, expected a defined one", ValueError);
    const std::string no_dir = dir / "missing/c.safetensors";
    CHECK_THROWS_WITH_AS(save_checkpoint(no_dir, Checkpoint{}),
                         fmt::format("save_checkpoint: cannot write '{}'; got No such file or directory (creating the "
                                     "temp file), expected a writable file",
                                     no_dir)
                             .c_str(),
                         IoError);
    CHECK_FALSE(fs::exists(dir / "c.safetensors"));
  }

  TEST_CASE("files that are not unroll checkpoints are IoErrors naming the file") {
    TempDir dir;
    const std::string path = dir / "c.safetensors";
    const auto rejected = [&](const StateDict& sd, const std::map<std::string, std::string>& meta,
                              const std::string& what) {
      save_safetensors(path, sd, meta);
      CHECK_THROWS_WITH_AS(load_checkpoint(path), fmt::format("load_checkpoint: '{}': {}", path, what).c_str(),
                           IoError);
    };
    StateDict model;
    model.insert("w", ones({2}));
    rejected(model, {{"format", "pt"}},
             "not an unroll checkpoint; got no 'unroll.format' metadata, expected 'checkpoint-1'");
    rejected(rng_tensors(), {{"unroll.format", "checkpoint-2"}, {"unroll.step", "3"}},
             "unsupported checkpoint format; got 'checkpoint-2', expected 'checkpoint-1'");
    rejected(rng_tensors(), {{"unroll.format", "checkpoint-1"}},
             "missing metadata 'unroll.step'; got none, expected the step as a decimal integer");
    for (const char* step : {"", "12x", " 1", "1e3", "99999999999999999999"})
      rejected(rng_tensors(), {{"unroll.format", "checkpoint-1"}, {"unroll.step", step}},
               fmt::format("malformed step; got '{}', expected a decimal integer", step));
    auto meta = tags();
    meta.emplace("unroll.version", "2");  // (not operator[] = : GCC 12 -O2 reports a false -Wrestrict)
    rejected(
        rng_tensors(), meta,
        "unexpected metadata key; got 'unroll.version', expected only unroll.format and unroll.step under 'unroll.'");

    StateDict sd = rng_tensors();
    sd.insert("other.w", ones({1}));
    rejected(sd, tags(),
             "unexpected tensor; got 'other.w', expected names under model., optimizer., scheduler., extra. or rng.");
    sd = rng_tensors();
    sd.insert("rng.extra", ones({1}));
    rejected(sd, tags(),
             "unexpected tensor; got 'rng.extra', expected names under model., optimizer., scheduler., extra. or rng.");
    rejected(StateDict{}, tags(), "missing tensor; got no 'rng.s', expected int64 [4]");
    sd = StateDict{};
    sd.insert("rng.s", tensor({1, 2, 3, 4}, {4}, f64));
    rejected(sd, tags(), "tensor 'rng.s' has the wrong dtype or shape; got float64 [4], expected int64 [4]");
    sd = StateDict{};
    sd.insert("rng.s", i64({1, 2, 3}, {3}));
    rejected(sd, tags(), "tensor 'rng.s' has the wrong dtype or shape; got int64 [3], expected int64 [4]");
    sd = rng_tensors();
    *sd.find("rng.spare_normal") = tensor({0.0}, {1}, f64);
    rejected(sd, tags(),
             "tensor 'rng.spare_normal' has the wrong dtype or shape; got float64 [1], expected float64 []");
    sd = rng_tensors();
    *sd.find("rng.has_spare") = i64({2}, {});
    rejected(sd, tags(), "tensor 'rng.has_spare' is not a flag; got 2, expected 0 or 1");
    // States no Generator can be in (tests/fuzz/regressions/fuzz_checkpoint): all-zero xoshiro words draw only
    // zeros, and a kept Box-Muller value is finite.
    sd = rng_tensors();
    *sd.find("rng.s") = i64({0, 0, 0, 0}, {4});
    rejected(sd, tags(), "tensor 'rng.s' is not a generator state; got all zeros, expected at least one non-zero word");
    sd = rng_tensors();
    *sd.find("rng.spare_normal") = tensor({NAN}, {}, f64);
    *sd.find("rng.has_spare") = i64({1}, {});
    rejected(sd, tags(), "tensor 'rng.spare_normal' is not a normal draw; got nan, expected a finite number");
    *sd.find("rng.has_spare") = i64({0}, {});  // not kept: its value does not matter
    save_safetensors(path, sd, tags());
    CHECK_NOTHROW(load_checkpoint(path));

    // Damage the safetensors layer reports with load_checkpoint's name and the file.
    save_checkpoint(path, Checkpoint{});
    fs::resize_file(path, fs::file_size(path) - 1);
    CHECK_THROWS_WITH_AS(load_checkpoint(path),
                         doctest::Contains(fmt::format("load_checkpoint: '{}': tensor 'rng.has_spare' has data_offsets "
                                                       "beyond the buffer",
                                                       path)
                                               .c_str()),
                         IoError);
    const std::string missing = dir / "none.safetensors";
    CHECK_THROWS_WITH_AS(load_checkpoint(missing),
                         fmt::format("load_checkpoint: '{}': cannot open the file; got No such file or directory, "
                                     "expected a readable safetensors file",
                                     missing)
                             .c_str(),
                         IoError);
  }

  TEST_CASE("a writer SIGKILLed at random moments always leaves one complete checkpoint") {
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    // A few hundred KB per checkpoint, so most of the writer's time is spent inside the write, fsync and rename,
    // and 200 kills fit in a few seconds.
    constexpr std::int64_t kN = std::int64_t{1} << 17;
    const auto make = [](std::int64_t step) {
      Checkpoint c;
      c.model.insert("w", full({kN}, static_cast<double>(step), f32));
      c.optimizer.insert("exp_avg", full({kN / 4}, 0.5 * static_cast<double>(step), f64));
      c.scheduler.insert("last_epoch", i64({step}, {}));
      c.step = step;
      c.rng = Generator(static_cast<std::uint64_t>(step)).state();
      c.extra = {{"step", std::to_string(step)}};
      return c;
    };
    // Every part of the loaded checkpoint must come from the same save.
    const auto consistent = [&](const Checkpoint& c) {
      const float* w = c.model.at("w").data<float>();
      const double* m = c.optimizer.at("exp_avg").data<double>();
      bool ok = c.model.at("w").numel() == kN && c.optimizer.at("exp_avg").numel() == kN / 4;
      for (std::int64_t i = 0; ok && i < kN; ++i) ok = w[i] == static_cast<float>(c.step);
      for (std::int64_t i = 0; ok && i < kN / 4; ++i) ok = m[i] == 0.5 * static_cast<double>(c.step);
      return ok && c.scheduler.at("last_epoch").item() == static_cast<double>(c.step) &&
             same_rng(c.rng, Generator(static_cast<std::uint64_t>(c.step)).state()) &&
             c.extra.at("step") == std::to_string(c.step);
    };

    save_checkpoint(path, make(0));
    std::int64_t last = 0;
    std::mt19937 delays(20240611);
    for (int round = 0; round < 200; ++round) {
      CAPTURE(round);
      int saved[2];  // the writer sends a byte after each completed save
      REQUIRE(::pipe(saved) == 0);
      const pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {  // the writer: save forever (until killed) with increasing steps
        ::close(saved[0]);
        try {
          for (std::int64_t step = last + 1;; ++step) {
            save_checkpoint(path, make(step));
            if (::write(saved[1], "s", 1) != 1) ::_exit(2);
          }
        } catch (...) {
          ::_exit(1);
        }
      }
      ::close(saved[1]);
      // Wait for one completed save (so every round makes progress however loaded the machine), then kill the
      // writer a random moment later: it spends most of its time writing, so the kill lands mid-save.
      char byte = 0;
      const bool progressed = ::read(saved[0], &byte, 1) == 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 12)(delays)));
      ::kill(pid, SIGKILL);
      ::close(saved[0]);
      int status = 0;
      REQUIRE(::waitpid(pid, &status, 0) == pid);
      REQUIRE(progressed);
      REQUIRE(WIFSIGNALED(status));  // killed, not failed
      const Checkpoint c = load_checkpoint(path);
      CHECK(consistent(c));
      CHECK(c.step > last);
      last = c.step;
    }
  }

  TEST_CASE("a save that runs out of space is an IoError naming the file, and the previous checkpoint is intact") {
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    Checkpoint first;
    first.model.insert("w", full({16}, 1.0, f32));
    first.step = 1;
    save_checkpoint(path, first);
    Checkpoint big;
    big.model.insert("w", full({1 << 16}, 2.0, f32));  // 256 KB: over the limit below
    big.step = 2;
    // A full disk, simulated: files may not grow past 64 KB. Without SIG_IGN, SIGXFSZ would kill the process; with
    // it, write() fails with EFBIG, as it does with ENOSPC on a full disk.
    rlimit saved{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = saved;
    small.rlim_cur = 64 * 1024;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string message;
    try {
      save_checkpoint(path, big);
    } catch (const IoError& e) {
      message = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
    CHECK(message.find(fmt::format("save_checkpoint: cannot write '{}'", path)) == 0);
    CHECK(message.find("File too large") != std::string::npos);
    const Checkpoint c = load_checkpoint(path);  // the previous one, whole
    CHECK(c.step == 1);
    CHECK(c.model.at("w").numel() == 16);
    std::size_t leftovers = 0;  // and no temp file left behind
    for (const auto& entry : fs::directory_iterator(dir.path))
      leftovers += entry.path().filename() != "ckpt.safetensors";
    CHECK(leftovers == 0);
  }
}
