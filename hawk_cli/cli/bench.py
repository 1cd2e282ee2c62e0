"""`hawk bench`: pruned vs unpruned side by side (per-phase latency, throughput, KV and peak memory), or `--check`.

The table goes to stdout (or JSONL with --json), progress and notes to stderr.
"""

from __future__ import annotations

from typing import Annotated

import typer

from hawk_cli.cli.checks import MAX_BATCH_SIZE, MAX_ROUNDS, check_range
from hawk_cli.cli.options import (
    AttnOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LayerOpt,
    ModelOpt,
    NoCudaGraphsOpt,
    QuietOpt,
    ScorerOpt,
    WeightsOpt,
    check_device_map,
    decode_choice,
)
from hawk_cli.cli.output import Output
from hawk_cli.errors import UsageError


def _numbers(values: list[str], kind, what: str) -> tuple:
    """Accept repeated options and comma lists alike: --batch-size 1,8 or --batch-size 1 --batch-size 8."""
    try:
        return tuple(kind(part) for value in values for part in value.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{what} must be numbers, got {', '.join(values)}", f"Use e.g. --{what} 1,8") from None


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f}"


def _cell(record: dict, metric: str, scale=None) -> str:
    summary = record["metrics"].get(metric)
    if summary is None:
        return "–"
    show = scale or (lambda v: f"{v:,.1f}")
    text = f"{show(summary['median'])} [{show(summary['min'])}–{show(summary['max'])}]"
    ratio = record["ratio_to_unpruned"].get(metric)
    return text if record["variant"] == "unpruned" or ratio is None else f"{text} {ratio:.2f}×"


ROWS = [
    ("inputs (host) ms", "inputs_ms", None),
    ("vision ms", "vision_ms", None),
    ("scoring + selection ms", "scoring_ms", None),
    ("LLM prefill ms", "prefill_ms", None),
    ("time to first token ms", "ttft_ms", None),
    ("decode ms/token", "decode_ms_per_token", lambda v: f"{v:.2f}"),
    ("end to end ms", "total_ms", None),
    ("tokens/s", "tokens_per_s", None),
    ("peak above weights, prefill MB", "peak_prefill_bytes", _mb),
    ("peak above weights, run MB", "peak_run_bytes", _mb),
]


def render_tables(records: list[dict], out: Output) -> None:
    from rich.console import Console
    from rich.table import Table

    for batch in sorted({r["batch"] for r in records}):
        group = [r for r in records if r["batch"] == batch]
        table = Table(
            title=f"batch {batch}, {group[0]['max_new_tokens']} new tokens "
            f"(median, min–max of {group[0]['repeats']}, ratio to unpruned)"
        )
        table.add_column("")
        for record in group:
            label = record["variant"].replace("_", " ")
            table.add_column(label if record["ratio"] == 0 else f"{label} r={record['ratio']:g}", justify="right")
        for label, metric, scale in ROWS:
            table.add_row(label, *[_cell(r, metric, scale) for r in group])
        table.add_row(
            "prompt tokens (kept)",
            *[
                f"{r['prompt_tokens']}"
                + (
                    f" → {r['prompt_tokens_kept']}"
                    if "prompt_tokens_kept" in r and r["prompt_tokens_kept"] != r["prompt_tokens"]
                    else ""
                )
                for r in group
            ],
        )
        table.add_row(
            "KV cache after prefill MB",
            *[
                "–"
                if "kv_cache_bytes" not in r
                else _mb(r["kv_cache_bytes"])
                + (f" {r['kv_cache_bytes'] / group[0]['kv_cache_bytes']:.3f}×" if r["variant"] != "unpruned" else "")
                for r in group
            ],
        )
        table.add_row(
            "decode floor ms (× floor)",
            *[
                f"{r['decode_floor_ms']:.2f}" + (f" ({r['decode_vs_floor']:.2f}×)" if r["decode_vs_floor"] else "")
                for r in group
            ],
        )
        table.add_row(
            "compile / first-call overhead s",
            *["–" if r["compile_s"] is None else f"{r['compile_s']:.1f}" for r in group],
        )
        Console(highlight=False, width=200).print(table)
    env = records[0]["environment"]
    out.result(
        f"{env['model']} on {env['device_name']} ({env['dtype']}, {env['attn']}, "
        f"decode: {env['decode']}, run path: {env['run_path_decode']}), torch {env['torch']}, "
        f"transformers {env['transformers']}; copy bandwidth "
        f"{env['copy_bandwidth_bytes_per_s'] / 1e9:,.0f} GB/s"
    )
    if env["random_weights"]:
        out.result("random weights: speed and memory only")


def bench_command(
    model: ModelOpt = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Build the model from a config instead: "
            "a shipped name (qwen2.5-vl-7b, qwen2.5-vl-3b, qwen2.5-vl-32b, "
            "qwen2.5-vl-72b with --device-map, qwen3-vl-8b, qwen3-vl-30b-a3b, "
            "...) or a config.json (needs --random-weights).",
        ),
    ] = None,
    random_weights: Annotated[
        bool,
        typer.Option(
            "--random-weights", help="Random weights from the config (speed and memory only; no checkpoint needed)."
        ),
    ] = False,
    ratio: Annotated[
        list[str],
        typer.Option("--ratio", "-r", help="Fraction of visual tokens removed; repeat or comma-separate for several."),
    ] = ["0.8"],  # noqa: B006
    batch_size: Annotated[
        list[str] | None,
        typer.Option("--batch-size", "-b", help="Batch sizes; comma-separate or repeat (default 1,8)."),
    ] = None,
    batch_alias: Annotated[list[str] | None, typer.Option("--batch", hidden=True)] = None,  # before 0.2
    image: Annotated[
        list[str] | None,
        typer.Option("--image", help="Image file(s); row r uses image r mod n. Default: a synthetic --size image."),
    ] = None,
    size: Annotated[int, typer.Option("--size", help="Side of the synthetic square image.")] = 1008,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens generated per row (forced: end-of-sequence is ignored).")
    ] = 16,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed rounds first (compile happens here).")] = 2,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed rounds; medians with min–max.")] = 5,
    compile_decode: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="Compiled static-cache "
            "decode step for the unpruned, pruned and downscaled "
            "variants (default: on CUDA; --no-compile: 'hawk run''s "
            "captured steps).",
        ),
    ] = None,
    stock: Annotated[bool, typer.Option("--stock/--no-stock", help="Also time stock model.generate.")] = True,
    run_path: Annotated[
        bool,
        typer.Option(
            "--run-path/--no-run-path",
            help="Also time exactly what 'hawk run' executes (CUDA graphs on CUDA, never compiled).",
        ),
    ] = True,
    no_cuda_graphs: NoCudaGraphsOpt = False,
    weights: WeightsOpt = None,
    scorer: ScorerOpt = None,
    layer: LayerOpt = None,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Instead of timing: prune and compare with the model's oracle; PASS/FAIL, exit 1 on FAIL."
        ),
    ] = False,
    check_steps: Annotated[int, typer.Option("--check-steps", help="Decode steps compared by --check.")] = 4,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Time pruned vs unpruned runs of one model in one process, interleaved, through the same engine loop.

    \b
    Examples:
      hawk bench --repeats 3
      hawk bench --config qwen2.5-vl-7b --random-weights --batch-size 1,8 --json
      hawk bench --model ./my-qwen --check
    """
    from hawk_cli.engine.session import HawkSession
    from hawk_cli.io.images import load_image
    from hawk_cli.tasks.benchmark import Bench, BenchSettings, random_weight_session, synthetic_image

    out = Output(json_mode=json_output, quiet=quiet)
    check_device_map(device, device_map)
    if config is not None and model is not None:
        raise UsageError("--model and --config exclude each other", "Give one of them")
    if config is not None and not random_weights:
        raise UsageError("--config builds a model without weights", "Add --random-weights")
    batches = _numbers((batch_size or []) + (batch_alias or []) or ["1,8"], int, "batch-size")
    for value in batches:
        if value >= 1:  # below 1: the engine's own message
            check_range("--batch-size", value, 1, MAX_BATCH_SIZE, "1,8")
    check_range("--repeats", repeats, 1, MAX_ROUNDS, "5")
    check_range("--warmup", warmup, 0, MAX_ROUNDS, "2")
    settings = BenchSettings(
        ratios=_numbers(ratio, float, "ratio"),
        batches=batches,
        size=size,
        max_new_tokens=max_new_tokens,
        warmup=warmup,
        repeats=repeats,
        compile=compile_decode,
        stock=stock,
        run_path=run_path,
    )
    images = [load_image(path) for path in image] if image else [synthetic_image(size)]
    if random_weights:
        out.note(f"building {config or model or 'builtin'} with random weights: speed and memory only")
        session = random_weight_session(
            config or model or "builtin", device, dtype, attn, decode_choice(no_cuda_graphs), device_map=device_map
        )
    else:
        session = HawkSession.open(
            model, device=device, dtype=dtype, attn=attn, decode=decode_choice(no_cuda_graphs), device_map=device_map
        )
    session.check_new_tokens(max_new_tokens)
    session.check_new_tokens(check_steps, "check_steps")
    if session.decode_notice:
        out.note(session.decode_notice)
    method, notices = session.make_scorer(scorer, weights, layer)
    for notice in notices:
        out.note(notice)
    if check:
        _check(out, session, method, images, settings, check_steps, json_output)
        return
    variants = 1 + int(settings.stock) + (2 + int(settings.run_path)) * len(settings.ratios)
    total = len(settings.batches) * (settings.warmup + settings.repeats) * variants
    with out.progress("benchmarking", total=total) as advance:

        def progress(message: str) -> None:
            if message.endswith("(warm-up 1)") or message.endswith(f"(repeat {settings.warmup + 1})"):
                out.info(f"hawk bench: {message}")
            advance()

        records = []
        for record in Bench(session, method, settings, images, random_weights, progress).iter_records():
            records.append(record)
            if json_output:
                out.record(record)
    if not json_output:
        render_tables(records, out)


def _check(out: Output, session, method, images, settings, steps: int, json_output: bool) -> None:
    from hawk_cli.tasks.benchmark import run_check

    batch, ratio = settings.batches[0], settings.ratios[0]
    report = run_check(session, method, images, batch, ratio, steps, settings.question)
    verdict = "PASS" if report.passed else "FAIL"
    if json_output:
        out.record({"check": verdict, "batch": batch, "ratio": ratio, **report.to_dict(), **session.describe()})
    else:
        out.result(
            f"{verdict}: pruned decoding vs the {report.oracle} oracle, batch {batch}, ratio {ratio:g}: "
            f"max |Δlogit| {max(report.step_max_abs_logit_diff):.3g} (tolerance {report.tolerance:.3g}, "
            f"logit scale {report.max_abs_logit:.3g}), tokens equal {report.tokens_equal}/"
            f"{report.tokens_compared}, visual tokens kept {report.visual_tokens_kept}/{report.visual_tokens}"
        )
    if not report.passed:
        raise typer.Exit(1)
