// The dist suites' main: one MPI world for the whole run (MPI can be initialised once per process), then
// doctest. ctest runs it under `mpirun -np 2`, `mpirun -np 3 --oversubscribe`, and alone (a world of one).
// Every rank runs every test case in the same order, so the collectives inside them match up.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "dist_support.hpp"

namespace dist_support {
unroll::dist::Context* g_context = nullptr;
}

int main(int argc, char** argv) {
  unroll::dist::Context ctx;
  dist_support::g_context = &ctx;
  doctest::Context run(argc, argv);
  if (ctx.rank() != 0) {  // one full report (rank 0's); the others print their failures only
    run.setOption("minimal", true);
    run.setOption("no-colors", true);
  }
  const int failed = run.run();
  // Every rank's verdict, so that all exit the same way (mpirun reports the first non-zero exit).
  std::uint64_t any = 0;
  for (std::uint64_t f : ctx.all_gather(failed != 0 ? 1 : 0)) any |= f;
  return any != 0 ? 1 : 0;
}
