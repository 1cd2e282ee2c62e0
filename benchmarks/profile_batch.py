"""Where one batch's time goes on the device: wall time, GPU kernel time and kernel launches per
`HawkSession.run`, by batch size (built-in model, requests from sample_images/questions.jsonl).

    python benchmarks/profile_batch.py --batch-sizes 1,8 [--max-new-tokens 32] [--top 15]

A batch whose kernel time is far below its wall time is bound by the host (Python and launch overhead), not by
the device; one JSON line per batch size, then the top host-side operators by self time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawk_cli.engine.generation import GenerationSettings  # noqa: E402
from hawk_cli.engine.session import HawkSession  # noqa: E402
from hawk_cli.io.requests import read_requests  # noqa: E402
from hawk_cli.serving.stream import prepare_request  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--trace", help="also write a Chrome trace (Python calls included) of one run per batch size to TRACE.b<N>.json"
    )
    args = parser.parse_args()
    session = HawkSession.open(None)
    scorer, _ = session.make_scorer()
    lines = (ROOT / "sample_images" / "questions.jsonl").read_text().splitlines()
    specs = list(read_requests(lines, ROOT / "sample_images"))
    prepared = [prepare_request(session, spec, 2.0) for spec in specs]
    settings = GenerationSettings(ratio=0.8, max_new_tokens=args.max_new_tokens)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        rows = [prepared[i % len(prepared)] for i in range(batch)]
        requests, encoded = [r for r, _ in rows], [e for _, e in rows]
        for _ in range(3):
            session.run(requests, scorer, settings, encoded)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            for _ in range(args.rounds):
                out = session.run(requests, scorer, settings, encoded)
            torch.cuda.synchronize()
            wall = (time.perf_counter() - started) / args.rounds
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.device_time for e in kernels) / 1e3 / args.rounds
        print(
            json.dumps(
                {
                    "batch_size": batch,
                    "wall_ms": round(wall * 1e3, 2),
                    "kernel_ms": round(kernel_ms, 2),
                    "kernels": len(kernels) // args.rounds,
                    "phases_ms": {k: round(v * 1e3, 2) for k, v in out.result.timings.items()},
                    "generated": [len(a.tokens) for a in out.answers],
                }
            ),
            flush=True,
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top), file=sys.stderr)
        if args.trace:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as traced:
                session.run(requests, scorer, settings, encoded)
                torch.cuda.synchronize()
            traced.export_chrome_trace(f"{args.trace}.b{batch}.json")


if __name__ == "__main__":
    main()
