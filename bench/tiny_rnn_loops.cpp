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

namespace {
// tiny_rnn_step with I and H as constants: a row of h accumulates in a local array (registers), and the
// backward's U d is a separate loop so that dU's update is a plain axpy per k.
template <int I, int H>
void sized_step(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh, float* da,
                float* dW, float* dU, float* db, int T, int B) {
  for (int t = 0; t < T; ++t) {
    const float* xt = x + static_cast<long>(t) * B * I;
    const float* hp = hs + static_cast<long>(t) * B * H;
    float* hn = hs + static_cast<long>(t + 1) * B * H;
    for (int r = 0; r < B; ++r) {
      float out[H];
      for (int j = 0; j < H; ++j) out[j] = b[j];
      for (int k = 0; k < I; ++k) {
        const float v = xt[r * I + k];
        for (int j = 0; j < H; ++j) out[j] += v * W[k * H + j];
      }
      for (int k = 0; k < H; ++k) {
        const float v = hp[r * H + k];
        for (int j = 0; j < H; ++j) out[j] += v * U[k * H + j];
      }
      for (int j = 0; j < H; ++j) hn[r * H + j] = std::tanh(out[j]);
    }
  }
  std::fill(dW, dW + I * H, 0.0f);
  std::fill(dU, dU + H * H, 0.0f);
  std::fill(db, db + H, 0.0f);
  std::fill(dh, dh + B * H, 1.0f);
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
        for (int j = 0; j < H; ++j) dU[k * H + j] += v * d[j];
      }
      float next[H] = {};
      for (int k = 0; k < H; ++k)
        for (int j = 0; j < H; ++j) next[k] += U[k * H + j] * d[j];
      for (int k = 0; k < H; ++k) dh[r * H + k] = next[k];
    }
  }
}
}  // namespace

bool tiny_rnn_step_sized(const float* x, const float* W, const float* U, const float* b, float* hs, float* dh,
                         float* da, float* dW, float* dU, float* db, int T, int B, int I, int H) {
  if (I != 16 || H != 32) return false;
  sized_step<16, 32>(x, W, U, b, hs, dh, da, dW, dU, db, T, B);
  return true;
}

}  // namespace bench_loops
