"""Load test: N JSONL requests through `hawk run -` in one process; every answer in input order, and resident
memory after warm-up measured from /proc while the stream runs.

    python benchmarks/load_test.py --requests 1000 --batch-size 8 [--model builtin] [--json]

Prints a one-line JSON summary on stdout: answers, order kept, RSS (MiB) after the warm-up requests and at the
end, the growth between them, and the growth of the RSS floor (`floor_growth`), the leak signal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def floor_growth(samples: list[float]) -> float:
    """Growth of the RSS floor after warm-up: the lowest reading of the second half against the first's.

    Why a floor: the allocators take and give back tens of MiB from one batch to the next (on the CPU, the
    built-in model over 480 requests read every 24 answers: 462-565 MiB with no trend), so two single readings
    can differ by 20-30 % without a leak, while a leak raises every reading, the lowest included."""
    half = len(samples) // 2
    if half == 0:
        return float("nan")
    first, second = min(samples[:half]), min(samples[half:])
    return (second - first) / first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100, help="answers before the baseline RSS is read")
    parser.add_argument("--model", default="builtin")
    args = parser.parse_args()

    samples = [json.loads(line) for line in (ROOT / "sample_images" / "questions.jsonl").read_text().splitlines()]
    requests = [
        {
            "id": f"r{i}",
            "image": str(ROOT / "sample_images" / samples[i % len(samples)]["image"]),
            "question": samples[i % len(samples)]["question"],
        }
        for i in range(args.requests)
    ]
    command = [
        sys.executable,
        "-m",
        "hawk_cli",
        "run",
        "-",
        "--batch-size",
        str(args.batch_size),
        "--model",
        args.model,
        "--device",
        "cpu",
        "--quiet",
    ]
    started = time.perf_counter()
    # A fixed glibc mmap threshold: by default glibc raises it after large frees, after which freed batches stay
    # in the heap and RSS steps up by tens of MiB without a leak (CPU, built-in model: floor growth 0-22 % between
    # runs of one commit; with the threshold fixed, 419-421 MiB in six runs). Large buffers then go back to the
    # system when freed, so what RSS shows is what the process holds.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    feeder = threading.Thread(
        target=lambda: (process.stdin.write("".join(json.dumps(r) + "\n" for r in requests)), process.stdin.close())
    )
    feeder.start()
    ids, rss_after_warmup, rss_peak, samples = [], None, 0.0, []
    for line in process.stdout:
        ids.append(json.loads(line).get("id"))
        current = rss_mib(process.pid) if process.poll() is None else float("nan")
        rss_peak = max(rss_peak, current) if current == current else rss_peak
        if len(ids) > args.warmup and current == current:
            samples.append(current)
        if len(ids) == args.warmup:
            rss_after_warmup = current
        if len(ids) == args.requests - 1:
            rss_end = current
    process.wait()
    feeder.join()
    print(
        json.dumps(
            {
                "requests": args.requests,
                "answers": len(ids),
                "exit_code": process.returncode,
                "in_input_order": ids == [r["id"] for r in requests],
                "batch_size": args.batch_size,
                "rss_mib_after_warmup": rss_after_warmup,
                "rss_mib_end": rss_end,
                "rss_mib_peak": rss_peak,
                "rss_growth_after_warmup": (rss_end - rss_after_warmup) / rss_after_warmup,
                "rss_floor_growth": floor_growth(samples),
                "wall_s": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
