"""The batched vision tower with its MLPs padded to an aligned width, against stock `get_image_features` and the
unpadded batched tower: features (relative error) and time, eagerly and replayed from a CUDA graph.

    python benchmarks/tower_alignment.py --config qwen2.5-vl-7b --batches 1,8 > tower.jsonl

Random weights from a shipped config (speed only), bf16, sdpa, one synthetic 1008x1008 image per row; the device
synchronised around each timed call, medians of --repeats after two warm-up calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.phase_profile import capture, kernel_kinds, matmul_rate, shape_parser, timed  # noqa: E402
from hawk_cli.adapters.qwen2_vl.vision import AlignedMlps, TowerPlans, encode_images_batched  # noqa: E402
from hawk_cli.tasks.benchmark import batch_inputs, random_weight_session, synthetic_image  # noqa: E402


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def main() -> None:
    args = shape_parser().parse_args()
    session = random_weight_session(args.config, "cuda", "bfloat16", "sdpa")
    adapter = session.adapter
    visual = adapter.inner.visual
    rate = matmul_rate(session.loaded.device)
    image = synthetic_image(args.size)
    plans, mlps = TowerPlans(), AlignedMlps()
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = batch_inputs(session, [image], batch, "what color is the circle ?")
        pixels, grid = inputs.pixel_values.to(visual.dtype), inputs.on_host().image_grid_thw
        record: dict = {"config": args.config, "batch": batch, "device": torch.cuda.get_device_name()}
        with torch.inference_mode():
            stock = torch.cat(adapter.inner.get_image_features(pixels, grid.to(pixels.device)).pooler_output)
            plain = encode_images_batched(visual, pixels, grid, plans)
            aligned = encode_images_batched(visual, pixels, grid, plans, mlps)
            record["relative_error_vs_stock"] = {"batched": relative(plain, stock), "aligned": relative(aligned, stock)}
            record["aligned_copy_bytes"] = mlps.extra_bytes
            for name, fn in (
                ("batched", lambda p=pixels, g=grid: encode_images_batched(visual, p, g, plans)),
                ("aligned", lambda p=pixels, g=grid: encode_images_batched(visual, p, g, plans, mlps)),
            ):
                record[f"{name}_ms"] = timed(fn, args.repeats)
                record[f"{name}_kernels_ms"] = kernel_kinds(fn, top=4)["by_kind_ms"]
                graph, _ = capture(fn)
                record[f"{name}_graph_ms"] = timed(graph.replay, args.repeats)
                del graph
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                encode_images_batched(visual, pixels, grid, plans)
            record["floor_ms"] = 1e3 * counter.get_total_flops() / rate
            record["matmul_tflops"] = rate / 1e12
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
