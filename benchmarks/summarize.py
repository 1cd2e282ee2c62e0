"""Markdown tables and the issue-7 target check from `hawk bench --json` records.

Usage: python benchmarks/summarize.py docs/bench/bench_7b_h200.jsonl
"""

from __future__ import annotations

import json
import sys

ORDER = ("unpruned", "pruned", "downscaled", "stock_generate", "run_path")
ROWS = [
    ("inputs (host) ms", "inputs_ms", 1),
    ("vision ms", "vision_ms", 1),
    ("scoring + selection ms", "scoring_ms", 1),
    ("LLM prefill ms", "prefill_ms", 1),
    ("time to first token ms", "ttft_ms", 1),
    ("decode ms/token", "decode_ms_per_token", 2),
    ("end to end ms", "total_ms", 1),
    ("tokens/s", "tokens_per_s", 1),
    ("peak above weights, LLM prefill MB", "peak_prefill_bytes", -6),
    ("peak above weights, whole run MB", "peak_run_bytes", -6),
]


def load(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def fmt(value: float, digits: int) -> str:
    return f"{value / 1e6:,.0f}" if digits < 0 else f"{value:,.{digits}f}"


def cell(record: dict, metric: str, digits: int) -> str:
    summary = record["metrics"].get(metric)
    if summary is None:
        return "–"
    text = f"{fmt(summary['median'], digits)} ({fmt(summary['min'], digits)}–{fmt(summary['max'], digits)})"
    ratio = record["ratio_to_unpruned"].get(metric)
    return text if record["variant"] == "unpruned" or ratio is None else f"{text} **{ratio:.2f}×**"


def table(records: list[dict], batch: int) -> str:
    group = sorted((r for r in records if r["batch"] == batch), key=lambda r: ORDER.index(r["variant"]))
    heads = [r["variant"].replace("_", " ") + (f" r={r['ratio']:g}" if r["ratio"] else "") for r in group]
    lines = [f"| batch {batch} | " + " | ".join(heads) + " |", "|---" * (len(group) + 1) + "|"]
    for label, metric, digits in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(r, metric, digits) for r in group) + " |")
    base = group[0]
    lines.append(
        "| prompt tokens → kept | "
        + " | ".join(
            f"{r['prompt_tokens']}"
            + (
                f" → {r['prompt_tokens_kept']}"
                if r.get("prompt_tokens_kept", r["prompt_tokens"]) != r["prompt_tokens"]
                else ""
            )
            for r in group
        )
        + " |"
    )
    lines.append(
        "| KV cache after prefill MB | "
        + " | ".join(
            "–"
            if "kv_cache_bytes" not in r
            else f"{r['kv_cache_bytes'] / 1e6:,.1f}"
            + ("" if r is base else f" **{r['kv_cache_bytes'] / base['kv_cache_bytes']:.3f}×**")
            for r in group
        )
        + " |"
    )
    lines.append(
        "| decode floor ms (measured ÷ floor) | "
        + " | ".join(f"{r['decode_floor_ms']:.2f} ({r['decode_vs_floor']:.2f}×)" for r in group)
        + " |"
    )
    lines.append(
        "| one-time compile / capture s | "
        + " | ".join("–" if r["compile_s"] is None else f"{r['compile_s']:.1f}" for r in group)
        + " |"
    )
    return "\n".join(lines)


def find(records, batch, variant):
    return next((r for r in records if r["batch"] == batch and r["variant"] == variant), None)


def targets(records: list[dict]) -> str:
    rows = ["| target | measured | verdict |", "|---|---|---|"]

    def add(name, value, limit, fmt_value="{:.3f}"):
        if value is None:
            rows.append(f"| {name} | not measured | – |")
            return
        rows.append(f"| {name} (≤ {limit}) | {fmt_value.format(value)} | {'pass' if value <= limit else 'MISS'} |")

    p8, u8, p1 = find(records, 8, "pruned"), find(records, 8, "unpruned"), find(records, 1, "pruned")
    if p8 and u8:
        add("LLM prefill, batch 8, pruned ÷ unpruned", p8["ratio_to_unpruned"]["prefill_ms"], 0.25)
        add(
            "scoring + selection ÷ unpruned LLM prefill, batch 8",
            p8["metrics"]["scoring_ms"]["median"] / u8["metrics"]["prefill_ms"]["median"],
            0.03,
        )
        kept = p8["prompt_tokens_kept"] / u8["prompt_tokens"]
        kv = p8["kv_cache_bytes"] / u8["kv_cache_bytes"]
        rows.append(
            f"| KV bytes ÷ unpruned = kept ÷ total (within 1 %) | {kv:.4f} vs {kept:.4f} | "
            f"{'pass' if abs(kv / kept - 1) <= 0.01 else 'MISS'} |"
        )
        add(
            "peak above weights in LLM prefill, batch 8, pruned ÷ unpruned",
            p8["ratio_to_unpruned"]["peak_prefill_bytes"],
            0.3,
        )
        add("end to end, 16 new tokens, batch 8, pruned ÷ unpruned", p8["ratio_to_unpruned"]["total_ms"], 0.60)
        add("time to first token, batch 8, pruned ÷ unpruned", p8["ratio_to_unpruned"]["ttft_ms"], 0.5)
    if p1 and p1["ratio_to_stock_generate"].get("total_ms"):
        add("hawk pruned batch 1 end to end ÷ stock generate unpruned", p1["ratio_to_stock_generate"]["total_ms"], 0.40)
    for batch in sorted({r["batch"] for r in records}):
        for variant in ("pruned", "unpruned"):
            record = find(records, batch, variant)
            if record and record["decode_vs_floor"]:
                add(
                    f"compiled decode ms/token ÷ weight-streaming floor, batch {batch}, {variant}",
                    record["decode_vs_floor"],
                    1.4,
                    "{:.2f}",
                )
    return "\n".join(rows)


def main(paths: list[str]) -> None:
    records = [r for path in paths for r in load(path)]
    env = records[0]["environment"]
    print(
        f"{env['model']} · {env['device_name']} · torch {env['torch']} · transformers {env['transformers']} · "
        f"{env['dtype']} · {env['attn']} · copy bandwidth {env['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s · "
        f"decoder + head weights {env['decoder_weight_bytes'] / 1e9:.2f} GB · images {env['images']}\n"
    )
    for batch in sorted({r["batch"] for r in records}, reverse=True):
        print(table(records, batch) + "\n")
    print(targets(records))


if __name__ == "__main__":
    main(sys.argv[1:])
