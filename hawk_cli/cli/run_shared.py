"""What both modes of `hawk run` share: where results go, opening the session, and what a record says about it."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hawk_cli.cli.output import Output


class Sink:
    """Where results go: stdout (flushed per line), or a temp file moved over --output at the end."""

    def __init__(self, out: Output, handle: TextIO | None) -> None:
        self.out, self.handle = out, handle

    def record(self, data: dict) -> None:
        if self.handle is None:
            self.out.record(data)
        else:
            from hawk_cli.cli.output import json_line

            self.handle.write(json_line(data) + "\n")
            self.handle.flush()

    def text(self, line: str) -> None:
        if self.handle is None:
            self.out.result(line)
        else:
            self.handle.write(line + "\n")


def open_sink(stack: ExitStack, out: Output, output: str | None, force: bool) -> Sink:
    if output is None:
        return Sink(out, None)
    from hawk_cli.io.atomic import atomic_path, check_writable

    temporary = stack.enter_context(atomic_path(check_writable(Path(output), force), overwrite=force))
    return Sink(out, stack.enter_context(open(temporary, "w", encoding="utf-8")))


@dataclass(frozen=True)
class SessionChoice:
    """The model and pruning method as the flags chose them (both modes open the session the same way)."""

    model: str | None
    device: str
    dtype: str
    attn: str
    scorer: str | None
    weights: str | None
    decode: str = "auto"
    layer: int | None = None
    device_map: str | None = None


def open_session(out: Output, choice: SessionChoice):
    from hawk_cli.engine.session import HawkSession

    session = HawkSession.open(
        choice.model,
        device=choice.device,
        dtype=choice.dtype,
        attn=choice.attn,
        decode=choice.decode,
        device_map=choice.device_map,
    )
    if session.decode_notice:
        out.note(session.decode_notice)
    method, notices = session.make_scorer(choice.scorer, choice.weights, choice.layer)
    for notice in notices:
        out.note(notice)
    return session, method


def settings_origin(session, choice: SessionChoice) -> dict:
    """Echoed in JSON: whether the pruning settings came from the user, the model's recommendation or defaults."""
    if choice.scorer is not None or choice.weights is not None or choice.layer is not None:
        return {"settings_from": "user"}
    return {"settings_from": "model recommendation" if session.recommended_settings() else "default"}


def compile_note(session) -> str | None:
    """What `--compile` cost this run: torch compiles per shape, and keeps its kernels in an on-disk cache
    (TORCHINDUCTOR_CACHE_DIR), so a later run on this machine pays mostly the tracing again."""
    seconds = session.compile_seconds
    if session.decode_mode != "compile" or not seconds:
        return None
    return (
        f"compiling the decode step took {seconds:.1f} s of this run; torch's on-disk cache of compiled kernels "
        "makes later runs on this machine faster to start"
    )


def builtin_notes(session, request) -> list[str]:
    """The built-in model answers only its synthetic world: say so when a question or picture is outside it."""
    if not session.loaded.is_builtin:
        return []
    from hawk_cli.synthetic.familiarity import builtin_notes as notes_for

    return notes_for(session.tokenizer, request.question, request.images + request.video[:1])


def overlay_picture(session, request, answer, by_score: bool):
    from hawk_cli.io.overlay import panels_for, render_overlay

    processor = session.loaded.image_processor
    panels = panels_for(request.images, request.video, list(answer.visual_grids), int(processor.temporal_patch_size))
    merge = int(processor.merge_size)
    return render_overlay(
        panels,
        answer.visual_keep,
        answer.visual_scores,
        merge_size=merge,
        cell_pixels=int(processor.patch_size) * merge,
        by_score=by_score,
    )
