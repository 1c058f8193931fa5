#!/bin/sh
# bench/fused_cells.sh BUILD_DIR [REPS] — the "Fused custom cells" measurements of bench/RESULTS.md: each
# workload run REPS times (default 3), interleaved so that a noisy neighbour hits all of them alike, one
# thread; prints the median of the runs' median step times (ms) and of their peak RSS (MB), and for
# the paired workloads (tiny_rnn_paired, fastrnn_paired: two variants alternately in one process, which
# sees through the host's swings) the median of each run's median per-pair ratio.
# BUILD_DIR is a build with -DUNROLL_BUILD_BENCH=ON (torch-bench is included when it was built).
set -eu
B="${1:?usage: bench/fused_cells.sh BUILD_DIR [REPS]}/bench"
REPS="${2:-3}"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() {  # label, binary, args...
  label="$1"; bin="$2"; shift 2
  [ -x "$B/$bin" ] || return 0
  "$B/$bin" "$@" --threads 1 | sed "s/^/$label	/" >> "$OUT"
}
i=0
while [ "$i" -lt "$REPS" ]; do
  run "tiny_rnn fused" unroll-bench --workload tiny_rnn --fused 1 --steps 2000
  run "tiny_rnn unfused" unroll-bench --workload tiny_rnn --fused 0 --steps 2000
  run "tiny_rnn plain loops (floor)" unroll-bench --workload tiny_rnn_loops --steps 2000
  run "tiny_rnn paired" unroll-bench --workload tiny_rnn_paired --steps 2000
  run "tiny_rnn sized paired" unroll-bench --workload tiny_rnn_paired --sized 1 --steps 2000
  run "tiny_rnn LibTorch" torch-bench --workload tiny_rnn --steps 100
  for v in lstm gru; do
    run "fastrnn $v paired" unroll-bench --workload fastrnn_paired --cell $v --steps 5
    run "fastrnn nn_$v" unroll-bench --workload fastrnn --variant nn_$v --steps 5
    run "fastrnn cell_$v fused" unroll-bench --workload fastrnn --variant cell_$v --fused 1 --steps 5
    run "fastrnn cell_$v unfused" unroll-bench --workload fastrnn --variant cell_$v --fused 0 --steps 5
  done
  # char_lm's custom cell (an MGU) at its sizes, and narrower: fused against the same cell op by op
  for h in 256 32; do
    run "mgu H=$h paired" unroll-bench --workload fastrnn_paired --cell mgu --seq 64 --batch 64 --input 48 \
      --hidden $h --steps 20
  done
  i=$((i + 1))
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, js = line.rstrip("\n").split("\t", 1)
    d = json.loads(js)
    rows.setdefault(label, []).append((d["ms_median"], d["peak_rss_kb"] / 1024))
ratios = {}
for line in open(sys.argv[1]):
    label, js = line.rstrip("\n").split("\t", 1)
    if label.endswith(" paired"):
        ratios.setdefault(label, []).append(json.loads(js)["extra"]["ratio_b_over_a"])
        rows.pop(label, None)
print("| workload | ms per step (median of runs) | runs | peak RSS MB |")
print("|---|---:|---:|---:|")
for label, r in rows.items():
    print(f"| {label} | {statistics.median(x for x, _ in r):.4g} | {len(r)} | {statistics.median(m for _, m in r):.0f} |")
what = {"tiny_rnn paired": "tiny_rnn fused / plain loops",
        "tiny_rnn sized paired": "tiny_rnn fused / plain loops with the sizes as constants (--sized 1)", "fastrnn lstm paired": "fastrnn cell_lstm fused / nn_lstm",
        "fastrnn gru paired": "fastrnn cell_gru fused / nn_gru",
        "mgu H=256 paired": "MGU (B 64, I 48, H 256, T 64) fused / unfused",
        "mgu H=32 paired": "MGU (B 64, I 48, H 32, T 64) fused / unfused"}
if ratios:
    print("\n| paired in one process (b / a per step) | median ratio | runs |")
    print("|---|---:|---|")
for label, r in ratios.items():
    print(f"| {what.get(label, label)} | {statistics.median(r):.3g} | {', '.join(f'{x:.3g}' for x in r)} |")
PY
