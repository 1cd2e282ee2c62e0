#!/usr/bin/env bash
# Quick iteration on the H200: built-in model JSONL throughput (batch 8, 1, 16) with per-phase sums, and a
# device profile of one batch. Results in $OUT/quick.tar.gz.
set -o pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH=.
OUT=${OUT:-/tmp/hawk-quick}; mkdir -p "$OUT/q"
python3 benchmarks/jsonl_throughput.py --requests 512 --warmup 32 --batch-sizes 8,1,16 ${EXTRA:-} \
  > "$OUT/q/throughput_builtin.jsonl" 2> "$OUT/q/throughput_builtin.log"
python3 benchmarks/profile_batch.py --batch-sizes 1,8 --top 40 > "$OUT/q/profile.jsonl" 2> "$OUT/q/profile.log"
cat "$OUT/q/throughput_builtin.jsonl" "$OUT/q/profile.jsonl" | cut -c1-400
tar -czf "$OUT/quick.tar.gz" -C "$OUT" q && rm -rf "$OUT/q"
