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
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Iterator, Optional, TextIO

import typer

from hawk_cli.cli.options import (AttnOpt, DeviceMapOpt, DeviceOpt, DtypeOpt, ForceOpt, JsonOpt, LayerOpt,
                                  MaxNewTokensOpt, ModelOpt, NoCudaGraphsOpt, QuietOpt, RatioOpt, ScorerOpt, WeightsOpt,
                                  check_device_map, decode_choice)
from hawk_cli.cli.output import Output
from hawk_cli.errors import InputError, UsageError

DEFAULT_RATIO = 0.8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEFAULT_FPS = 2.0  # the stock Qwen2.5-VL processor's default (second_per_grid_ts = 2 / fps = 1.0)


def _looks_like_image_file(argument: str) -> bool:
    from pathlib import Path

    return Path(argument).suffix.lower() in IMAGE_SUFFIXES and Path(argument).is_file()


def split_arguments(arguments: list[str], need_image: bool = True) -> tuple[list[str], str]:
    """IMAGE... QUESTION -> (images, question); QUESTION '-' is read from stdin. With a video, images are optional."""
    if len(arguments) < (2 if need_image else 1):
        raise UsageError("hawk run needs at least one image and a question" if need_image else
                         "hawk run needs a question",
                         "Example: hawk run photo.jpg \"what is in the picture?\"")
    *images, question = arguments
    if images and _looks_like_image_file(question) and not _looks_like_image_file(images[0]):
        raise UsageError(f"the question must come last, but the last argument '{question}' is an image file",
                         "Put the images first: hawk run IMAGE... QUESTION")
    if question == "-":
        question = sys.stdin.read()
    question = question.strip()
    if not question:
        raise InputError("the question is empty", "Pass the question as the last argument, or '-' to read stdin")
    return images, question


def stats_line(stats, ratio: float, seconds: float) -> str:
    return (f"kept {stats.visual_tokens_kept}/{stats.visual_tokens} visual tokens (ratio {ratio:.2f}), "
            f"prompt {stats.prompt_tokens}\u2192{stats.prompt_tokens_kept}, {seconds:.2f} s"
            + (" (no instruction after the image: scored with the user's text)" if stats.query_fallback else ""))


class _Sink:
    """Where results go: stdout (flushed per line), or a temp file moved over --output at the end."""

    def __init__(self, out: Output, handle: TextIO | None) -> None:
        self.out, self.handle = out, handle

    def record(self, data: dict) -> None:
        if self.handle is None:
            self.out.record(data)
        else:
            import json

            self.handle.write(json.dumps(data, ensure_ascii=False) + "\n")
            self.handle.flush()

    def text(self, line: str) -> None:
        if self.handle is None:
            self.out.result(line)
        else:
            self.handle.write(line + "\n")


def _open_sink(stack: ExitStack, out: Output, output: str | None, force: bool) -> _Sink:
    if output is None:
        return _Sink(out, None)
    from hawk_cli.io.atomic import atomic_path, check_writable

    temporary = stack.enter_context(atomic_path(check_writable(Path(output), force)))
    return _Sink(out, stack.enter_context(open(temporary, "w", encoding="utf-8")))


def run_command(
    arguments: Annotated[Optional[list[str]], typer.Argument(
        metavar="IMAGE... QUESTION", help="Images, then the question ('-': stdin). '-' alone: JSONL requests on "
                                          "stdin.")] = None,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", "-i", help="JSONL requests, one per line: {\"id\", \"images\" or \"video\", \"question\", "
                              "\"ratio\"?, \"max_new_tokens\"?, \"fps\"?}. Exit code 1 when any request "
                              "failed.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="JSONL mode: requests per padded "
                                                                       "batch.")] = 1,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the results to FILE "
                                                  "(atomically) instead of stdout.")] = None,
    force: ForceOpt = False,
    video: Annotated[Optional[list[str]], typer.Option(
        "--video", help="A folder of frames, an animated GIF / multi-frame image, or a frame file (repeat the "
                        "option for several frames).")] = None,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate the video frames were sampled at; sets their "
                                                     "time positions.")] = DEFAULT_FPS,
    overlay: Annotated[Optional[str], typer.Option(
        "--overlay", help="Picture of the kept tokens (a PNG file; a folder in JSONL mode, one file per id).")] = None,
    overlay_scores: Annotated[bool, typer.Option("--overlay-scores", help="Colour kept cells by score rank "
                                                                          "(blue low, red high).")] = False,
    model: ModelOpt = None,
    ratio: RatioOpt = DEFAULT_RATIO,
    weights: WeightsOpt = None,
    scorer: ScorerOpt = None,
    layer: LayerOpt = None,
    max_new_tokens: MaxNewTokensOpt = 32,
    device: DeviceOpt = "auto",
    device_map: DeviceMapOpt = None,
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", help="JSONL mode: split the requests over these GPUs (e.g. 0,1,2,3), one process per GPU, "
                       "results merged in input order. Needs --input FILE.")] = None,
    dtype: DtypeOpt = "auto",
    attn: AttnOpt = "sdpa",
    no_cuda_graphs: NoCudaGraphsOpt = False,
    compile_decode: Annotated[bool, typer.Option("--compile", help="Compile the decode step (torch.compile, "
                                                 "CUDA only): extra fusion for long answers, after a one-time "
                                                 "compilation of a minute or more.")] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> int:
    """Answer QUESTION about IMAGE(s) or a video with HAWK pruning. The answer goes to stdout, stats to stderr.

    Examples: hawk run a.jpg b.jpg "what changed?" --ratio 0.9
    | hawk run --video frames/ "what happens?" --fps 2 --overlay kept.png
    | cat requests.jsonl | hawk run - --batch-size 8 > results.jsonl
    """
    from hawk_cli.engine.generation import GenerationSettings
    from hawk_cli.io.frames import validate_fps

    out = Output(json_mode=json_output, quiet=quiet)
    arguments = list(arguments or [])
    # A lone '-' is JSONL on stdin; with --video it is the question, read from stdin.
    jsonl = input_file is not None or (arguments == ["-"] and not video)
    if input_file is not None and arguments:
        raise UsageError("--input takes no IMAGE or QUESTION arguments", "Put them in the JSONL lines")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}", "Use e.g. --batch-size 8")
    try:
        validate_fps(fps)
    except InputError as error:
        raise UsageError(error.message, error.fix)
    GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens)  # validates the flags before loading
    if compile_decode and no_cuda_graphs:
        raise UsageError("--compile and --no-cuda-graphs exclude each other (a compiled step replays CUDA graphs)",
                         "Give one of them")
    decode = decode_choice(no_cuda_graphs, compile_decode)
    check_device_map(device, device_map)
    if gpus is not None:
        from hawk_cli.cli.run_gpus import run_over_gpus

        if input_file in (None, "-") or video:
            raise UsageError("--gpus splits a JSONL file", "Give --input FILE.jsonl")
        if device_map is not None or device != "auto":
            raise UsageError("--gpus puts one whole model on each GPU; it excludes --device and --device-map",
                             "Give --gpus alone")
        from hawk_cli.cli.run_gpus import worker_flags

        flags = worker_flags(batch_size=batch_size, fps=fps, overlay=overlay, overlay_scores=overlay_scores,
                             model=model, ratio=ratio, weights=weights, scorer=scorer, max_new_tokens=max_new_tokens,
                             dtype=dtype, attn=attn, no_cuda_graphs=no_cuda_graphs, compile=compile_decode,
                             force=force)
        return run_over_gpus(out, input_file, gpus, output, force, flags)
    if jsonl:
        if video:
            raise UsageError("--video is for one prompt; in JSONL mode give \"video\" in each line",
                             'Write e.g. {"video": "clip.gif", "question": "..."}')
        return _run_jsonl(out, input_file, batch_size, output, force, fps, overlay, overlay_scores, model, ratio,
                          weights, scorer, max_new_tokens, device, dtype, attn, decode, layer=layer,
                          device_map=device_map)
    return _run_one(out, arguments, output, force, video or [], fps, overlay, overlay_scores, model, ratio, weights,
                    scorer, max_new_tokens, device, dtype, attn, json_output, decode, layer=layer, device_map=device_map)


def _open_session(out: Output, model, device, dtype, attn, scorer, weights, decode: str = "auto",
                  layer: int | None = None, device_map: str | None = None):
    from hawk_cli.engine.session import HawkSession

    session = HawkSession.open(model, device=device, dtype=dtype, attn=attn, decode=decode, device_map=device_map)
    if session.decode_notice:
        out.note(session.decode_notice)
    method, notices = session.make_scorer(scorer, weights, layer)
    for notice in notices:
        out.note(notice)
    return session, method


def _settings_origin(session, scorer: str | None, weights: str | None, layer: int | None = None) -> dict:
    """Echoed in JSON: whether the pruning settings came from the user, the model's recommendation or defaults."""
    if scorer is not None or weights is not None or layer is not None:
        return {"settings_from": "user"}
    return {"settings_from": "model recommendation" if session.recommended_settings() else "default"}


def _overlay_picture(session, request, answer, by_score: bool):
    from hawk_cli.io.overlay import panels_for, render_overlay

    processor = session.loaded.image_processor
    panels = panels_for(request.images, request.video, list(answer.visual_grids),
                        int(processor.temporal_patch_size))
    merge = int(processor.merge_size)
    return render_overlay(panels, answer.visual_keep, answer.visual_scores, merge_size=merge,
                          cell_pixels=int(processor.patch_size) * merge, by_score=by_score)


def _run_one(out: Output, arguments, output, force, video, fps, overlay, overlay_scores, model, ratio, weights,
             scorer, max_new_tokens, device, dtype, attn, json_output, decode, layer=None, device_map=None) -> int:
    from hawk_cli.engine.generation import GenerationSettings
    from hawk_cli.engine.session import versions
    from hawk_cli.io.atomic import check_writable
    from hawk_cli.io.images import load_image
    from hawk_cli.io.overlay import save_overlay
    from hawk_cli.io.frames import read_frames
    from hawk_cli.io.requests import Request

    image_paths, question = split_arguments(arguments, need_image=not video)
    settings = GenerationSettings(ratio=ratio, max_new_tokens=max_new_tokens)
    if output is not None:
        check_writable(Path(output), force)
    if overlay is not None:
        check_writable(Path(overlay), force)
    images = tuple(load_image(path) for path in image_paths)
    frames = tuple(read_frames(video)) if video else ()
    request = Request(question=question, images=images, video=frames, fps=fps)
    session, method = _open_session(out, model, device, dtype, attn, scorer, weights, decode, layer, device_map)
    batch = session.run([request], method, settings)
    answer, timings = batch.answers[0], batch.result.timings
    if overlay is not None:
        save_overlay(Path(overlay), _overlay_picture(session, request, answer, overlay_scores))
    with ExitStack() as stack:
        sink = _open_sink(stack, out, output, force)
        if json_output:
            record = {"answer": answer.text, "ratio": ratio, **method.describe(),
                      **_settings_origin(session, scorer, weights, layer), **session.describe(),
                      **answer.stats.to_dict(), "generated_tokens": len(answer.tokens), "timings": timings,
                      "kv_cache_bytes": batch.result.kv_cache_bytes, "versions": versions()}
            if frames:
                record.update(video_frames=len(frames), fps=fps)
            if overlay is not None:
                record["overlay"] = str(overlay)
            sink.record(record)
        else:
            sink.text(answer.text)
    if not json_output:
        out.info(stats_line(answer.stats, ratio, timings["total_s"]))
    return 0


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def _lines(input_file: str | None) -> tuple[Iterator[str], Path, ExitStack]:
    stack = ExitStack()
    if input_file is None or input_file == "-":
        return iter(sys.stdin.readline, ""), Path.cwd(), stack
    path = Path(input_file)
    if not path.is_file():
        raise InputError(f"input file '{path}' does not exist" if not path.exists() else f"'{path}' is not a file",
                         "Give a JSONL file, or '-' to read requests from stdin")
    handle = stack.enter_context(open(path, encoding="utf-8-sig", errors="replace"))
    return iter(handle), path.resolve().parent, stack


def _run_jsonl(out: Output, input_file, batch_size, output, force, fps, overlay, overlay_scores, model, ratio,
               weights, scorer, max_new_tokens, device, dtype, attn, decode, layer=None, device_map=None) -> int:
    from hawk_cli.engine.session import versions
    from hawk_cli.serving.stream import answer_stream, prepare_in_processes, prepare_workers
    from hawk_cli.io.requests import read_requests

    overlay_dir = None
    if overlay is not None:
        overlay_dir = Path(overlay)
        if overlay_dir.exists() and not overlay_dir.is_dir():
            raise UsageError(f"--overlay '{overlay_dir}' is a file; in JSONL mode it is a folder",
                             "Give a folder (created if missing)")
    if output is not None:
        from hawk_cli.io.atomic import check_writable

        check_writable(Path(output), force)  # before the model loads
    in_processes = prepare_in_processes(os.environ.get("HAWK_PREPARE", "threads").strip())  # before the model loads
    lines, base, input_stack = _lines(input_file)
    total = _count_lines(Path(input_file)) if input_file not in (None, "-") else None
    session, method = _open_session(out, model, device, dtype, attn, scorer, weights, decode, layer, device_map)
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    context = {**method.describe(), **_settings_origin(session, scorer, weights, layer), **session.describe(),
               "versions": versions()}
    counts = {"done": 0, "failed": 0, "first_batch": 0}
    started = time.perf_counter()
    first_batch_end = None
    with input_stack, ExitStack() as stack, out.progress("requests", total) as advance:
        sink = _open_sink(stack, out, output, force)

        configured = os.environ.get("HAWK_PREPARE_WORKERS", "").strip()
        workers = prepare_workers(session, int(configured) if configured.isdigit() else None)
        # A file fills every batch; a stream runs what has arrived, so a slow producer is answered at once.
        stream = answer_stream(session, method, read_requests(lines, base), batch_size=batch_size,
                               wait_for_full=input_file not in (None, "-"), default_ratio=ratio,
                               default_tokens=max_new_tokens, fps=fps, workers=workers,
                               processes=in_processes,
                               pin_cpus=os.environ.get("HAWK_PREPARE_PIN", "1").strip() != "0",
                               on_close=stack.callback)
        for window in stream:
            for row, outcome in window:
                if isinstance(outcome, str):
                    counts["failed"] += 1
                    out.warn(f"line {row.line} (id {row.id!r}): {outcome}")
                    sink.record({"id": row.id, "line": row.line, "error": outcome})
                else:
                    answer = outcome.pop("_answer")
                    record = {"id": row.id, "line": row.line, **outcome, **context}
                    if overlay_dir is not None:
                        record["overlay"] = _write_row_overlay(out, session, overlay_dir, row, answer,
                                                               overlay_scores, force)
                    sink.record(record)
                counts["done"] += 1
                advance()
            if first_batch_end is None:
                first_batch_end, counts["first_batch"] = time.perf_counter(), counts["done"]
    if counts["done"] == 0:
        out.warn("no requests in the input")
    ended = time.perf_counter()
    seconds = ended - started
    summary = (f"{counts['done']} requests, {counts['failed']} failed, {seconds:.2f} s after loading "
               f"({counts['done'] / max(seconds, 1e-9):.2f} requests/s, batch size {batch_size}")
    steady = counts["done"] - counts["first_batch"]
    if first_batch_end is not None and steady > 0:  # the first batch carries the device's warm-up
        summary += f"; after the first batch: {steady / max(ended - first_batch_end, 1e-9):.2f} requests/s"
    out.info(summary + ")")
    return 1 if counts["failed"] else 0


def _write_row_overlay(out: Output, session, folder: Path, row, answer, by_score: bool, force: bool):
    from hawk_cli.io.overlay import overlay_name, save_overlay

    path = folder / overlay_name(row.id, row.line)
    if path.exists() and not force:
        out.warn(f"line {row.line}: overlay '{path}' exists; not overwritten (pass --force)")
        return None
    save_overlay(path, _overlay_picture(session, row.request, answer, by_score))
    return str(path)
