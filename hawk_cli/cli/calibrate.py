"""`hawk calibrate DATA -o FILE`: per-head importance of the scoring layer, saved as a head-weights file."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from typing import Annotated

import typer

from hawk_cli.cli.checks import MAX_BATCH_SIZE, check_distinct_paths, check_range
from hawk_cli.cli.options import (
    AttnOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    ModelOpt,
    QuietOpt,
    check_device_map,
)
from hawk_cli.cli.output import Output
from hawk_cli.errors import Interrupted

DataArg = Annotated[
    str,
    typer.Argument(
        metavar="DATA",
        help="A folder with questions.jsonl, a JSONL file "
        "(image, question, optional answer and subset per line), or builtin:N "
        "for N synthetic questions of the built-in model's world.",
    ),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="The .safetensors file to write.")]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="ablation: drop of the reference answer's "
        "log-likelihood, reduced by the paper's Eq. 3 (needs answers). kl: "
        "label-free, KL between unablated and ablated next-token distributions.",
    ),
]
LayerOpt = Annotated[
    int | None,
    typer.Option(
        "--layer",
        help="Decoder layer whose query heads are ablated "
        "(default: the layer HAWK scores at: 0, or the first "
        "full-attention layer of a hybrid model such as Qwen3.5).",
    ),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", help="Use only the first N questions.")]
BatchOpt = Annotated[
    int,
    typer.Option(
        "--batch-size", "-b", help="Questions per forward pass; each is replicated once per head plus once unablated."
    ),
]
MaxTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="kl: longest greedy answer measured.")]


def _command_line(data: str, output: str, model: str | None, method: str, layer: int, limit: int | None) -> str:
    parts = ["hawk", "calibrate", data, "-o", output, "--method", method, "--layer", str(layer)]
    if model:
        parts += ["--model", model]
    if limit is not None:
        parts += ["--limit", str(limit)]
    return shlex.join(parts)


def _refuse_control_tokens(session, dataset) -> None:
    """Questions and answers are user text: a typed control token is refused, as in 'hawk run'."""
    from hawk_cli.io.text import refuse_control_tokens

    texts, labels = [], []
    for sample in dataset.samples:
        texts.append(sample.question)
        labels.append(f"{sample.where}: the question")
        if sample.answer is not None:
            texts.append(sample.answer)
            labels.append(f"{sample.where}: the answer")
    refuse_control_tokens(session.tokenizer, texts, labels)


def calibrate_command(
    data: DataArg,
    output: OutputOpt,
    model: ModelOpt = None,
    method: MethodOpt = "ablation",
    layer: LayerOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchOpt = 8,
    max_new_tokens: MaxTokensOpt = 16,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Measure how much each query head of the scoring layer matters, and save the weights for 'hawk run --weights'.

    \b
    Examples:
      hawk calibrate builtin:200 -o heads.safetensors
      hawk calibrate my_images/ -o heads.safetensors --model ./Qwen2.5-VL-3B-Instruct --method kl
      hawk weights show heads.safetensors
    """
    from dataclasses import replace
    from pathlib import Path

    from hawk_cli.engine.head_weights import model_shape
    from hawk_cli.engine.session import HawkSession, versions
    from hawk_cli.io.atomic import check_writable
    from hawk_cli.io.calibration_data import load_calibration_data
    from hawk_cli.io.weights import HeadWeights, save_head_weights
    from hawk_cli.tasks.calibration import ABLATION, MEASURES, CalibrationSettings, calibrate, calibration_layer

    out = Output(json_mode=json_output, quiet=quiet)
    check_range("--batch-size", batch_size, 1, MAX_BATCH_SIZE, "8")
    data_file = Path(data) / "questions.jsonl" if Path(data).is_dir() else Path(data)
    check_distinct_paths({"--output": output}, {"the calibration data": [data_file]})
    path = check_writable(Path(output), force)
    settings = CalibrationSettings(method=method, layer=layer, batch_size=batch_size, max_new_tokens=max_new_tokens)
    dataset = load_calibration_data(data, limit)
    if method == "ablation":
        dataset.require_answers()
    check_device_map(device, device_map)
    session = HawkSession.open(model, device=device, dtype=dtype, attn=attn, device_map=device_map)
    session.check_new_tokens(max_new_tokens)
    _refuse_control_tokens(session, dataset)
    layer = calibration_layer(session.adapter, layer)
    settings = replace(settings, layer=layer)
    shape = model_shape(session.model.config)
    counts = dataset.subset_counts()
    out.note(
        f"calibrating {shape['num_heads']} heads of layer {layer} by {method} on {len(dataset.samples)} "
        f"questions ({', '.join(f'{k} {v}' for k, v in counts.items())})"
    )
    try:
        with out.progress(f"calibrate ({method})", total=len(dataset.samples)) as advance:
            result = calibrate(session, dataset, settings, progress=advance)
        version = versions()
        metadata = {
            "model": session.loaded.name,
            "model_path": "builtin" if session.loaded.is_builtin else session.loaded.path,
            **shape,
            "layer": layer,
            "method": method,
            "measure": MEASURES[method],
            "ablation": ABLATION,
            "reduction": "eq3",
            "subsets": result.subsets,
            "samples_per_subset": result.counts,
            "num_samples": len(dataset.samples),
            "data": data,
            "data_fingerprint": dataset.fingerprint,
            "baseline_log_likelihood": result.baseline,
            "dtype": str(session.loaded.dtype).replace("torch.", ""),
            "device": str(session.loaded.device),
            "hawk_version": version["hawk"],
            "transformers_version": version["transformers"],
            "torch_version": version["torch"],
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": _command_line(data, output, model, method, layer, limit),
        }
        weights = HeadWeights(
            values=result.importance,
            source=str(path),
            metadata=metadata,
            extra_tensors={"subset_drops": result.subset_drops},
        )
        save_head_weights(path, weights, overwrite=force)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; no weights file was written") from None
    values = result.importance.tolist()
    if json_output:
        out.record(
            {
                **metadata,
                "path": str(path),
                "head_importance": values,
                "subset_drops": {name: result.subset_drops[i].tolist() for i, name in enumerate(result.subsets)},
                "seconds": result.seconds,
            }
        )
        return
    order = sorted(range(len(values)), key=lambda h: -values[h])[:3]
    out.note(
        f"done in {result.seconds:.1f} s; top heads "
        + ", ".join(f"{h} ({values[h]:.3f})" for h in order)
        + f"; see 'hawk weights show {shlex.quote(str(path))}'"
    )
    out.result(str(path))
