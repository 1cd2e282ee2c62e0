#!/usr/bin/env bash
# One device-tool call (H200) for Qwen3.5: the scoring pass's cost as a share of the unpruned prefill (both scoring
# choices, batch 1 and 8, the published 9B shape, random weights, bf16, one 1024x1024 image per row), the
# compaction-oracle check on that model (bf16 and fp32, both scoring choices), and the Qwen3.5 contract tests on CUDA
# (fp32 and bf16, with the compiled hybrid static-cache decode test). Everything lands in $OUT (a .tar.gz at the end).
# Run from the repository root:   bash benchmarks/h200_qwen35.sh
# With the fast linear-attention kernels installed (flash-linear-attention, causal-conv1d), the scoring script's
# environment line says so; run it once without and once with them to report both.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-qwen35-out}
mkdir -p "$OUT/qwen35"
LOG="$OUT/qwen35"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$LOG/summary.txt"; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  python3 -c "import importlib.util as u; print('fla', u.find_spec('fla') is not None, 'causal_conv1d', u.find_spec('causal_conv1d') is not None)"
} > "$LOG/summary.txt" 2>&1

timeout ${COST_TIMEOUT:-240} python3 benchmarks/qwen35_scoring_cost.py --batch 1,8 --size 1024 --warmup 2 --repeats 5 \
  > "$LOG/scoring_cost.jsonl" 2> "$LOG/scoring_cost.log"
stamp scoring_cost $?

CHECK="python3 -m hawk_cli bench --config qwen3.5-9b --random-weights --attn sdpa --size 1024 --ratio 0.8 --batch 2 --check --check-steps 4 --json"
timeout 120 $CHECK --dtype bfloat16 > "$LOG/check_bf16_layer3.jsonl" 2> "$LOG/check_bf16_layer3.log"; stamp check_bf16_layer3 $?
timeout 120 $CHECK --dtype bfloat16 --layer 0 > "$LOG/check_bf16_layer0.jsonl" 2> "$LOG/check_bf16_layer0.log"; stamp check_bf16_layer0 $?
timeout 180 $CHECK --dtype float32 > "$LOG/check_fp32_layer3.jsonl" 2> "$LOG/check_fp32_layer3.log"; stamp check_fp32_layer3 $?

for dtype in float32 bfloat16; do
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=$dtype timeout 150 python3 -m pytest -q -m contract -p no:cacheprovider \
    tests/test_qwen3_5_contract.py tests/test_qwen3_5_family.py "tests/test_bench.py::test_compiled_decode_equals_eager_on_cuda" \
    > "$LOG/contract_cuda_$dtype.log" 2>&1
  stamp "contract_cuda_$dtype" $?
done
cat "$LOG/summary.txt"; cut -c1-300 "$LOG/scoring_cost.jsonl"; tail -n 3 "$LOG"/contract_cuda_*.log
tar -czf "$OUT/qwen35.tar.gz" -C "$OUT" qwen35
