#!/usr/bin/env bash
# JSONL-mode throughput by batch size on the H200, in two device-tool calls (each under its 10-minute limit):
#   bash benchmarks/h200_throughput.sh builtin   # built-in model: `hawk run --input` (the user's command) by
#                                                # batch size, then benchmarks/jsonl_throughput.py, 3 rounds,
#                                                # preparation on threads (default) and in processes
#   bash benchmarks/h200_throughput.sh 7b        # Qwen2.5-VL-7B config, random weights, two image sizes; then
#                                                # the contract tests on CUDA (fp32, bf16) and the masked-oracle
#                                                # check on the 7B config
# Results land in $OUT/<part>.tar.gz (the device tool returns 8 files at most) and $OUT/summary_<part>.txt.
# SKIP_CHECKS=1 (7b part): timing only.
# BASELINE=dir (optional, builtin part): a checkout of an earlier hawk_cli to time first with the CLI commands.
set -o pipefail
PART=${1:?usage: h200_throughput.sh builtin|7b}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FINAL=${OUT:-/tmp/hawk-throughput-out}
OUT=$FINAL/$PART
mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "cpu cores: $(nproc); git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
} > "$OUT/summary.txt" 2>&1

if [ "$PART" = builtin ]; then
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
    for b in 8 1; do run_cli baseline "$BASELINE" $b; done
  fi
  for b in 8 1 16; do run_cli hawk . $b; done
  for prepare in threads processes; do
    sizes=$([ $prepare = threads ] && echo 8,1,16 || echo 8,1)
    PYTHONPATH=. timeout 170 python3 benchmarks/jsonl_throughput.py --requests 512 --warmup 32 --rounds 3 \
      --batch-sizes $sizes --prepare $prepare > "$OUT/throughput_builtin_$prepare.jsonl" \
      2> "$OUT/throughput_builtin_$prepare.log"
    stamp "script builtin, prepare $prepare: $(grep summary "$OUT/throughput_builtin_$prepare.jsonl")" $?
  done
else
  for shape in "1008 16" "448 32"; do
    set -- $shape
    PYTHONPATH=. timeout 200 python3 benchmarks/jsonl_throughput.py --config qwen2.5-vl-7b --size $1 \
      --max-new-tokens $2 --requests 64 --warmup 16 --batch-sizes 8,1 \
      > "$OUT/throughput_7b_$1_$2.jsonl" 2> "$OUT/throughput_7b_$1_$2.log"
    stamp "script 7b $1 px $2 tokens: $(grep summary "$OUT/throughput_7b_$1_$2.jsonl")" $?
  done
  # Correctness after timing, in parallel: contract tests on CUDA and the masked-oracle check on the 7B config
  # (SKIP_CHECKS=1 leaves them out).
  [ -n "$SKIP_CHECKS" ] || {
  CHECK="python3 -m hawk_cli bench --config qwen2.5-vl-7b --random-weights --size 1008 --ratio 0.8 --batch 2 --check --check-steps 4"
  (PYTHONPATH=. timeout 150 $CHECK --dtype bfloat16 > "$OUT/check_7b_bf16.log" 2>&1; stamp "check 7b bf16: $(grep -E 'PASS|FAIL' "$OUT/check_7b_bf16.log" | head -1)" $?) &
  for dtype in float32 bfloat16; do
    (HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=$dtype timeout 200 python3 -m pytest -q -m contract tests/ -p no:cacheprovider \
       > "$OUT/contract_cuda_$dtype.log" 2>&1; stamp "contract $dtype: $(tail -1 "$OUT/contract_cuda_$dtype.log")" $?) &
  done
  wait
  }
fi
tar -czf "$FINAL/$PART.tar.gz" -C "$FINAL" "$PART" && cp "$OUT/summary.txt" "$FINAL/summary_$PART.txt"
