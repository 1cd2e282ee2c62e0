"""Throughput of JSONL mode by batch size: the stream `hawk run --input` runs (reader thread, preparation
workers, batches of equal ratio, per-row isolation), timed in one process for each batch size in turn.

    python benchmarks/jsonl_throughput.py --batch-sizes 8,1 --requests 256                     # built-in model
    python benchmarks/jsonl_throughput.py --config qwen2.5-vl-7b --size 1008 --requests 64 \\
        --max-new-tokens 16 --batch-sizes 8,1                                                 # 7B shape, random

With `--config` the model is built from a published config with random weights (speed only: its answers are
noise, and they run to --max-new-tokens since end-of-sequence is then rare). Requests are PNG files written
to a temporary folder first (`--distinct` different images, cycled), so decoding and resizing are timed as a
user's files would be. Each batch size first answers `--warmup` requests untimed (compilation, allocator,
kernel selection), then the timed requests. One JSON line per batch size on stdout, then a summary line.
`--rounds N` times the whole list of batch sizes N times in turn (the host's speed drifts between runs) and
summarises with medians. `--stock` also times the baseline a user has without hawk: the model's own `generate`
called once per request (image opened and prepared by the same processor-free builder hawk uses, so only the
engine differs; greedy, exactly --max-new-tokens new tokens), and the summary gives each batch size's speedup
over it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawk_cli.io.requests import read_requests  # noqa: E402
from hawk_cli.serving.stream import PREPARE_MODES, answer_stream, prepare_in_processes, prepare_workers  # noqa: E402


def builtin_lines(count: int) -> list[str]:
    samples = [json.loads(line) for line in (ROOT / "sample_images" / "questions.jsonl").read_text().splitlines()]
    return [
        json.dumps(
            {
                "id": i,
                "image": str(ROOT / "sample_images" / samples[i % len(samples)]["image"]),
                "question": samples[i % len(samples)]["question"],
            }
        )
        for i in range(count)
    ]


def synthetic_lines(count: int, size: int, distinct: int, folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(distinct):  # smooth colour fields with noise: compresses like a photo, not like noise
        y, x = np.mgrid[0:size, 0:size] / size
        base = np.stack([np.sin(6 * x + index), np.cos(5 * y - index), np.sin(4 * (x + y) + 2 * index)], -1)
        pixels = np.clip(127 + 100 * base + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"image_{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return [
        json.dumps({"id": i, "image": paths[i % distinct], "question": "what color is the circle ?"})
        for i in range(count)
    ]


def timed_stream(session, method, lines: list[str], batch: int, args) -> dict:
    workers = prepare_workers(session, args.workers)
    started = time.perf_counter()
    engine = {
        "input_wait_s": 0.0,
        "inputs_s": 0.0,
        "vision_s": 0.0,
        "scoring_s": 0.0,
        "prefill_s": 0.0,
        "decode_s": 0.0,
        "total_s": 0.0,
    }
    answers, failed, windows = [], 0, 0
    tracer = None
    for window in answer_stream(
        session,
        method,
        read_requests(lines, ROOT),
        batch_size=batch,
        wait_for_full=True,
        default_ratio=args.ratio,
        default_tokens=args.max_new_tokens,
        fps=2.0,
        workers=workers,
        processes=prepare_in_processes(args.prepare),
        pin_cpus=not args.no_pin,
    ):
        windows += 1
        if args.trace and windows in (20, 24):  # a few batches in the steady state, Python calls included
            if tracer is None:
                from torch.profiler import ProfilerActivity, profile

                tracer = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True)
                tracer.__enter__()
            else:
                tracer.__exit__(None, None, None)
                tracer.export_chrome_trace(f"{args.trace}.b{batch}.json")
        seen = set()
        for _row, outcome in window:
            if isinstance(outcome, str):
                failed += 1
                answers.append(None)
                continue
            answers.append((outcome["answer"], outcome["visual_tokens_kept"]))
            timings = outcome["batch_timings"]
            if id(timings) not in seen:  # one timings dict per batch, shared by its rows (wait: per window)
                seen.add(id(timings))
                for key in engine:
                    engine[key] += timings.get(key, 0.0)
    seconds = time.perf_counter() - started
    return {
        "batch_size": batch,
        "requests": len(lines),
        "failed": failed,
        "batches": windows,
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(lines) / seconds, 2),
        "engine_s": {k: round(v, 3) for k, v in engine.items()},
        "workers": workers,
        "prepare": args.prepare,
        "cpus_kept_free": _kept_free(session, workers, args),
        "_answers": answers,
    }


def stock_stream(session, lines: list[str], args) -> dict:
    """Stock `generate`, one request at a time, as a user without hawk calls it."""
    from hawk_cli.io.images import load_images
    from hawk_cli.io.requests import Request

    model, adapter = session.model, session.adapter
    started = time.perf_counter()
    for line in lines:
        item = json.loads(line)
        request = Request(question=item["question"], images=tuple(load_images([item["image"]])))
        inputs = session.build_inputs([request]).to(session.loaded.device)
        with torch.inference_mode():
            model.generate(
                **adapter.stock_generate_inputs(inputs),
                max_new_tokens=args.max_new_tokens,
                min_new_tokens=args.max_new_tokens,
                do_sample=False,
                pad_token_id=adapter.tokens.pad,
            )
    if session.loaded.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "batch_size": "stock",
        "requests": len(lines),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(lines) / seconds, 2),
    }


def _kept_free(session, workers: int, args) -> list[int]:
    """The CPUs the stream keeps preparation off (engine/affinity.py), as it decides them."""
    from hawk_cli.serving.affinity import HelperCpus

    helpers = HelperCpus(enabled=not args.no_pin and workers > 0 and session.loaded.device.type == "cuda")
    return sorted(helpers.split.launcher) if helpers.active else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin")
    parser.add_argument("--config", help="build from this config with random weights (e.g. qwen2.5-vl-7b)")
    parser.add_argument("--size", type=int, default=448, help="side of the synthetic images (--config)")
    parser.add_argument("--distinct", type=int, default=16, help="distinct synthetic images (--config)")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=32)
    parser.add_argument("--batch-sizes", default="8,1")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time the list of batch sizes this many times in turn; the summary takes medians",
    )
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="preparation threads (default: hawk's)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--prepare",
        choices=PREPARE_MODES,
        default="threads",
        help="preparation workers, as HAWK_PREPARE: threads (default) or processes",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="leave the CPU affinity alone (HAWK_PREPARE_PIN=0; engine/affinity.py)"
    )
    parser.add_argument(
        "--stock", action="store_true", help="also time stock generate called once per request (the baseline)"
    )
    parser.add_argument("--trace", help="write a Chrome trace of four steady-state windows to TRACE.b<N>.json")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval for this process (experiment; Python's default is 0.005)",
    )
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    from hawk_cli.engine.session import HawkSession, versions

    with tempfile.TemporaryDirectory() as folder:
        if args.config:
            from hawk_cli.tasks.benchmark import random_weight_session

            session = random_weight_session(args.config, "auto", args.dtype, "sdpa")
            method, _ = session.make_scorer("hawk")
            lines = synthetic_lines(args.requests + args.warmup, args.size, args.distinct, Path(folder))
        else:
            session = HawkSession.open(args.model, dtype=args.dtype)
            method, _ = session.make_scorer()
            lines = builtin_lines(args.requests + args.warmup)
        results = []
        stock = None
        if args.stock:
            stock_stream(session, lines[: min(4, args.warmup)], args)  # warm-up: kernels, allocator
            stock = stock_stream(session, lines[args.warmup :], args)
            print(json.dumps(stock | {"max_new_tokens": args.max_new_tokens, "model": session.loaded.name}), flush=True)
        for round_index in range(args.rounds):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                timed_stream(session, method, lines[: args.warmup], batch, args)
                result = timed_stream(session, method, lines[args.warmup :], batch, args)
                results.append(result)
                print(
                    json.dumps(
                        {k: v for k, v in result.items() if not k.startswith("_")}
                        | {
                            "round": round_index,
                            "model": session.loaded.name,
                            "device": str(session.loaded.device),
                            "dtype": str(session.loaded.dtype).replace("torch.", ""),
                            "size": args.size if args.config else 448,
                            "ratio": args.ratio,
                            "max_new_tokens": args.max_new_tokens,
                            "versions": versions(),
                        }
                    ),
                    flush=True,
                )
    summary = summarise(results)
    if stock is not None:
        summary["stock_requests_per_s"] = stock["requests_per_s"]
        summary |= {
            key.replace("median_", "speedup_") + "_vs_stock": round(value / stock["requests_per_s"], 2)
            for key, value in list(summary.items())
            if key.startswith("median_b")
        }
    print(json.dumps({"summary": summary, "requests": args.requests, "rounds": args.rounds}), flush=True)


def summarise(results: list[dict]) -> dict:
    """Median requests/s per batch size over the rounds, speedups of the medians against batch 1, and how many
    answers (text and kept count) of every timed stream equal batch 1's first."""
    by_batch: dict[int, list[dict]] = {}
    for result in results:
        by_batch.setdefault(result["batch_size"], []).append(result)
    summary = {f"requests_per_s_b{b}": sorted(r["requests_per_s"] for r in runs) for b, runs in by_batch.items()}
    medians = {b: statistics.median(r["requests_per_s"] for r in runs) for b, runs in by_batch.items()}
    summary |= {f"median_b{b}": round(m, 2) for b, m in medians.items()}
    if 1 in by_batch:
        one = by_batch[1][0]["_answers"]
        summary |= {f"speedup_b{b}_vs_b1": round(m / medians[1], 2) for b, m in medians.items() if b != 1}
        summary |= {
            f"answers_b{b}_equal_b1": min(sum(a == o for a, o in zip(r["_answers"], one, strict=True)) for r in runs)
            for b, runs in by_batch.items()
        }
    return summary


if __name__ == "__main__":
    main()
