"""Where the time before the first token goes on a GPU, and what removing launch overhead would buy.

    python benchmarks/phase_profile.py --config qwen2.5-vl-7b --batches 1,8 > phases.jsonl

A model built from a shipped config with random weights (speed only), bf16, sdpa, one synthetic 1008x1008 image
per row, ratio 0.8. Per batch size, JSON lines:
  tower     the batched vision tower eagerly, replayed from a CUDA graph, and with its elementwise parts
            (rotary, RMSNorm, gated activation) compiled; its FLOPs (torch's FlopCounterMode), the matmul rate
            measured now and so its arithmetic floor; GPU kernel time by kind (matmul, attention, other)
  prefill   the pruned prefill (decoder over the kept tokens into a static cache) eagerly and from a graph
  decode    one masked decode step's kernels by kind, and attention of one step with kv heads repeated
            (what sdpa gets with a mask) against query heads folded onto their kv head (no copy)
Device synchronised around every timed region; medians of --repeats after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawk_cli.adapters.qwen2_vl import vision  # noqa: E402
from hawk_cli.engine.pruning import prune_prefill  # noqa: E402
from hawk_cli.engine.timing import PhaseTimer  # noqa: E402
from hawk_cli.tasks.benchmark import batch_inputs, random_weight_session, synthetic_image  # noqa: E402


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median milliseconds of `fn()` with the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def kernel_kinds(fn, top: int = 10) -> dict:
    """GPU kernel time of one `fn()` by kind, the kernel count and the largest kernels."""
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kinds = {"matmul": 0.0, "attention": 0.0, "copy": 0.0, "other": 0.0}
    names: dict[str, float] = {}
    count = 0
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        count += 1
        name, ms = event.name, event.device_time / 1e3
        names[name[:90]] = names.get(name[:90], 0.0) + ms
        low = name.lower()
        if any(k in low for k in ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul", "splitk")):
            kinds["matmul"] += ms
        elif any(k in low for k in ("flash", "fmha", "attention", "attn")):
            kinds["attention"] += ms
        elif "copy" in low or "cat" in low:
            kinds["copy"] += ms
        else:
            kinds["other"] += ms
    largest = sorted(names.items(), key=lambda kv: -kv[1])[:top]
    return {
        "kernels": count,
        "kernel_ms": round(sum(kinds.values()), 3),
        "by_kind_ms": {k: round(v, 3) for k, v in kinds.items()},
        "largest_ms": [[n, round(v, 3)] for n, v in largest],
    }


def matmul_rate(device) -> float:
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    ms = timed(lambda: a @ b, 10, warmup=3)
    return 2 * 8192**3 / (ms / 1e3)


def capture(fn):
    """A CUDA graph of `fn()` (warmed up on a side stream first, as torch advises) and its outputs."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


# --- compiled elementwise parts of a vision block -------------------------------------------------------------
def _rope(q, k, cos, sin):
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    q_out = qf * cos + vision._rotate_half(qf) * sin
    k_out = kf * cos + vision._rotate_half(kf) * sin
    return q_out.to(q.dtype), k_out.to(k.dtype)


def _rms(x, weight, eps: float):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _gated(gate, up):
    return F.silu(gate) * up


def compiled_tower(visual, pixels, grid, plans, fns):
    rope_c, rms_c, gated_c = fns

    def block_fn(block, hidden, rope, layout):
        n1 = rms_c(hidden, block.norm1.weight, block.norm1.variance_epsilon)
        attn = block.attn
        seq = n1.shape[0]
        q, k, v = attn.qkv(n1).reshape(seq, 3, attn.num_heads, -1).unbind(1)
        q, k = rope_c(q, k, *rope)
        hidden = hidden + attn.proj(vision.segment_attention(q, k, v, layout, attn.scaling))
        n2 = rms_c(hidden, block.norm2.weight, block.norm2.variance_epsilon)
        mlp = block.mlp
        return hidden + mlp.down_proj(gated_c(mlp.gate_proj(n2), mlp.up_proj(n2)))

    hidden = visual.patch_embed(pixels)
    plan = plans.get(visual, grid, hidden.device)
    rope = (plan.cos, plan.sin)
    hidden = vision._permute(visual, hidden, plan.window_index)
    full = set(visual.fullatt_block_indexes)
    for i, block in enumerate(visual.blocks):
        hidden = block_fn(block, hidden, rope, plan.full_layout if i in full else plan.window_layout)
    return visual.merger(hidden)[plan.restore]


def shape_parser(repeats: int = 5) -> argparse.ArgumentParser:
    """The options every device benchmark here shares: which published shape, which batches, image side, repeats."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="qwen2.5-vl-7b")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=1008)
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser


def main() -> None:
    parser = shape_parser()
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    session = random_weight_session(args.config, "cuda", "bfloat16", "sdpa")
    scorer, _ = session.make_scorer()
    adapter, device = session.adapter, session.loaded.device
    visual = adapter.inner.visual
    rate = matmul_rate(device)
    print(json.dumps({"matmul_tflops": round(rate / 1e12, 1), "device": torch.cuda.get_device_name(device)}))
    fns = None
    if not args.no_compile:
        fns = (torch.compile(_rope), torch.compile(_rms), torch.compile(_gated))
    image = synthetic_image(args.size)
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = batch_inputs(session, [image], batch, "what color is the circle ?")
        pixels = inputs.pixel_values.to(visual.dtype)
        grid = inputs.on_host().image_grid_thw
        plans = adapter.tower_plans
        record: dict = {"section": "tower", "batch": batch, "patches": int(pixels.shape[0])}
        try:
            tower_section(record, visual, pixels, grid, plans, rate, fns, args)
        except Exception as error:  # noqa: BLE001 - a failed section must not cost the others
            record["error"] = repr(error)[:500]
        print(json.dumps(record), flush=True)
        try:
            decoder_sections(session, scorer, inputs, batch, rate, args)
        except Exception as error:  # noqa: BLE001
            print(json.dumps({"section": "decoder", "batch": batch, "error": repr(error)[:500]}), flush=True)


def tower_section(record, visual, pixels, grid, plans, rate, fns, args) -> None:
    with torch.inference_mode():
        eager = vision.encode_images_batched(visual, pixels, grid, plans)
        record["eager_ms"] = timed(lambda: vision.encode_images_batched(visual, pixels, grid, plans), args.repeats)
        with FlopCounterMode(display=False) as counter:
            vision.encode_images_batched(visual, pixels, grid, plans)
        flops = counter.get_total_flops()
        record["tflop"] = flops / 1e12
        record["floor_ms"] = 1e3 * flops / rate
        record["eager_profile"] = kernel_kinds(lambda: vision.encode_images_batched(visual, pixels, grid, plans))
        graph, out = capture(lambda: vision.encode_images_batched(visual, pixels, grid, plans))
        record["graph_ms"] = timed(graph.replay, args.repeats)
        graph.replay()
        record["graph_max_abs_diff"] = float((out.float() - eager.float()).abs().max())
        del graph, out
        if fns is not None:
            started = time.perf_counter()
            fused = compiled_tower(visual, pixels, grid, plans, fns)
            torch.cuda.synchronize()
            record["compiled_first_call_s"] = time.perf_counter() - started
            record["compiled_ms"] = timed(lambda: compiled_tower(visual, pixels, grid, plans, fns), args.repeats)
            record["compiled_max_abs_diff"] = float((fused.float() - eager.float()).abs().max())
            record["compiled_profile"] = kernel_kinds(lambda: compiled_tower(visual, pixels, grid, plans, fns))
            graph, out = capture(lambda: compiled_tower(visual, pixels, grid, plans, fns))
            record["compiled_graph_ms"] = timed(graph.replay, args.repeats)
            del graph, out


def decoder_sections(session, scorer, inputs, batch, rate, args) -> None:
    adapter, device = session.adapter, session.loaded.device
    # --- prefill over the kept tokens ------------------------------------------------------------------
    with torch.inference_mode():
        pruned = prune_prefill(adapter, inputs, scorer, 0.8, PhaseTimer(device))
        embeds, positions, mask = pruned.decoder_inputs()
        length = mask.shape[1]
        capacity = 512 if length + 64 <= 512 else 2048
        cache = adapter.new_cache("static", capacity)
        causal = torch.ones(length, capacity, dtype=torch.bool, device=device).tril()
        mask4 = causal[None, None] & torch.nn.functional.pad(mask.bool(), (0, capacity - length))[:, None, None, :]

        def prefill(c=cache, m=mask4):
            c.reset()
            return adapter.decode(embeds, positions, m, c)

        def prefill_2d():
            c = adapter.new_cache("static", capacity)
            return adapter.decode(embeds, positions, mask, c)

        rec = {"section": "prefill", "batch": batch, "tokens": length, "capacity": capacity}
        rec["eager_2d_mask_ms"] = timed(prefill_2d, args.repeats)
        rec["eager_4d_mask_ms"] = timed(prefill, args.repeats)
        rec["eager_profile"] = kernel_kinds(prefill)
        reference = prefill().clone()
        graph, out = capture(prefill)
        rec["graph_ms"] = timed(graph.replay, args.repeats)
        graph.replay()
        rec["graph_max_abs_diff"] = float((out.float() - reference.float()).abs().max())
        with FlopCounterMode(display=False) as counter:
            prefill()
        rec["tflop"] = counter.get_total_flops() / 1e12
        rec["floor_ms"] = 1e3 * counter.get_total_flops() / rate
        del graph, out
        print(json.dumps(rec), flush=True)

        # --- one masked decode step, and attention with repeated vs folded kv heads -----------------
        text = adapter.model.config.get_text_config()
        heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
        head_dim = text.hidden_size // heads
        token = torch.zeros(batch, 1, dtype=torch.long, device=device)
        step_positions = positions[:, :, -1:] + 1
        valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        valid[:, : length + 1] = True
        step_mask = valid[:, None, None, :]

        def step():
            cache.reset()
            return adapter.decode(adapter.embed(token), step_positions, step_mask, cache)

        rec = {"section": "decode", "batch": batch, "capacity": capacity, "step_profile": kernel_kinds(step)}
        q = torch.randn(batch, heads, 1, head_dim, device=device, dtype=torch.bfloat16)
        k = torch.randn(batch, kv_heads, capacity, head_dim, device=device, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        rep = heads // kv_heads
        layers = text.num_hidden_layers

        def repeated():
            for _ in range(layers):
                kr = k[:, :, None].expand(batch, kv_heads, rep, capacity, head_dim).reshape(batch, heads, capacity, -1)
                vr = v[:, :, None].expand(batch, kv_heads, rep, capacity, head_dim).reshape(batch, heads, capacity, -1)
                out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=step_mask)
            return out

        def folded():
            for _ in range(layers):
                out = F.scaled_dot_product_attention(q.view(batch, kv_heads, rep, head_dim), k, v, attn_mask=step_mask)
            return out.view(batch, heads, 1, head_dim)

        diff = (repeated().float() - folded().float()).abs().max()
        for name, fn in (("repeated", repeated), ("folded", folded)):
            graph, _ = capture(fn)
            rec[f"attention_{name}_ms_per_step"] = timed(graph.replay, 20)
            del graph
        rec["folded_max_abs_diff"] = float(diff)
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
