"""The `hawk` Typer app and the one error boundary: every failure becomes one line and an exit code.

Exit codes: 0 success, 1 runtime failure, 2 bad invocation or input, 130 interrupted. `--debug` or
HAWK_DEBUG=1 adds the traceback after the line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback
import warnings
from typing import Annotated

import typer

from hawk_cli import __version__
from hawk_cli.cli.bench import bench_command
from hawk_cli.cli.calibrate import calibrate_command
from hawk_cli.cli.eval import eval_command
from hawk_cli.cli.options import HELP_SETTINGS, DebugOpt, flag_for
from hawk_cli.cli.output import OutputClosed
from hawk_cli.cli.run import run_command
from hawk_cli.cli.signals import signals_as_interrupts
from hawk_cli.cli.weights import weights_app
from hawk_cli.errors import HawkError, HawkWarning, Interrupted, from_library_error

# Help text is shown as written (rich_markup_mode None): brackets such as 'hawk-vlm[plot]' or '[0, 1)' are text,
# not markup. `-h` works wherever `--help` does. Completion: `hawk --install-completion` (bash, zsh, fish).
app = typer.Typer(
    name="hawk",
    help="Prune visual tokens of Qwen-VL models before the language model (HAWK).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
app.command("run", context_settings=HELP_SETTINGS)(run_command)
app.command("bench", context_settings=HELP_SETTINGS)(bench_command)
app.command("calibrate", context_settings=HELP_SETTINGS)(calibrate_command)
app.command("eval", context_settings=HELP_SETTINGS)(eval_command)
app.add_typer(weights_app, name="weights")


def _print_version(requested: bool) -> None:
    if requested:
        typer.echo(f"hawk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="Print hawk's version and exit."),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """hawk: training-free visual-token pruning for Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5. Results on stdout,
    logs on stderr.

    Exit codes: 0 success, 1 runtime failure, 2 bad input or usage, 128 + signal when interrupted (130 Ctrl-C).
    """


def _error_line(message: str) -> None:
    sys.stderr.write(f"hawk: error: {message}\n")
    sys.stderr.flush()


def _debug(argv: list[str]) -> bool:
    return os.environ.get("HAWK_DEBUG", "") not in ("", "0") or "--debug" in argv


def _exit_code_for(error: BaseException) -> int:
    if isinstance(error, HawkError):
        _error_line(error.render(flag_for))
        return error.exit_code
    if type(error).__name__ == "NoArgsIsHelpError":  # bare `hawk` / `hawk weights`: help, and no error
        context = getattr(error, "ctx", None)
        if context is not None:
            typer.echo(context.get_help())
        return 0
    if isinstance(error, KeyboardInterrupt) or type(error).__name__ == "Abort":
        _error_line("interrupted")
        return 130  # SIGTERM / SIGHUP: _run_app reports 128 + their number
    if hasattr(error, "format_message") and hasattr(error, "exit_code"):  # the argument parser's usage errors
        command = getattr(getattr(error, "ctx", None), "command_path", None) or "hawk"
        _error_line(f"{error.format_message().strip().rstrip('.')}. Run '{command} --help' for usage.")
        return int(error.exit_code)
    if isinstance(error, OutputClosed) or (
        isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EPIPE)
    ):
        return _output_failed(error)
    mapped = from_library_error(error)
    if mapped is not None:
        return _exit_code_for(mapped)
    first_line = str(error).splitlines()[0] if str(error) else ""
    _error_line(
        f"internal error ({type(error).__name__}: {first_line}). Please report it; set HAWK_DEBUG=1 for the traceback."
    )
    return 1


def _output_failed(error: OSError | OutputClosed) -> int:
    """Writing stdout failed: a full disk under a redirect is one line and exit 1; a closed pipe (`| head`) is
    the reader's choice, so it ends quietly with 141 (128 + SIGPIPE), as other tools do. Either way stdout is
    pointed at /dev/null, so the interpreter's last flush cannot fail again with a traceback."""
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (an embedding caller)
        pass
    if isinstance(error, OutputClosed) or error.errno == errno.EPIPE:
        return 141
    _error_line(f"cannot write the output: {error.strerror}. Free some space, or write to another disk.")
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
    with signals_as_interrupts() as received:
        try:
            code = app(args=argv, prog_name="hawk", standalone_mode=False)
        except BaseException as error:
            if isinstance(error, SystemExit):
                raise
            code = _terminated(error, received[0]) if received else _exit_code_for(error)
            if debug:
                traceback.print_exception(error)
        else:
            if received:  # a signal whose interrupt the command absorbed: still report it
                code = _terminated(None, received[0])
            elif code == 130:  # Ctrl-C inside a command, turned into exit code 130 by the argument parser
                _error_line("interrupted")
    return code


def _terminated(error: BaseException | None, signum: int) -> int:
    """SIGTERM / SIGHUP: the command unwound as for Ctrl-C (its own message, if it has one, says what was left
    undone); the exit code is 128 + the signal's number, as shells report it."""
    name = signal.Signals(signum).name
    if isinstance(error, HawkError) and not isinstance(error, Interrupted):
        return _exit_code_for(error)  # a failure of its own, not the interruption
    message = error.render(flag_for).rstrip(".") if isinstance(error, Interrupted) else "interrupted"
    _error_line(f"{message} ({name})")
    return 128 + signum
