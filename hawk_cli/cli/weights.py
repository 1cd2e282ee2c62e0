"""`hawk weights show FILE`: a head-importance file as a small bar chart plus its metadata (or `--json`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from hawk_cli.cli.options import HELP_SETTINGS, DebugOpt, JsonOpt
from hawk_cli.cli.output import Output

weights_app = typer.Typer(
    name="weights",
    help="Inspect head-importance files made by 'hawk calibrate'.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)

BAR_WIDTH = 32
EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar in eighths of a character, `width` characters for `largest`."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = round(value / largest * width * 8)
    return "█" * (eighths // 8) + (EIGHTHS[eighths % 8] if eighths % 8 else "")


def _parsed(value: str):
    """Metadata values are strings; those written from lists or objects are JSON: give them back as such."""
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def render(path: str, values: list[float], metadata: dict, extra: dict) -> str:
    largest = max(values) if values else 0.0
    lines = [f"{path}: {len(values)} head weights (sum {sum(values):.4f})"]
    lines += [f"  head {h:>3}  {v:.4f}  {bar(v, largest)}" for h, v in enumerate(values)]
    drops = extra.get("subset_drops")
    subsets = _parsed(metadata.get("subsets", "[]"))
    if drops is not None and isinstance(subsets, list) and len(subsets) == len(drops):
        lines.append("raw drops per subset (before Eq. 3):")
        width = max(len(str(s)) for s in subsets)
        lines += [
            f"  {str(name):<{width}}  " + " ".join(f"{d:10.4g}" for d in row)
            for name, row in zip(subsets, drops, strict=False)
        ]
    if metadata:
        lines.append("metadata:")
        width = max(len(k) for k in metadata)
        lines += [f"  {key:<{width}}  {metadata[key]}" for key in sorted(metadata)]
    return "\n".join(lines)


@weights_app.command("show", context_settings=HELP_SETTINGS)
def show_command(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A .safetensors file from 'hawk calibrate'.")],
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print a head-importance file's weights as a bar chart, with its metadata.

    \b
    Examples:
      hawk weights show heads.safetensors
      hawk weights show heads.safetensors --json
    """
    from hawk_cli.io.weights import load_head_weights

    out = Output(json_mode=json_output)
    weights = load_head_weights(file)
    values = weights.values.tolist()
    extra = {name: tensor.tolist() for name, tensor in weights.extra_tensors.items()}
    if json_output:
        out.record(
            {
                "path": file,
                "head_importance": values,
                "metadata": {k: _parsed(v) for k, v in weights.metadata.items()},
                "tensors": extra,
            }
        )
    else:
        out.result(render(file, values, weights.metadata, extra))
