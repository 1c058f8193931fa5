// bench/tiny_rnn_loops.cpp — the floor for tiny_rnn: the same recurrence, forward and backward with every
// weight gradient, as plain C++ loops over raw arrays (no tensors, no tape), compiled with
// -O3 -march=native -ffast-math (bench/CMakeLists.txt). What a fused step should approach at tiny sizes.
#include "tiny_rnn_loops.hpp"

#include <algorithm>
#include <cmath>

namespace bench_loops {

// h_t = tanh(x_t W + h_{t-1} U + b), loss = sum(h_T). x [T, B, I], W [I, H], U [H, H], b [H]; hs [T+1, B, H]
// holds h_0..h_T. Gradients are overwritten.
void tiny_rnn_step(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh,
                   float* da, float* dW, float* dU, float* db, int T, int B, int I, int H) {
  for (int t = 0; t < T; ++t) {
    const float* xt = x + static_cast<long>(t) * B * I;
    const float* hp = hs + static_cast<long>(t) * B * H;
    float* hn = hs + static_cast<long>(t + 1) * B * H;
    for (int r = 0; r < B; ++r) {
      float* out = hn + r * H;
      for (int j = 0; j < H; ++j) out[j] = b[j];
      for (int k = 0; k < I; ++k) {
        const float v = xt[r * I + k];
        for (int j = 0; j < H; ++j) out[j] += v * W[k * H + j];
      }
      for (int k = 0; k < H; ++k) {
        const float v = hp[r * H + k];
        for (int j = 0; j < H; ++j) out[j] += v * U[k * H + j];
      }
      for (int j = 0; j < H; ++j) out[j] = std::tanh(out[j]);
    }
  }
  std::fill(dW, dW + I * H, 0.0f);
  std::fill(dU, dU + H * H, 0.0f);
  std::fill(db, db + H, 0.0f);
  std::fill(dh, dh + B * H, 1.0f);  // d sum(h_T) / d h_T
  for (int t = T - 1; t >= 0; --t) {
    const float* xt = x + static_cast<long>(t) * B * I;
    const float* hp = hs + static_cast<long>(t) * B * H;
    const float* hn = hs + static_cast<long>(t + 1) * B * H;
    for (int i = 0; i < B * H; ++i) da[i] = dh[i] * (1.0f - hn[i] * hn[i]);
    for (int r = 0; r < B; ++r) {
      const float* d = da + r * H;
      for (int j = 0; j < H; ++j) db[j] += d[j];
      for (int k = 0; k < I; ++k) {
        const float v = xt[r * I + k];
        for (int j = 0; j < H; ++j) dW[k * H + j] += v * d[j];
      }
      for (int k = 0; k < H; ++k) {
        const float v = hp[r * H + k];
        float acc = 0.0f;
        for (int j = 0; j < H; ++j) {
          dU[k * H + j] += v * d[j];
          acc += U[k * H + j] * d[j];
        }
        dh[r * H + k] = acc;
      }
    }
  }
}

}  // namespace bench_loops
