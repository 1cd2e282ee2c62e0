"""Captured decode on a GPU: captured == eager, and what one decode step costs eagerly and replayed.

    python benchmarks/captured_decode.py --config qwen2.5-vl-7b --batches 1,8 [--steps 64] > captured.jsonl

A model built from a shipped config with random weights (speed only), bf16, sdpa, one synthetic 1008x1008 image
per row, ratio 0.8. Per batch size, one JSON line each:
  equality  the captured step (real CUDA graphs) against the same step run eagerly on the same pooled buffers
            and bucketed cache (`RecordedStep`): tokens equal, max |logit difference| per step;
  timing    decode ms/token, eager (dynamic cache: what --no-cuda-graphs runs) and captured, median of
            `--repeats` after one warm-up, device synchronised at phase boundaries; the first captured call's
            extra time (warm-up step + capture); the weight-streaming floor (decoder weights / copy bandwidth).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawk_cli.engine.decode_step import DecodeStep  # noqa: E402
from hawk_cli.engine.generation import GenerationSettings, generate  # noqa: E402
from hawk_cli.engine.timing import PhaseTimer  # noqa: E402
from hawk_cli.tasks.benchmark import batch_inputs, copy_bandwidth, random_weight_session, synthetic_image  # noqa: E402


class RecordedStep:
    """Replays the recorded step eagerly: the captured path's buffers and caches without a graph."""

    def capture(self, step):
        return step


def _generate(session, scorer, inputs, step, steps, record=False):
    settings = GenerationSettings(ratio=0.8, max_new_tokens=steps, record_logits=record)
    timer = PhaseTimer(session.loaded.device)
    started = time.perf_counter()
    result = generate(session.adapter, inputs, scorer, settings, set(), decode_step=step, timer=timer)
    torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="qwen2.5-vl-7b")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=1008)
    parser.add_argument("--skip-equality", action="store_true")
    args = parser.parse_args()
    session = random_weight_session(args.config, "cuda", "bfloat16", "sdpa")
    scorer, _ = session.make_scorer()
    device = session.loaded.device
    bandwidth = copy_bandwidth(device)
    floor_ms = 1e3 * session.adapter.decoder_weight_bytes() / bandwidth
    image = synthetic_image(args.size)
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = batch_inputs(session, [image], batch, "what color is the circle ?")
        record = {
            "config": args.config,
            "batch": batch,
            "new_tokens": args.steps,
            "weights_floor_ms": floor_ms,
            "copy_bandwidth_gb_s": bandwidth / 1e9,
            "device": torch.cuda.get_device_name(device),
            "torch": torch.__version__,
        }
        if not args.skip_equality:
            graphs = DecodeStep(session.adapter, "graphs")
            eager_same = DecodeStep(session.adapter, "graphs", runner=RecordedStep())
            _generate(session, scorer, inputs, graphs, 33)  # captures
            captured, _ = _generate(session, scorer, inputs, graphs, 33, record=True)
            eager, _ = _generate(session, scorer, inputs, eager_same, 33, record=True)
            diffs = [float((a - b).abs().max()) for a, b in zip(captured.step_logits, eager.step_logits, strict=True)]
            equal = [a == b for a, b in zip(captured.tokens, eager.tokens, strict=True)]
            record["equality"] = {
                "tokens_equal_rows": sum(equal),
                "rows": batch,
                "max_abs_logit_diff": max(diffs),
                "first_steps_diff": diffs[:4],
                "logit_scale": float(max(s.abs().max() for s in eager.step_logits)),
            }
            del graphs, eager_same
        for mode in ("eager", "graphs"):
            step = DecodeStep(session.adapter, mode)
            first, first_wall = _generate(session, scorer, inputs, step, args.steps + 1)
            walls, decode = [], []
            for _ in range(args.repeats):
                result, wall = _generate(session, scorer, inputs, step, args.steps + 1)
                walls.append(wall)
                decode.append(1e3 * result.timings["decode_s"] / args.steps)
            record[mode] = {
                "decode_ms_per_token": statistics.median(decode),
                "decode_ms_min": min(decode),
                "total_ms": 1e3 * statistics.median(walls),
                "first_call_extra_ms": 1e3 * (first_wall - statistics.median(walls)),
                "captures": step.captures,
                "prefill_ms": 1e3 * result.timings["prefill_s"],
                "kept_tokens": max(r.prompt_tokens_kept for r in result.rows),
                "cache_slots": result.kv_cache_slots,
            }
            record[mode]["vs_floor"] = record[mode]["decode_ms_per_token"] / floor_ms
            del step
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
