#!/usr/bin/env bash
# One device-tool call (H200) for the Qwen3-VL family: `hawk bench` on the published Qwen3-VL-8B and
# Qwen3-VL-30B-A3B shapes (random weights, bf16, sdpa, one 1008x1008 image per row, ratio 0.8, 16 new tokens,
# batch 8 then 1, decode through the captured CUDA-graph step, no compile), then the masked-oracle check on the 8B
# shape in bf16 and fp32. Everything lands in $OUT. Run from the repository root:
#   bash benchmarks/h200_qwen3_vl.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-qwen3-vl}; mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/summary.txt" 2>&1
bench() {  # $1 config, $2 timeout
  timeout "$2" python3 -m hawk_cli bench --config "$1" --random-weights --dtype bfloat16 --attn sdpa --size 1008 \
    --ratio 0.8 --max-new-tokens 16 --batch 8,1 --warmup 1 --repeats 3 --no-compile --json \
    > "$OUT/bench_$1.jsonl" 2> "$OUT/bench_$1.log"; stamp "bench $1" $?
}
bench qwen3-vl-8b "${BENCH_8B_TIMEOUT:-170}"
bench qwen3-vl-30b-a3b "${BENCH_30B_TIMEOUT:-220}"
CHECK="python3 -m hawk_cli bench --config qwen3-vl-8b --random-weights --attn sdpa --size 1008 --ratio 0.8 --batch 2 --check --check-steps 4 --json"
timeout 70 $CHECK --dtype bfloat16 > "$OUT/check_8b_bf16.jsonl" 2> "$OUT/check_8b_bf16.log"; stamp "check bf16" $?
timeout 90 $CHECK --dtype float32 > "$OUT/check_8b_fp32.jsonl" 2> "$OUT/check_8b_fp32.log"; stamp "check fp32" $?
cat "$OUT/summary.txt"; for f in "$OUT"/bench_*.log "$OUT"/check_*.log; do echo "== $f"; tail -3 "$f"; done
cut -c1-400 "$OUT"/check_*.jsonl
