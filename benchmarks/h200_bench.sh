#!/usr/bin/env bash
# One device-tool call: the 7B-config bench (batch 8 and 1, ratio 0.8), the masked-oracle check on the same
# model, and the engine contract tests on CUDA in fp32 and bf16. Everything lands in $OUT.
# Usage (through the device tool, from the repo root): bash benchmarks/h200_bench.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-bench-out}
mkdir -p "$OUT"
START=$(date +%s)
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} > "$OUT/environment.txt" 2>&1

BENCH="python3 -m hawk_cli bench --config qwen2.5-vl-7b --random-weights --dtype bfloat16 --attn sdpa --size 1008 --ratio 0.8 --max-new-tokens 16"
timeout ${BENCH_TIMEOUT:-330} $BENCH --batch 8,1 --warmup 2 --repeats 5 --json > "$OUT/bench_7b_h200.jsonl" 2> "$OUT/bench_7b_h200.log"
echo "bench rc=$? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
if ! grep -q '"batch": 1' "$OUT/bench_7b_h200.jsonl"; then  # compiled run failed or ran out of time: eager figures
  timeout 120 $BENCH --batch 8,1 --warmup 1 --repeats 3 --no-compile --json > "$OUT/bench_7b_h200_eager.jsonl" 2> "$OUT/bench_7b_h200_eager.log"
  echo "eager bench rc=$? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
fi
timeout 60 python3 -m hawk_cli bench --config qwen2.5-vl-7b --random-weights --dtype bfloat16 --size 1008 --ratio 0.8 --batch 2 --check 2>&1 | tee "$OUT/check_7b_bf16.log"
echo "check rc=$? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
for DT in float32 bfloat16; do
  LOG="$OUT/contract_cuda_$([ $DT = float32 ] && echo fp32 || echo bf16).log"
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=$DT timeout 100 python3 -m pytest -q -m contract tests/ -p no:cacheprovider 2>&1 | tee "$LOG" | tail -3
  echo "contract $DT rc=$? after $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
done
