#!/usr/bin/env bash
# One device-tool call (H200) for the captured decode step: its CUDA tests (captured == eager in fp32 and bf16,
# no host synchronisation in the decode loop), captured == eager and decode ms/token eager vs captured on the
# Qwen2.5-VL-7B config (random weights, bf16, sdpa, one 1008x1008 image per row, ratio 0.8), and `hawk bench
# --no-compile` with its run_path variant, 64 new tokens, batch 8 then 1. Everything lands in $OUT.
#   bash benchmarks/h200_captured.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-captured}; mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/summary.txt" 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_decode_graphs.py tests/test_decode_syncs.py \
  > "$OUT/tests_cuda.log" 2>&1; stamp "tests (cuda)" $?
timeout ${CAPTURED_TIMEOUT:-150} python3 benchmarks/captured_decode.py --config ${CONFIG:-qwen2.5-vl-7b} --batches 1,8 \
  --steps 64 > "$OUT/captured_7b.jsonl" 2> "$OUT/captured_7b.log"; stamp captured $?
timeout ${BENCH_TIMEOUT:-200} python3 -m hawk_cli bench --config ${CONFIG:-qwen2.5-vl-7b} --random-weights --dtype bfloat16 \
  --attn sdpa --size 1008 --ratio 0.8 --max-new-tokens 64 --batch 8,1 --warmup 1 --repeats 3 --no-compile --json \
  > "$OUT/bench_7b_runpath.jsonl" 2> "$OUT/bench_7b_runpath.log"; stamp bench $?
cat "$OUT/summary.txt"; tail -3 "$OUT/tests_cuda.log"; cat "$OUT/captured_7b.jsonl"; tail -5 "$OUT/captured_7b.log"
tail -3 "$OUT/bench_7b_runpath.log"
