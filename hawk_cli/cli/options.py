"""Options shared by the commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="'builtin' (default), a hub id or a local "
        "folder of a Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 checkpoint.",
    ),
]
RatioOpt = Annotated[
    float | None,
    typer.Option(
        "--ratio",
        "-r",
        help="Fraction of visual tokens REMOVED, in [0, 1); 0.8 keeps 20%. 0 disables pruning. Default 0.8.",
    ),
]
KeepOpt = Annotated[
    float | None,
    typer.Option(
        "--keep",
        help="Fraction of visual tokens KEPT, in (0, 1]: --keep "
        "0.2 is --ratio 0.8. Give one of --ratio, --keep, --keep-tokens.",
    ),
]
KeepTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--keep-tokens",
        help="Visual tokens kept per prompt, one "
        "budget over all its images and frames (all of them when it "
        "has fewer).",
    ),
]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="Head-importance file from 'hawk calibrate'.")]
# The scorers a user can pick for real images, as the registry (hawk_cli/scorers) names them; kept here so that
# help needs no torch import, and pinned to the registry by tests/test_cli_conventions.py.
SCORER_CHOICES = ("hawk", "hawk-uniform", "hawk-attn", "hawk-attn-prior", "norm", "random")
ScorerOpt = Annotated[
    str | None,
    typer.Option(
        "--scorer",
        help=f"Scoring method: {', '.join(SCORER_CHOICES)} "
        "(default: hawk, the published method; the built-in model "
        "recommends norm).",
    ),
]
LayerOpt = Annotated[
    int | None,
    typer.Option(
        "--layer",
        help="Decoder layer whose q/k score the visual tokens "
        "(default: the model's scoring layer: 0, or the first full-attention "
        "layer of Qwen3.5; a Gated DeltaNet layer scores with its own q/k).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Spread the model over GPUs with accelerate: auto, balanced, or a JSON file mapping "
        'module names to devices (e.g. {"model.visual": 0, "lm_head": 1}). Needs '
        "pip install 'hawk-vlm[multi-gpu]'; replaces --device.",
    ),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16.")]
AttnOpt = Annotated[str, typer.Option("--attn", help="Attention backend: sdpa, eager or flash_attention_2.")]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens to generate.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No notes or progress on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
# Read from the command line before parsing (so parse errors get a traceback too); declared for the help.
DebugOpt = Annotated[bool, typer.Option("--debug", help="Print the traceback after an error (also HAWK_DEBUG=1).")]
HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
NoCudaGraphsOpt = Annotated[
    bool,
    typer.Option(
        "--no-cuda-graphs",
        help="Run decode steps eagerly on CUDA instead of replaying captured CUDA graphs (the default there).",
    ),
]


def check_device_map(device: str, device_map: str | None) -> None:
    """--device and --device-map choose placement two ways: one of them. A map file is read and checked here,
    before anything loads."""
    if device_map is None:
        return
    if device != "auto":
        from hawk_cli.errors import UsageError

        raise UsageError(
            "--device and --device-map exclude each other",
            "Give --device-map alone to spread the model, or --device alone to load it on one device",
        )
    from hawk_cli.io.placement import read_device_map, require_accelerate

    require_accelerate()
    read_device_map(device_map)


def decode_choice(no_cuda_graphs: bool, compile_decode: bool = False) -> str:
    """The session's decode mode from the shared flags ("auto": CUDA graphs on CUDA, eager elsewhere)."""
    if compile_decode:
        return "compile"
    return "eager" if no_cuda_graphs else "auto"


def flag_for(setting: str) -> str:
    """The command-line flag of a library setting: `max_new_tokens` -> `--max-new-tokens`, `n` -> `-n`."""
    return f"-{setting}" if len(setting) == 1 else "--" + setting.replace("_", "-")
