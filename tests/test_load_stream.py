"""A small version of the 1000-request load test (docs/errors.md): a JSONL stream through `hawk run -` on the
built-in model keeps every answer in input order, and resident memory does not grow after warm-up."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stream_of_requests_keeps_order_and_memory_flat():
    # The load test fixes glibc's mmap threshold (RSS otherwise steps up by 20-30 % without a leak) and watches
    # the floor: the lowest reading of the stream's second half against its first half's, after 32 warm-up
    # answers. A request's images kept by mistake (about 1.2 MB at 448x448) would raise it by about 9 %.
    result = subprocess.run(
        [sys.executable, "benchmarks/load_test.py", "--requests", "96", "--warmup", "32", "--batch-size", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 0, result.stderr
    assert summary["answers"] == 96 and summary["in_input_order"]
    assert summary["rss_floor_growth"] < 0.03


def _floor_growth():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.floor_growth


def test_the_floor_flags_a_steady_leak_and_ignores_swings():
    """Negative control: the leak signal rises for memory that only grows, not for batches that come and go."""
    floor_growth = _floor_growth()
    swings = [420 + (60 if i % 3 == 0 else 0) for i in range(64)]  # 420-480 MiB, no trend
    leak = [420 + 1.2 * i for i in range(64)]  # 1.2 MiB kept per request
    assert abs(floor_growth(swings)) < 0.001
    assert floor_growth(leak) > 0.03
