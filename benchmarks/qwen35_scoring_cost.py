"""What HAWK's scoring pass costs on Qwen3.5, as a share of the unpruned language-model prefill.

    python benchmarks/qwen35_scoring_cost.py                       # published 9B shape, bf16, CUDA, batch 1 and 8
    python benchmarks/qwen35_scoring_cost.py --tiny --device cpu   # a shrunk config, seconds on a CPU (a smoke test)

Qwen3.5's first three decoder layers are Gated DeltaNet (linear attention), so HAWK's layer-0 softmax scores have
no direct equivalent. Two choices are timed, interleaved, on the same inputs (one synthetic square image per row,
random weights: speed only):

  first full-attention layer (the default): the layers below it over the WHOLE prompt, then that layer's
      pre-RoPE q/k (q after `q_norm`, k after `k_norm`), HAWK scores, selection and compaction;
  layer-0 DeltaNet q/k: that layer's q/k after its causal convolution and L2 norm (no layers below), scores,
      selection and compaction.

The scoring pass is exactly the engine's scoring phase (`engine.pruning.prune_prefill` minus vision): token roles,
`scorer.score`, `select_keep`, `compact`. The unpruned prefill is the decoder over the whole prompt with a fresh
cache (what hawk runs at ratio 0); the pruned prefill (the decoder over each choice's kept tokens) is reported for
context. Timings are CUDA events (host clocks on a CPU), medians of `--repeats` rounds after `--warmup` rounds.
One JSON line per (batch, scoring choice) on stdout. The environment line says whether the fast linear-attention
kernels (`fla`, `causal_conv1d`) are importable: without them transformers runs the DeltaNet in reference PyTorch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawk_cli.engine.compaction import compact  # noqa: E402
from hawk_cli.engine.pruning import scoring_inputs  # noqa: E402
from hawk_cli.engine.roles import token_roles  # noqa: E402
from hawk_cli.engine.selection import select_keep  # noqa: E402
from hawk_cli.engine.session import versions  # noqa: E402
from hawk_cli.tasks.benchmark import batch_inputs, random_weight_session, resolve_config, synthetic_image  # noqa: E402

TARGET_SHARE = 0.12  # issue 15: the default choice's scoring pass at most 12 % of the unpruned prefill
# --tiny: the published layout (3 DeltaNet layers, then gated attention) at toy widths; vocabulary and special ids
# stay published so the stand-in tokenizer applies.
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    layer_types=["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + ["full_attention"],
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 10000000,
        "mrope_section": [2, 1, 1],
        "mrope_interleaved": True,
        "partial_rotary_factor": 0.25,
    },
)
TINY_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)


def tiny_config_file(folder: Path, published: Path) -> Path:
    config = json.loads(published.read_text())
    config["text_config"].update(TINY_TEXT)
    config["vision_config"].update(TINY_VISION)
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


class Clock:
    """Milliseconds of a callable: CUDA events on a GPU (no host wait inside), host clock otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, work):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = work()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end), result
        started = time.perf_counter()
        result = work()
        return 1e3 * (time.perf_counter() - started), result


def scoring_pass(adapter, prefill, scorer, ratio: float):
    """The engine's scoring phase: roles, scores, keep set, compaction (as in `engine.pruning.prune_prefill`)."""
    roles = token_roles(prefill.input_ids, prefill.attention_mask, adapter.tokens)
    scores = scorer.score(scoring_inputs(adapter, prefill, roles))
    keep = select_keep(scores, roles.visual, prefill.attention_mask.bool(), ratio)
    return keep, compact(keep)


def prefill_pass(adapter, embeds, positions, mask):
    return adapter.decode(embeds, positions, mask, adapter.new_cache("dynamic", embeds.shape[1]))


def measure(session, choices: dict, batch: int, args) -> list[dict]:
    adapter, device = session.adapter, session.loaded.device
    clock = Clock(device)
    inputs = batch_inputs(session, [synthetic_image(args.size)], batch, "what color is the circle ?")
    with torch.inference_mode():
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
        times: dict[str, list[float]] = {"unpruned_prefill_ms": []}
        compacted = {}
        for name in choices:
            times[f"{name}:scoring_ms"], times[f"{name}:pruned_prefill_ms"] = [], []
        for round_index in range(args.warmup + args.repeats):
            timed = round_index >= args.warmup
            elapsed, _ = clock(
                lambda: prefill_pass(adapter, prefill.inputs_embeds, prefill.position_ids, prefill.attention_mask)
            )
            if timed:
                times["unpruned_prefill_ms"].append(elapsed)
            for name, scorer in choices.items():
                elapsed, (keep, compaction) = clock(lambda s=scorer: scoring_pass(adapter, prefill, s, args.ratio))
                compacted[name] = keep
                embeds = compaction.gather_tokens(prefill.inputs_embeds)
                positions = compaction.gather_positions(prefill.position_ids)
                pruned_ms, _ = clock(
                    lambda e=embeds, p=positions, m=compaction.attention_mask: prefill_pass(adapter, e, p, m)
                )
                if timed:
                    times[f"{name}:scoring_ms"].append(elapsed)
                    times[f"{name}:pruned_prefill_ms"].append(pruned_ms)
    unpruned = statistics.median(times["unpruned_prefill_ms"])
    visual = int((inputs.input_ids == adapter.tokens.image).sum(1).max())
    records = []
    for name, scorer in choices.items():
        scoring = statistics.median(times[f"{name}:scoring_ms"])
        kind = adapter.layer_types[scorer.layer]
        records.append(
            {
                "choice": name,
                "scoring_layer": scorer.layer,
                "mixer": kind,
                "batch": batch,
                "prompt_tokens": int(inputs.attention_mask.sum(1).max()),
                "visual_tokens": visual,
                "visual_tokens_kept": int((compacted[name] & (inputs.input_ids == adapter.tokens.image)).sum(1).max()),
                "ratio": args.ratio,
                "scoring_ms": scoring,
                "unpruned_prefill_ms": unpruned,
                "scoring_share_of_unpruned_prefill": scoring / unpruned,
                "pruned_prefill_ms": statistics.median(times[f"{name}:pruned_prefill_ms"]),
                "target_share": TARGET_SHARE if name == "first_full_attention" else None,
                "scoring_ms_all": times[f"{name}:scoring_ms"],
                "unpruned_prefill_ms_all": times["unpruned_prefill_ms"],
                "warmup": args.warmup,
                "repeats": args.repeats,
            }
        )
    return records


def environment(session, args) -> dict:
    device = session.loaded.device
    return {
        "record": "environment",
        **versions(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(session.loaded.dtype).replace("torch.", ""),
        "attn": session.loaded.attn,
        "config": args.config if not args.tiny else f"{args.config} (shrunk: --tiny)",
        "size": args.size,
        "fla_installed": importlib.util.find_spec("fla") is not None,
        "causal_conv1d_installed": importlib.util.find_spec("causal_conv1d") is not None,
        "random_weights": True,
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="qwen3.5-9b", help="shipped config name or config.json path")
    parser.add_argument("--tiny", action="store_true", help="shrink the config to toy widths (CPU smoke test)")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--size", type=int, default=1024, help="side of the square image (1024: 1024 tokens)")
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--attn", default="sdpa")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        config = tiny_config_file(Path(folder), resolve_config(args.config)) if args.tiny else args.config
        session = random_weight_session(str(config), args.device, args.dtype, args.attn)
    adapter = session.adapter
    choices = {
        "first_full_attention": session.make_scorer("hawk", None, adapter.default_scoring_layer)[0],
        "deltanet_layer_0": session.make_scorer("hawk", None, 0)[0],
    }
    print(json.dumps(environment(session, args)), flush=True)
    for batch in (int(b) for b in args.batch.split(",")):
        for record in measure(session, choices, batch, args):
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
