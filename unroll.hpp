#pragma once
// unroll: recurrent networks in C++20 on a tape-based reverse-mode autodiff engine.
//
//   auto W = unroll::randn({16, 32}).requires_grad_();
//   auto h = unroll::zeros({1, 32});
//   for (int t = 0; t < T; ++t) h = unroll::tanh(unroll::matmul(x[t], W) + unroll::matmul(h, U) + b);
//   unroll::sum(h).backward();          // backpropagation through time: the tape of the loop, replayed
//   W.grad();                           // accumulated gradient
#include "autograd/gradcheck.hpp"
#include "autograd/shard.hpp"
#include "autograd/tape.hpp"
#include "core/allocator.hpp"
#include "core/checkpoint.hpp"
#include "core/denormal.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/format.hpp"
#include "core/parallel.hpp"
#include "core/random.hpp"
#include "core/safetensors.hpp"
#include "core/shape.hpp"
#include "core/state_dict.hpp"
#include "core/tensor.hpp"
#include "nn/cells.hpp"
#include "nn/init.hpp"
#include "nn/layers.hpp"
#include "nn/module.hpp"
#include "nn/rnn.hpp"
#include "nn/scan_cells.hpp"
#include "nn/sequence.hpp"
#include "nn/serialize.hpp"
#include "nn/xlstm.hpp"
#include "ops/conv.hpp"
#include "ops/elementwise.hpp"
#include "ops/index.hpp"
#include "ops/linear.hpp"
#include "ops/loss.hpp"
#include "ops/matmul.hpp"
#include "ops/norm.hpp"
#include "ops/recurrent.hpp"
#include "ops/reduce.hpp"
#include "ops/scan.hpp"
#include "ops/shape_ops.hpp"
#include "optim/optim.hpp"
