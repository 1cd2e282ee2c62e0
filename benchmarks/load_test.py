"""Load test: N JSONL requests through `hawk run -` in one process; every answer in input order, and resident
memory after warm-up measured from /proc while the stream runs.

    python benchmarks/load_test.py --requests 1000 --batch-size 8 [--model builtin] [--json]

Prints a one-line JSON summary on stdout: answers, order kept, RSS (MiB) after the warm-up requests and at the
end, and the growth between them.
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100, help="answers before the baseline RSS is read")
    parser.add_argument("--model", default="builtin")
    args = parser.parse_args()

    samples = [json.loads(line) for line in (ROOT / "sample_images" / "questions.jsonl").read_text().splitlines()]
    requests = [{"id": f"r{i}", "image": str(ROOT / "sample_images" / samples[i % len(samples)]["image"]),
                 "question": samples[i % len(samples)]["question"]} for i in range(args.requests)]
    command = [sys.executable, "-m", "hawk_cli", "run", "-", "--batch-size", str(args.batch_size),
               "--model", args.model, "--device", "cpu", "--quiet"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    feeder = threading.Thread(target=lambda: (process.stdin.write("".join(json.dumps(r) + "\n" for r in requests)),
                                              process.stdin.close()))
    feeder.start()
    ids, rss_after_warmup, rss_peak = [], None, 0.0
    for line in process.stdout:
        ids.append(json.loads(line).get("id"))
        current = rss_mib(process.pid) if process.poll() is None else float("nan")
        rss_peak = max(rss_peak, current) if current == current else rss_peak
        if len(ids) == args.warmup:
            rss_after_warmup = current
        if len(ids) == args.requests - 1:
            rss_end = current
    process.wait()
    feeder.join()
    print(json.dumps({"requests": args.requests, "answers": len(ids), "exit_code": process.returncode,
                      "in_input_order": ids == [r["id"] for r in requests], "batch_size": args.batch_size,
                      "rss_mib_after_warmup": rss_after_warmup, "rss_mib_end": rss_end, "rss_mib_peak": rss_peak,
                      "rss_growth_after_warmup": (rss_end - rss_after_warmup) / rss_after_warmup,
                      "wall_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
