// A rank killed with SIGKILL (tests/dist/kill_rank.cmake runs this under mpirun):
//   kill_rank train DIR VICTIM   trains a small model data-parallel, writing DIR/run.ckpt after every step;
//                                after step 3's checkpoint, rank VICTIM kills itself. The job must end (mpirun
//                                ends the other ranks, which wait in the next collective) and exit non-zero.
//   kill_rank check DIR          loads DIR/run.ckpt without MPI: it must be complete, at step 3.
#include <csignal>
#include <cstdio>
#include <string>

#include <unroll/dist/checkpoint.hpp>
#include <unroll/dist/data_parallel.hpp>
#include <unroll/unroll.hpp>

using namespace unroll;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: kill_rank train DIR VICTIM | check DIR\n");
    return 2;
  }
  const std::string mode = argv[1], path = std::string(argv[2]) + "/run.ckpt";
  if (mode == "check") {
    const Checkpoint c = load_checkpoint(path);  // IoError (exit via terminate) if torn or missing
    std::printf("step %lld\n", static_cast<long long>(c.step));
    return c.step == 3 ? 0 : 1;
  }
  const int victim = argc > 3 ? std::stoi(argv[3]) : 1;
  dist::Context ctx;
  manual_seed(1);
  nn::Linear model(8, 4);
  optim::Adam opt(model.parameters(), {.lr = 0.01});
  dist::DataParallel dp(ctx, model.parameters(), {.shards = 1});
  const Tensor x = randn({16, 8}), y = randn({16, 4});
  for (std::int64_t step = 1; step <= 1000; ++step) {
    dp.backward(16, [&](const autograd::Shard& s) {
      return mse_loss(model(narrow(x, 0, s.begin, s.size())), narrow(y, 0, s.begin, s.size()));
    });
    opt.step();
    opt.zero_grad();
    // Big enough that a write takes a moment: the job may be ended while rank 0 writes the next one.
    dist::save_checkpoint(ctx, path, {.model = model.state_dict(), .optimizer = opt.state_dict(), .scheduler = {},
                                      .step = step, .rng = default_generator().state(), .extra = {},
                                      .extra_tensors = {}});
    if (step == 3 && ctx.rank() == victim) std::raise(SIGKILL);
    if (step == 3) ctx.barrier();  // the survivors wait here for the killed rank: mpirun must end them
  }
  return 0;  // reaching this is the failure the test looks for
}
