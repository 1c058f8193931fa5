#pragma once
// The hand-written floor for unroll-bench's tiny_rnn (bench/tiny_rnn_loops.cpp).
namespace bench_loops {
void tiny_rnn_step(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh,
                   float* da, float* dW, float* dU, float* db, int T, int B, int I, int H);
/// The same loops with the default sizes (I = 16, H = 32) known to the compiler: a tighter floor (rows held in
/// registers, loops fully unrolled) that no size-generic code can reach. False (nothing run) for other sizes.
bool tiny_rnn_step_sized(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh,
                         float* da, float* dW, float* dU, float* db, int T, int B, int I, int H);
}  // namespace bench_loops
