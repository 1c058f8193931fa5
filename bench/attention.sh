#!/bin/sh
# bench/attention.sh [BUILD]: the attention and seq2seq workloads against LibTorch, five alternating rounds on
# one thread (bench/RESULTS.md, "Attention and sequence to sequence"). One JSON line per run on stdout.
BUILD=${1:-build-bench}
U=$BUILD/bench/unroll-bench
T=$BUILD/bench/torch-bench
for i in 1 2 3 4 5; do
  $U --workload attention --threads 1 --seq 64 --steps 40 --warmup 5
  $T --workload attention --threads 1 --seq 64 --steps 40 --warmup 5
  $U --workload attention --threads 1 --seq 256 --steps 10 --warmup 2
  $T --workload attention --threads 1 --seq 256 --steps 10 --warmup 2
  $U --workload seq2seq --threads 1 --steps 10 --warmup 2
  $T --workload seq2seq --threads 1 --steps 10 --warmup 2
done
