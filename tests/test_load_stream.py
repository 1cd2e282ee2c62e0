"""A small version of the 1000-request load test (docs/errors.md): a JSONL stream through `hawk run -` on the
built-in model keeps every answer in input order, and resident memory does not grow after warm-up."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stream_of_requests_keeps_order_and_memory_flat():
    result = subprocess.run([sys.executable, "benchmarks/load_test.py", "--requests", "48", "--warmup", "16",
                             "--batch-size", "8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 0, result.stderr
    assert summary["answers"] == 48 and summary["in_input_order"]
    assert summary["rss_growth_after_warmup"] < 0.10
