"""`hawk run`: answer questions about images or video frames, pruning visual tokens first.

Two modes:
* one prompt: `hawk run IMAGE... QUESTION` (and/or `--video PATH`); the answer on stdout, stats on stderr;
* JSONL: `hawk run --input FILE.jsonl` or `hawk run -` (stdin): one request per line, one JSON result per line
  on stdout in input order, run in batches of `--batch-size`. A bad request gives an error record and the
  stream goes on; the exit code is then 1.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from hawk_cli.cli.checks import MAX_BATCH_SIZE, check_distinct_paths, check_range, resolve_budget
from hawk_cli.cli.options import (
    AttnOpt,
    DebugOpt,
    DeviceMapOpt,
    DeviceOpt,
    DtypeOpt,
    ForceOpt,
    JsonOpt,
    KeepOpt,
    KeepTokensOpt,
    LayerOpt,
    MaxNewTokensOpt,
    ModelOpt,
    NoCudaGraphsOpt,
    QuietOpt,
    RatioOpt,
    ScorerOpt,
    WeightsOpt,
    check_device_map,
    decode_choice,
)
from hawk_cli.cli.output import Output
from hawk_cli.cli.run_shared import (
    SessionChoice,
    builtin_notes,
    compile_note,
    open_session,
    open_sink,
    overlay_picture,
    settings_origin,
)
from hawk_cli.errors import InputError, UsageError

DEFAULT_RATIO = 0.8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEFAULT_FPS = 2.0  # the stock Qwen2.5-VL processor's default (second_per_grid_ts = 2 / fps = 1.0)


def _looks_like_image_file(argument: str) -> bool:
    return Path(argument).suffix.lower() in IMAGE_SUFFIXES and Path(argument).is_file()


def _names_a_file(argument: str) -> bool:
    """A file or folder name rather than a question: an existing path, or a one-word image file name."""
    if "\x00" in argument:
        return False
    return os.path.exists(argument) or (
        not any(c.isspace() for c in argument) and Path(argument).suffix.lower() in IMAGE_SUFFIXES
    )


def split_arguments(arguments: list[str], need_image: bool = True) -> tuple[list[str], str]:
    """IMAGE... QUESTION -> (images, question); QUESTION '-' is read from stdin. With a video, images are optional.

    A last argument that names a file is never taken as the question (`hawk run a.png b.png` forgot it)."""
    from hawk_cli.io.text import check_question, read_question

    if len(arguments) < (2 if need_image else 1):
        raise UsageError(
            "hawk run needs at least one image and a question" if need_image else "hawk run needs a question",
            'Example: hawk run photo.jpg "what is in the picture?"',
        )
    *images, question = arguments
    if images and _looks_like_image_file(question) and not _looks_like_image_file(images[0]):
        raise UsageError(
            f"the question must come last, but the last argument '{question}' is an image file",
            "Put the images first: hawk run IMAGE... QUESTION",
        )
    if question != "-" and _names_a_file(question):
        raise UsageError(
            f"the question is missing: the last argument '{question}' names a file",
            "Give the question last: hawk run IMAGE... QUESTION",
        )
    if question == "-":
        question = read_question(sys.stdin)
    if not question.strip():
        raise InputError("the question is empty", "Pass the question as the last argument, or '-' to read stdin")
    return images, check_question(question)


def stats_line(answer, ratio: float, seconds: float, keep_tokens: int | None = None) -> str:
    """One line on stderr: what was kept, of which image (when there are several), from what budget."""
    stats = answer.stats
    budget = f"keep-tokens {keep_tokens}" if keep_tokens is not None else f"ratio {ratio:.2f}"
    blocks = answer.visual_blocks
    kept_sizes = zip(answer.kept_per_block(), blocks, strict=True)
    per_image = "; per image " + ", ".join(f"{kept}/{size}" for kept, size in kept_sizes) if len(blocks) > 1 else ""
    return (
        f"kept {stats.visual_tokens_kept}/{stats.visual_tokens} visual tokens ({budget}{per_image}), "
        f"prompt {stats.prompt_tokens}\u2192{stats.prompt_tokens_kept}, {seconds:.2f} s"
        + (" (no instruction after the image: scored with the user's text)" if stats.query_fallback else "")
    )


def run_command(
    arguments: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE... QUESTION",
            help="Images, then the question ('-': stdin). '-' alone: JSONL requests on stdin.",
        ),
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help='JSONL requests, one per line: {"id", "images" or "video", "question", '
            '"ratio"?, "max_new_tokens"?, "fps"?}. Exit code 1 when any request '
            "failed.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="JSONL mode: requests per padded batch.")] = 1,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write the results to FILE (atomically) instead of stdout.")
    ] = None,
    force: ForceOpt = False,
    video: Annotated[
        list[str] | None,
        typer.Option(
            "--video",
            help="A folder of frames, an animated GIF / multi-frame image, or a frame file (repeat the "
            "option for several frames).",
        ),
    ] = None,
    fps: Annotated[
        float, typer.Option("--fps", help="Frame rate the video frames were sampled at; sets their time positions.")
    ] = DEFAULT_FPS,
    overlay: Annotated[
        str | None,
        typer.Option(
            "--overlay", help="Picture of the kept tokens (a PNG file; a folder in JSONL mode, one file per id)."
        ),
    ] = None,
    overlay_scores: Annotated[
        bool, typer.Option("--overlay-scores", help="Colour kept cells by score rank (blue low, red high).")
    ] = False,
    model: ModelOpt = None,
    ratio: RatioOpt = None,
    keep: KeepOpt = None,
    keep_tokens: KeepTokensOpt = None,
    weights: WeightsOpt = None,
    scorer: ScorerOpt = None,
    layer: LayerOpt = None,
    max_new_tokens: MaxNewTokensOpt = 32,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="JSONL mode: split the requests over these GPUs (e.g. 0,1,2,3), one process per GPU, "
            "results merged in input order. Needs --input FILE.",
        ),
    ] = None,
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    no_cuda_graphs: NoCudaGraphsOpt = False,
    compile_decode: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Compile the decode step (torch.compile, "
            "CUDA only): extra fusion for long answers, after a one-time "
            "compilation of a minute or more.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> int:
    """Answer QUESTION about IMAGE(s) or a video with HAWK pruning. The answer goes to stdout, stats to stderr.

    \b
    Examples:
      hawk run a.jpg b.jpg "what changed?" --ratio 0.9
      hawk run photo.jpg "what is on the table?" --keep-tokens 64 --json
      hawk run --video frames/ "what happens?" --fps 2 --overlay kept.png
      cat requests.jsonl | hawk run - --batch-size 8 > results.jsonl
    """
    from hawk_cli.engine.generation import GenerationSettings
    from hawk_cli.io.frames import validate_fps

    out = Output(json_mode=json_output, quiet=quiet)
    arguments = list(arguments or [])
    # A lone '-' is JSONL on stdin; with --video it is the question, read from stdin.
    jsonl = input_file is not None or (arguments == ["-"] and not video)
    if input_file is not None and arguments:
        raise UsageError("--input takes no IMAGE or QUESTION arguments", "Put them in the JSONL lines")
    check_range("--batch-size", batch_size, 1, MAX_BATCH_SIZE, "8")
    try:
        validate_fps(fps)
    except InputError as error:
        raise UsageError(error.message, error.fix) from None
    ratio, keep_tokens = resolve_budget(ratio, keep, keep_tokens, DEFAULT_RATIO)
    settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens, keep_tokens=keep_tokens)  # validated
    if compile_decode and no_cuda_graphs:
        raise UsageError(
            "--compile and --no-cuda-graphs exclude each other (a compiled step replays CUDA graphs)",
            "Give one of them",
        )
    check_device_map(device, device_map)
    choice = SessionChoice(
        model, device, dtype, attn, scorer, weights, decode_choice(no_cuda_graphs, compile_decode), layer, device_map
    )
    if gpus is not None:
        from hawk_cli.cli.run_gpus import run_over_gpus, worker_flags

        if input_file in (None, "-") or video:
            raise UsageError("--gpus splits a JSONL file", "Give --input FILE.jsonl")
        if device_map is not None or device != "auto":
            raise UsageError(
                "--gpus puts one whole model on each GPU; it excludes --device and --device-map", "Give --gpus alone"
            )
        flags = worker_flags(
            batch_size=batch_size,
            fps=fps,
            overlay=overlay,
            overlay_scores=overlay_scores,
            model=model,
            ratio=ratio if keep_tokens is None else None,
            keep_tokens=keep_tokens,
            weights=weights,
            scorer=scorer,
            layer=layer,
            max_new_tokens=max_new_tokens,
            dtype=dtype,
            attn=attn,
            no_cuda_graphs=no_cuda_graphs,
            compile=compile_decode,
            force=force,
        )
        return run_over_gpus(out, input_file, gpus, output, force, flags)
    if jsonl:
        if video:
            raise UsageError(
                '--video is for one prompt; in JSONL mode give "video" in each line',
                'Write e.g. {"video": "clip.gif", "question": "..."}',
            )
        from hawk_cli.cli.run_jsonl import run_jsonl

        return run_jsonl(out, input_file, batch_size, output, force, fps, overlay, overlay_scores, settings, choice)
    return _run_one(
        out, arguments, output, force, video or [], fps, overlay, overlay_scores, settings, choice, json_output
    )


def _run_one(
    out: Output,
    arguments,
    output,
    force,
    video,
    fps,
    overlay,
    overlay_scores,
    settings,
    choice: SessionChoice,
    json_output,
) -> int:
    from hawk_cli.engine.session import versions
    from hawk_cli.io.atomic import check_writable
    from hawk_cli.io.frames import read_frames
    from hawk_cli.io.images import load_images
    from hawk_cli.io.overlay import save_overlay
    from hawk_cli.io.requests import Request

    image_paths, question = split_arguments(arguments, need_image=not video)
    ratio, keep_tokens, max_new_tokens = settings.ratio, settings.keep_tokens, settings.max_new_tokens
    check_distinct_paths(
        {"--output": output, "--overlay": overlay}, {"an input image": image_paths, "a video input": video}
    )
    if output is not None:
        check_writable(Path(output), force)
    if overlay is not None:
        check_writable(Path(overlay), force)
    images = load_images(image_paths)
    frames = tuple(read_frames(video)) if video else ()
    request = Request(question=question, images=images, video=frames, fps=fps)
    session, method = open_session(out, choice)
    session.check_new_tokens(max_new_tokens)
    for note in builtin_notes(session, request):
        out.note(note)
    batch = session.run([request], method, settings)
    answer, timings = batch.answers[0], batch.result.timings
    if overlay is not None:
        save_overlay(Path(overlay), overlay_picture(session, request, answer, overlay_scores), overwrite=force)
    with ExitStack() as stack:
        sink = open_sink(stack, out, output, force)
        if json_output:
            record = {
                "answer": answer.text,
                "ratio": ratio if keep_tokens is None else None,
                "keep_tokens": keep_tokens,
                **method.describe(),
                **settings_origin(session, choice),
                **session.describe(),
                **answer.stats.to_dict(),
                "visual_tokens_per_image": list(answer.visual_blocks),
                "visual_tokens_kept_per_image": list(answer.kept_per_block()),
                "generated_tokens": len(answer.tokens),
                "timings": timings,
                "kv_cache_bytes": batch.result.kv_cache_bytes,
                "versions": versions(),
            }
            if frames:
                record.update(video_frames=len(frames), fps=fps)
            if overlay is not None:
                record["overlay"] = str(overlay)
            sink.record(record)
        else:
            sink.text(answer.text)
    if not json_output:
        out.info(stats_line(answer, ratio, timings["total_s"], keep_tokens))
    note = compile_note(session)
    if note:
        out.note(note)
    return 0
