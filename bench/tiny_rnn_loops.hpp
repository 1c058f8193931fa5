#pragma once
// The hand-written floor for unroll-bench's tiny_rnn (bench/tiny_rnn_loops.cpp).
namespace bench_loops {
void tiny_rnn_step(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh,
                   float* da, float* dW, float* dU, float* db, int T, int B, int I, int H);
}  // namespace bench_loops
