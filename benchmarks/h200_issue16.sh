#!/usr/bin/env bash
# Issue 16's GPU work in two device-tool calls (each under its 10-minute limit); results land in $OUT:
#   bash benchmarks/h200_issue16.sh checks   # where time before the first token goes (phase_profile.py), then the
#                                            # CUDA tests of captured prefill / tower / decode, bf16 and fp32,
#                                            # and `hawk run --compile`'s printed cost with a cold and a warm cache
#   bash benchmarks/h200_issue16.sh speed    # `hawk bench --no-compile` (run path, stock generate) at the 7B shape,
#                                            # JSONL throughput against stock generate per request (and the
#                                            # tower with aligned MLPs against stock, the graph tests in bf16)
#   bash benchmarks/h200_issue16.sh big      # the 32B shape's run path, then the contract suite on CUDA in bf16
set -o pipefail
PART=${1:?usage: h200_issue16.sh checks|speed|big}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/hawk-issue16-out}
mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "$1 rc=$2 at $(( $(date +%s) - START )) s" | tee -a "$OUT/summary_$PART.txt"; }
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, transformers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "cpu cores: $(nproc); git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) changed files"
} > "$OUT/summary_$PART.txt" 2>&1

if [ "$PART" = checks ]; then
  timeout 250 python3 benchmarks/phase_profile.py --batches 1,8 > "$OUT/phase_profile.jsonl" 2> "$OUT/phase_profile.err"
  stamp "phase_profile: $(wc -l < "$OUT/phase_profile.jsonl") lines" $?
  TESTS="tests/test_graph_cache.py tests/test_decode_graphs.py tests/test_decode_syncs.py tests/test_likelihood.py"
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=bfloat16 timeout 200 python3 -m pytest -q -p no:cacheprovider -rfs --tb=short \
    tests/test_bench.py::test_compiled_decode_equals_eager_on_cuda $TESTS > "$OUT/tests_cuda_bf16.log" 2>&1
  stamp "tests bf16: $(tail -1 "$OUT/tests_cuda_bf16.log")" $?
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=float32 timeout 100 python3 -m pytest -q -p no:cacheprovider -rfs --tb=short \
    $TESTS > "$OUT/tests_cuda_fp32.log" 2>&1
  stamp "tests fp32: $(tail -1 "$OUT/tests_cuda_fp32.log")" $?
  # --compile's cost, cold then with torch's on-disk cache warm (two processes, one cache folder)
  export TORCHINDUCTOR_CACHE_DIR=/tmp/hawk-inductor-cache
  for start in cold warm; do
    timeout 120 python3 -m hawk_cli run sample_images/scene_1.png "how many squares are there ?" --compile \
      --max-new-tokens 24 > "$OUT/compile_$start.txt" 2>&1
    stamp "hawk run --compile ($start cache): $(grep -h 'compiling' "$OUT/compile_$start.txt")" $?
  done
elif [ "$PART" = speed ]; then
  timeout 100 python3 benchmarks/tower_alignment.py --batches 1,8 > "$OUT/tower_alignment.jsonl" 2> "$OUT/tower_alignment.err"
  stamp "tower alignment: $(wc -l < "$OUT/tower_alignment.jsonl") lines" $?
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=bfloat16 timeout 80 python3 -m pytest -q -p no:cacheprovider -rfs --tb=short \
    tests/test_graph_cache.py tests/test_decode_graphs.py > "$OUT/tests_cuda_bf16_graphs.log" 2>&1
  stamp "tests bf16 (graphs): $(tail -1 "$OUT/tests_cuda_bf16_graphs.log")" $?
  BENCH="python3 -m hawk_cli bench --random-weights --dtype bfloat16 --attn sdpa --size 1008 --ratio 0.8 --max-new-tokens 64 --no-compile --json"
  timeout 170 $BENCH --config qwen2.5-vl-7b --batch 8,1 --warmup 1 --repeats 3 > "$OUT/bench_7b.jsonl" 2> "$OUT/bench_7b.log"
  stamp "bench 7b: $(wc -l < "$OUT/bench_7b.jsonl") records" $?
  for tokens in 16 64; do
    timeout 110 python3 benchmarks/jsonl_throughput.py --config qwen2.5-vl-7b --size 1008 --max-new-tokens $tokens \
      --requests 40 --warmup 16 --batch-sizes 8 --stock > "$OUT/jsonl_7b_$tokens.jsonl" 2> "$OUT/jsonl_7b_$tokens.log"
    stamp "jsonl 7b $tokens tokens: $(grep summary "$OUT/jsonl_7b_$tokens.jsonl")" $?
  done
else  # big: the 32B shape, then the contract suite in bf16
  BENCH="python3 -m hawk_cli bench --random-weights --dtype bfloat16 --attn sdpa --size 1008 --ratio 0.8 --max-new-tokens 64 --no-compile --json"
  timeout 200 $BENCH --config qwen2.5-vl-32b --batch 1 --warmup 1 --repeats 2 > "$OUT/bench_32b.jsonl" 2> "$OUT/bench_32b.log"
  stamp "bench 32b: $(wc -l < "$OUT/bench_32b.jsonl") records" $?
  HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=bfloat16 timeout 200 python3 -m pytest -q -m contract tests/ -p no:cacheprovider -rfs \
    --tb=short > "$OUT/contract_cuda_bf16.log" 2>&1
  stamp "contract bf16: $(tail -1 "$OUT/contract_cuda_bf16.log")" $?
fi
