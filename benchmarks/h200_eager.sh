#!/usr/bin/env bash
# One device-tool call (H200): hawk's eager decode (--no-cuda-graphs) against stock `generate` in one process,
# Qwen2.5-VL-7B config (random weights, bf16, sdpa, one 1008x1008 image per row, ratio 0.8, 64 new tokens,
# batch 8 then 1), then the CUDA tests of the decode step. Everything lands in $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-eager}; mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"; }
timeout ${BENCH_TIMEOUT:-130} python3 -m hawk_cli bench --config ${CONFIG:-qwen2.5-vl-7b} --random-weights --dtype bfloat16 \
  --attn sdpa --size 1008 --ratio 0.8 --max-new-tokens 64 --batch 8,1 --warmup 1 --repeats 3 --no-compile \
  --no-cuda-graphs --json > "$OUT/bench_7b_eager.jsonl" 2> "$OUT/bench_7b_eager.log"; stamp "bench eager" $?
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_decode_graphs.py tests/test_decode_syncs.py \
  > "$OUT/tests_cuda.log" 2>&1; stamp "tests (cuda)" $?
tail -2 "$OUT/tests_cuda.log"; tail -2 "$OUT/bench_7b_eager.log"
