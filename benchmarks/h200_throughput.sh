#!/usr/bin/env bash
# One device-tool call (H200): JSONL-mode throughput by batch size, with the built-in model (`hawk run --input`,
# the user's command) and with the Qwen2.5-VL-7B config (random weights, benchmarks/jsonl_throughput.py), a
# per-batch device profile, then (timing done) the contract tests on CUDA (fp32, bf16) and the masked-oracle
# check on the 7B config. Results land in $OUT/throughput.tar.gz (the device tool returns 8 files at most).
#   bash benchmarks/h200_throughput.sh
# BASELINE=dir (optional): a checkout of an earlier hawk_cli to time first with the same commands.
set -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FINAL=${OUT:-/tmp/hawk-throughput-out}
OUT=$FINAL/throughput
mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "cpu cores: $(nproc)"
} > "$OUT/summary.txt" 2>&1
# 256 requests: sample_images/questions.jsonl (19 questions, 5 scenes) repeated, absolute image paths.
python3 - "$OUT/req256.jsonl" <<'PY'
import json, sys
from pathlib import Path
rows = [json.loads(l) for l in Path("sample_images/questions.jsonl").read_text().splitlines() if l.strip()]
with open(sys.argv[1], "w") as f:
    for i in range(256):
        r = rows[i % len(rows)]
        f.write(json.dumps({"id": i, "image": str(Path("sample_images", r["image"]).resolve()), "question": r["question"]}) + "\n")
PY
run_cli() {  # $1 label, $2 PYTHONPATH, $3 batch size
  PYTHONPATH=$2 timeout 120 python3 -m hawk_cli run --input "$OUT/req256.jsonl" --batch-size "$3" \
    --max-new-tokens 32 --output "$OUT/$1_b$3.jsonl" --force 2> "$OUT/$1_b$3.log"
  stamp "$1 batch $3: $(tail -1 "$OUT/$1_b$3.log")" $?
}
if [ -n "$BASELINE" ]; then
  for b in 8 1 8; do run_cli baseline "$BASELINE" $b; done
fi
for b in 8 1 8 16; do run_cli hawk . $b; done

PYTHONPATH=. timeout 150 python3 benchmarks/jsonl_throughput.py --requests 512 --warmup 32 --batch-sizes 8,1,16 \
  > "$OUT/throughput_builtin.jsonl" 2> "$OUT/throughput_builtin.log"; stamp "script builtin" $?
PYTHONPATH=. timeout 150 python3 benchmarks/jsonl_throughput.py --requests 512 --warmup 32 --batch-sizes 8,1,16 \
  --processes > "$OUT/throughput_builtin_processes.jsonl" 2> "$OUT/throughput_builtin_processes.log"
stamp "script builtin, HAWK_PREPARE=processes" $?
PYTHONPATH=. timeout 100 python3 benchmarks/profile_batch.py --batch-sizes 1,8 \
  > "$OUT/profile_builtin.jsonl" 2> "$OUT/profile_builtin.log"; stamp "profile builtin" $?
for shape in "1008 16" "448 32"; do
  set -- $shape
  PYTHONPATH=. timeout 200 python3 benchmarks/jsonl_throughput.py --config qwen2.5-vl-7b --size $1 \
    --max-new-tokens $2 --requests 64 --warmup 16 --batch-sizes 8,1 \
    > "$OUT/throughput_7b_$1_$2.jsonl" 2> "$OUT/throughput_7b_$1_$2.log"; stamp "script 7b $1 px $2 tokens" $?
done
cat "$OUT"/throughput_*.jsonl | grep summary

# Correctness after timing, in parallel: contract tests on CUDA and the masked-oracle check on the 7B config.
CHECK="python3 -m hawk_cli bench --config qwen2.5-vl-7b --random-weights --size 1008 --ratio 0.8 --batch 2 --check --check-steps 4"
(PYTHONPATH=. timeout 150 $CHECK --dtype bfloat16 > "$OUT/check_7b_bf16.log" 2>&1; stamp "check 7b bf16: $(grep -E 'PASS|FAIL' "$OUT/check_7b_bf16.log" | head -1)" $?) &
for dtype in float32 bfloat16; do
  (HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=$dtype timeout 200 python3 -m pytest -q -m contract tests/ -p no:cacheprovider \
     > "$OUT/contract_cuda_$dtype.log" 2>&1; stamp "contract $dtype: $(tail -1 "$OUT/contract_cuda_$dtype.log")" $?) &
done
wait
tar -czf "$FINAL/throughput.tar.gz" -C "$FINAL" throughput && cp "$OUT/summary.txt" "$FINAL/summary.txt"
