"""The `hawk` Typer app and the one error boundary: every failure becomes one line and an exit code.

Exit codes: 0 success, 1 runtime failure, 2 bad invocation or input, 130 interrupted. `--debug` or
HAWK_DEBUG=1 adds the traceback after the line.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from typing import Annotated

import typer

from hawk_cli import __version__

from hawk_cli.cli.bench import bench_command
from hawk_cli.cli.calibrate import calibrate_command
from hawk_cli.cli.eval import eval_command
from hawk_cli.cli.run import run_command
from hawk_cli.cli.options import flag_for
from hawk_cli.cli.weights import weights_app
from hawk_cli.errors import HawkError, HawkWarning, from_library_error

app = typer.Typer(name="hawk", help="Prune visual tokens of Qwen-VL models before the language model (HAWK).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command("run")(run_command)
app.command("bench")(bench_command)
app.command("calibrate")(calibrate_command)
app.command("eval")(eval_command)
app.add_typer(weights_app, name="weights")


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"hawk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print hawk's version and exit.")] = False,
) -> None:
    """hawk: training-free visual-token pruning for Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5. Results on stdout, logs on stderr."""


def _error_line(message: str) -> None:
    sys.stderr.write(f"hawk: error: {message}\n")
    sys.stderr.flush()


def _debug(argv: list[str]) -> bool:
    return os.environ.get("HAWK_DEBUG", "") not in ("", "0") or "--debug" in argv


def _exit_code_for(error: BaseException) -> int:
    if isinstance(error, HawkError):
        _error_line(error.render(flag_for))
        return error.exit_code
    if isinstance(error, KeyboardInterrupt) or type(error).__name__ == "Abort":
        _error_line("interrupted")
        return 130
    if hasattr(error, "format_message") and hasattr(error, "exit_code"):  # the argument parser's usage errors
        command = getattr(getattr(error, "ctx", None), "command_path", None) or "hawk"
        _error_line(f"{error.format_message().strip().rstrip('.')}. Run '{command} --help' for usage.")
        return int(error.exit_code)
    mapped = from_library_error(error)
    if mapped is not None:
        return _exit_code_for(mapped)
    first_line = str(error).splitlines()[0] if str(error) else ""
    _error_line(f"internal error ({type(error).__name__}: {first_line}). "
                "Please report it; set HAWK_DEBUG=1 for the traceback.")
    return 1


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """hawk's own warnings become one stderr line; library warnings keep their usual form."""
    if issubclass(category, HawkWarning):
        sys.stderr.write(f"hawk: warning: {message}\n")
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug(argv)
    with warnings.catch_warnings():  # the process's warning settings come back when the command ends
        warnings.showwarning = _show_warning
        warnings.simplefilter("always", HawkWarning)
        code = _run_app(argv, debug)
    sys.exit(code if isinstance(code, int) else 0)


def _run_app(argv: list[str], debug: bool) -> int:
    # Library progress bars (weight loading) would clutter stderr between hawk's own lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (in-process callers): use its public switch
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    try:
        code = app(args=[a for a in argv if a != "--debug"], prog_name="hawk", standalone_mode=False)
    except BaseException as error:  # noqa: BLE001 - the single boundary of the CLI
        if isinstance(error, SystemExit):
            raise
        code = _exit_code_for(error)
        if debug:
            traceback.print_exception(error)
    else:
        if code == 130:  # Ctrl-C inside a command, turned into exit code 130 by the argument parser
            _error_line("interrupted")
    return code
