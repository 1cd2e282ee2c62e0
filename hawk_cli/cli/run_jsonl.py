"""`hawk run` in JSONL mode (`--input FILE` or `-`): requests read line by line as bytes (stdin and files alike),
answered in batches, one record per request written in input order (to stdout, or atomically to --output)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from hawk_cli.cli.checks import check_distinct_paths
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
from hawk_cli.errors import InputError, UsageError, worded


def _count_lines(path: Path) -> int | None:
    """Non-blank lines of a regular file, read in chunks (a huge line is never held whole); None for a pipe."""
    if not path.is_file():
        return None
    count, open_line_has_text = 0, False
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            *complete, last = chunk.split(b"\n")
            for part in complete:
                count += int(open_line_has_text or bool(part.strip()))
                open_line_has_text = False
            open_line_has_text = open_line_has_text or bool(last.strip())
    return count + int(open_line_has_text)


def _lines(input_file: str | None) -> tuple[Iterator, Path, ExitStack]:
    """The input's lines decoded by `decoded_lines` (stdin and files alike), and the folder paths resolve against."""
    import io

    from hawk_cli.io.requests import decoded_lines

    stack = ExitStack()
    if input_file is None or input_file == "-":
        binary = getattr(sys.stdin, "buffer", None)
        if binary is None:  # a text stream standing in for stdin (tests, embedding callers)
            binary = io.BytesIO(sys.stdin.read().encode("utf-8"))
        return decoded_lines(binary), Path.cwd(), stack
    path = Path(input_file)
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist", "Give a JSONL file, or '-' to read requests from stdin")
    if path.is_dir():
        raise InputError(f"'{path}' is not a file", "Give a JSONL file, or '-' to read requests from stdin")
    handle = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - a regular file or a pipe, closed by the stack
    return decoded_lines(handle), path.resolve().parent, stack


def run_jsonl(
    out: Output,
    input_file,
    batch_size,
    output,
    force,
    fps,
    overlay,
    overlay_scores,
    settings,
    choice: SessionChoice,
) -> int:
    from hawk_cli.engine.session import versions
    from hawk_cli.io.requests import read_requests
    from hawk_cli.serving.stream import answer_stream, prepare_in_processes, prepare_workers

    overlay_dir = None
    if overlay is not None:
        overlay_dir = Path(overlay)
        if overlay_dir.exists() and not overlay_dir.is_dir():
            raise UsageError(
                f"--overlay '{overlay_dir}' is a file; in JSONL mode it is a folder",
                "Give a folder (created if missing)",
            )
    check_distinct_paths({"--output": output}, {"the --input file": [input_file if input_file != "-" else None]})
    if output is not None:
        from hawk_cli.io.atomic import check_writable

        check_writable(Path(output), force)  # before the model loads
    in_processes = prepare_in_processes(os.environ.get("HAWK_PREPARE", "threads").strip())  # before the model loads
    lines, base, input_stack = _lines(input_file)
    total = _count_lines(Path(input_file)) if input_file not in (None, "-") else None
    session, method = open_session(out, choice)
    session.check_new_tokens(settings.max_new_tokens)
    overlay_names = None
    if overlay_dir is not None:
        from hawk_cli.io.overlay import OverlayNames

        overlay_dir.mkdir(parents=True, exist_ok=True)
        beside = (
            [Path(output).name] if output is not None and Path(output).resolve().parent == overlay_dir.resolve() else []
        )
        overlay_names = OverlayNames(tuple(beside))  # never the --output file's name
    context = {
        **method.describe(),
        **settings_origin(session, choice),
        **session.describe(),
        "versions": versions(),
    }
    counts = {"done": 0, "failed": 0, "first_batch": 0}
    started = time.perf_counter()
    first_batch_end = None
    with input_stack, ExitStack() as stack, out.progress("requests", total) as advance:
        sink = open_sink(stack, out, output, force)

        configured = os.environ.get("HAWK_PREPARE_WORKERS", "").strip()
        workers = prepare_workers(session, int(configured) if configured.isdigit() else None)
        # A file fills every batch; a stream runs what has arrived, so a slow producer is answered at once.
        stream = answer_stream(
            session,
            method,
            read_requests(lines, base),
            batch_size=batch_size,
            wait_for_full=input_file not in (None, "-"),
            default_ratio=settings.ratio,
            default_keep_tokens=settings.keep_tokens,
            default_tokens=settings.max_new_tokens,
            fps=fps,
            workers=workers,
            processes=in_processes,
            pin_cpus=os.environ.get("HAWK_PREPARE_PIN", "1").strip() != "0",
            on_close=stack.callback,
        )
        for window in stream:
            for row, outcome in window:
                if isinstance(outcome, str):
                    counts["failed"] += 1
                    out.warn(f"line {row.line} (id {row.id!r}): {outcome}")
                    sink.record({"id": row.id, "line": row.line, "error": outcome})
                else:
                    answer = outcome.pop("_answer")
                    record = {"id": row.id, "line": row.line, **outcome, **context}
                    notes = builtin_notes(session, row.request)
                    if notes:
                        record["notes"] = [worded(note) for note in notes]
                    if overlay_dir is not None:
                        record["overlay"] = _write_row_overlay(
                            out,
                            session,
                            overlay_dir / overlay_names.name_for(row.id, row.line),
                            row,
                            answer,
                            overlay_scores,
                            force,
                        )
                    sink.record(record)
                counts["done"] += 1
                advance()
            if first_batch_end is None:
                first_batch_end, counts["first_batch"] = time.perf_counter(), counts["done"]
    if counts["done"] == 0:
        out.warn("no requests in the input")
    ended = time.perf_counter()
    seconds = ended - started
    summary = (
        f"{counts['done']} requests, {counts['failed']} failed, {seconds:.2f} s after loading "
        f"({counts['done'] / max(seconds, 1e-9):.2f} requests/s, batch size {batch_size}"
    )
    steady = counts["done"] - counts["first_batch"]
    if first_batch_end is not None and steady > 0:  # the first batch carries the device's warm-up
        summary += f"; after the first batch: {steady / max(ended - first_batch_end, 1e-9):.2f} requests/s"
    out.info(summary + ")")
    note = compile_note(session)
    if note:
        out.note(note)
    return 1 if counts["failed"] else 0


def _write_row_overlay(out: Output, session, path: Path, row, answer, by_score: bool, force: bool):
    from hawk_cli.io.overlay import save_overlay

    if path.exists() and not force:
        out.warn(f"line {row.line}: overlay '{path}' exists; not overwritten (pass --force)")
        return None
    try:
        save_overlay(path, overlay_picture(session, row.request, answer, by_score), overwrite=force)
    except InputError:  # another process took the name since the check above: still not overwritten
        out.warn(f"line {row.line}: overlay '{path}' appeared meanwhile; not overwritten (pass --force)")
        return None
    return str(path)
