"""`hawk eval`: how much accuracy each pruning method keeps on the built-in synthetic held-out set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hawk_cli.cli.checks import MAX_BATCH_SIZE, MAX_EVAL_QUESTIONS, check_range
from hawk_cli.cli.options import (
    SCORER_CHOICES,
    AttnOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    NoCudaGraphsOpt,
    QuietOpt,
    WeightsOpt,
    check_device_map,
    decode_choice,
)
from hawk_cli.cli.output import Output
from hawk_cli.errors import ResourceError, UsageError

DEFAULT_RATIOS = "0.5,0.8,0.9"
DEFAULT_METHODS = "hawk,hawk-uniform,random,norm,oracle"
KINDS = ("color", "shape", "digit", "count")


def _parts(values: list[str] | None) -> list[str]:
    """Repeated options and comma lists alike: --ratio 0.5,0.8 or --ratio 0.5 --ratio 0.8."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


def parse_ratios(values: list[str] | str) -> tuple[float, ...]:
    parts = _parts([values] if isinstance(values, str) else values)
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise UsageError(
            f"--ratio must be numbers in (0, 1), got '{','.join(parts)}'", "Use e.g. --ratio 0.5,0.8,0.9"
        ) from None


def parse_methods(values: list[str] | str) -> tuple[str, ...]:
    methods = tuple(_parts([values] if isinstance(values, str) else values))
    if not methods:
        raise UsageError("--scorer is empty", f"Use e.g. --scorer {DEFAULT_METHODS}")
    return methods


def _pct(value: float | None, se: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ±{100 * se:.1f}" if se is not None else "")


def results_table(report, title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for header, justify in (
        ("method", "left"),
        ("keep", "right"),
        ("accuracy %", "right"),
        ("retained", "right"),
        ("color", "right"),
        ("shape", "right"),
        ("digit", "right"),
        ("count", "right"),
        ("recall %", "right"),
        ("scoring / prefill", "right"),
    ):
        table.add_column(header, justify=justify)
    base = report.unpruned_figures()
    table.add_row(
        "unpruned",
        "100%",
        _pct(base["accuracy"], base["accuracy_se"]),
        "100%",
        *(_pct(base["per_type"][k]["accuracy"]) for k in KINDS),
        "100",
        "-",
        end_section=True,
    )
    ratios = report.settings.ratios
    for index, ratio in enumerate(ratios):
        group = [r for r in report.results if r.ratio == ratio]
        for position, result in enumerate(group):
            f = result.figures()
            label = f["method"] + (f" ({f['bound']})" if f["bound"] else "")
            share = f["scoring_share_of_unpruned_prefill"]
            table.add_row(
                label,
                f"{100 * (1 - ratio):.0f}%",
                _pct(f["accuracy"], f["accuracy_se"]),
                _pct(f["retention"]) + "%" if f["retention"] is not None else "-",
                *(_pct(f["per_type"][k]["accuracy"]) for k in KINDS),
                _pct(f["target_recall"]),
                f"{100 * share:.0f}%" if share is not None else "-",
                end_section=position == len(group) - 1 and index < len(ratios) - 1,
            )
    return table


def render(table) -> str:
    """The table as plain text, wide enough for every column whatever the terminal (no ANSI codes in pipes)."""
    import io
    import shutil

    from rich.console import Console

    buffer = io.StringIO()
    width = max(shutil.get_terminal_size((140, 24)).columns, 140)
    Console(file=buffer, width=width, highlight=False, force_terminal=False).print(table)
    return buffer.getvalue().rstrip("\n")


def require_matplotlib() -> None:
    """Fail before any work when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ResourceError(
            "--plot needs matplotlib, which is not installed",
            "Install it with: pip install 'hawk-vlm[plot]', or leave out --plot",
        ) from None


def plot_retention(report, path: Path, overwrite: bool = False) -> None:
    """Retention against ratio, one line per method, with ±1 SE bars; written atomically as PNG."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hawk_cli.io.atomic import atomic_path

    figure, axis = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    for method in report.settings.methods:
        rows = sorted((r.figures() for r in report.results if r.method == method), key=lambda f: f["ratio"])
        style = "--" if method in ("random", "oracle") else "-"
        axis.errorbar(
            [f["ratio"] for f in rows],
            [100 * (f["retention"] or 0) for f in rows],
            yerr=[100 * (f["retention_se"] or 0) for f in rows],
            linestyle=style,
            marker="o",
            markersize=3,
            capsize=2,
            label=method,
        )
    axis.set_xlabel("ratio of visual tokens removed")
    axis.set_ylabel("accuracy retained (% of unpruned)")
    axis.set_title(f"{report.model}: synthetic held-out set, n={report.questions}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path, overwrite) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def eval_command(
    model: ModelOpt = None,
    ratio: Annotated[
        list[str] | None,
        typer.Option(
            "--ratio",
            "-r",
            help=f"Fractions of visual tokens REMOVED, each in (0, 1); comma-separate or repeat "
            f"(default {DEFAULT_RATIOS}).",
        ),
    ] = None,
    scorer: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer",
            help=f"Scorers to compare: {', '.join(SCORER_CHOICES)}, oracle; comma-separate or repeat "
            f"(default {DEFAULT_METHODS}). random and oracle are the bounds.",
        ),
    ] = None,
    weights: WeightsOpt = None,
    n: Annotated[int, typer.Option("-n", "--limit", help="Held-out questions to evaluate (the first N).")] = 2000,
    ratios_alias: Annotated[list[str] | None, typer.Option("--ratios", hidden=True)] = None,  # before 0.2
    methods_alias: Annotated[list[str] | None, typer.Option("--methods", hidden=True)] = None,  # before 0.2
    questions_alias: Annotated[int | None, typer.Option("--questions", hidden=True)] = None,  # before 0.2
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random scorer and the oracle's tie-breaks.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Questions per forward pass.")] = 16,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write a PNG of retention against ratio (needs matplotlib: pip install 'hawk-vlm[plot]')."
        ),
    ] = None,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    no_cuda_graphs: NoCudaGraphsOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Accuracy kept under pruning on the synthetic held-out set, per method x ratio, with random and oracle bounds.

    A synthetic proxy for the built-in model: not a measure of any released Qwen-VL model's accuracy.

    \b
    Examples:
      hawk eval
      hawk eval -n 200 --ratio 0.8 --scorer hawk,random,oracle
      hawk eval --json --plot retention.png > eval.jsonl
    """
    from hawk_cli.engine.session import HawkSession, versions
    from hawk_cli.io.atomic import check_writable
    from hawk_cli.tasks.evaluation import EvalSettings, evaluate

    out = Output(json_mode=json_output, quiet=quiet)
    n = questions_alias if questions_alias is not None else n
    check_range("-n", n, 1, MAX_EVAL_QUESTIONS, "2000")
    check_range("--batch-size", batch_size, 1, MAX_BATCH_SIZE, "16")
    ratios = parse_ratios((ratio or []) + (ratios_alias or []) or [DEFAULT_RATIOS])
    methods = parse_methods((scorer or []) + (methods_alias or []) or [DEFAULT_METHODS])
    settings = EvalSettings(ratios=ratios, methods=methods, n=n, seed=seed, batch_size=batch_size, weights=weights)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot writes a PNG, got '{plot}'", "Give a path ending in .png")
        check_writable(plot, force)
        require_matplotlib()
    check_device_map(device, device_map)
    session = HawkSession.open(
        model, device=device, dtype=dtype, attn=attn, decode=decode_choice(no_cuda_graphs), device_map=device_map
    )
    if session.decode_notice:
        out.note(session.decode_notice)
    with out.progress(
        f"evaluating {len(settings.methods)} methods x {len(settings.ratios)} ratios", total=settings.n
    ) as advance:
        report = evaluate(session, settings, progress=advance)
    if json_output:
        environment = {
            **session.describe(),
            "versions": versions(),
            "seed": settings.seed,
            "held_out_seed": settings.set_seed,
            "max_new_tokens": settings.max_new_tokens,
            "batch_size": settings.batch_size,
            "eval_s": report.seconds,
            "benchmark": "hawk synthetic held-out set (a proxy, not Qwen2.5-VL-7B accuracy)",
        }
        unpruned = report.unpruned_figures()
        for result in report.results:
            out.record({**result.figures(), "unpruned": unpruned, **environment})
    else:
        out.result(
            render(
                results_table(
                    report,
                    f"{session.loaded.name}: accuracy under pruning on {report.questions} "
                    "synthetic held-out questions (± binomial SE; a proxy, not Qwen2.5-VL-7B)",
                )
            )
        )
        out.info(
            f"{report.seconds:.0f} s on {session.describe()['device']}; retained = pruned / unpruned accuracy; "
            "recall = kept target tokens / target tokens; scoring / prefill = scoring time as a share of the "
            "unpruned prefill"
        )
    if plot is not None:
        plot_retention(report, plot, overwrite=force)
        out.note(f"wrote {plot}")
