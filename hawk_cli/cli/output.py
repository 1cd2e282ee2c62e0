"""Where output goes: results on stdout (text or one JSON object per line), everything else on stderr."""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hawk_cli.cli.options import flag_for
from hawk_cli.errors import worded


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def json_line(data: dict) -> str:
    """One record as strict JSON (RFC 8259): a non-finite float, which has no JSON form, is written as null."""
    return json.dumps(_finite(data), ensure_ascii=False, allow_nan=False)


class OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`): not a failure of hawk's. Not an OSError, so the argument
    parser's own broken-pipe handling (a silent exit 1) does not take it; the CLI ends quietly with 141."""


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed() from None


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.stderr = Console(stderr=True, highlight=False, soft_wrap=True)

    # --- stdout: results only ----------------------------------------------------------------------
    def result(self, text: str) -> None:
        _write_stdout(text + "\n")

    def record(self, data: dict) -> None:
        """One JSON object on one line; values are never rounded."""
        _write_stdout(json_line(data) + "\n")

    def table(self, renderable) -> None:
        Console(highlight=False, soft_wrap=True).print(renderable)

    # --- stderr ------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(message, markup=False)

    def note(self, message: str) -> None:
        if not self.quiet:
            self.stderr.print(f"hawk: note: {worded(message, flag_for)}", markup=False)

    def warn(self, message: str) -> None:
        self.stderr.print(f"hawk: warning: {message}", markup=False)

    @contextmanager
    def progress(self, description: str, total: int):
        """A progress bar with ETA on stderr (shown only on a terminal); yields an `advance(n=1)` callable."""
        visible = self.stderr.is_terminal and not self.quiet
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.stderr,
            transient=True,
            disable=not visible,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
