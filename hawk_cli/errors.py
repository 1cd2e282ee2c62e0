"""Typed errors. The engine raises them; only the CLI layer renders them (one line, an exit code)."""

from __future__ import annotations


class HawkError(Exception):
    """A failure the user can act on: `message` names the problem, `fix` says what to do."""

    exit_code: int = 1

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message.rstrip(".")
        self.fix = fix

    def render(self) -> str:
        text = f"{self.message}."
        if not self.fix:
            return text
        fix = self.fix if self.fix.endswith((".", "?", "!")) else f"{self.fix}."
        return f"{text} {fix}"


class UsageError(HawkError):
    """A flag or argument value is wrong (exit 2)."""

    exit_code = 2


class InputError(HawkError):
    """An input file or request is missing, unreadable or malformed (exit 2)."""

    exit_code = 2


class ModelError(HawkError):
    """The model cannot be loaded or is not supported (exit 1)."""

    exit_code = 1


class ResourceError(HawkError):
    """The machine cannot do it: no CUDA, out of memory, unwritable output (exit 1)."""

    exit_code = 1


class Interrupted(HawkError):
    """Ctrl-C: nothing partial was left behind (exit 130)."""

    exit_code = 130


class HawkWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one stderr line."""


def from_library_error(error: BaseException) -> HawkError | None:
    """Known library failures as actionable errors (None: not one we know)."""
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return ResourceError("the device ran out of memory",
                             "Use a smaller --batch-size, a higher --ratio, or smaller images")
    return None


def failure_text(error: BaseException) -> str:
    """One line for a failure, worded as the CLI's error boundary words it (for per-request error records)."""
    known = error if isinstance(error, HawkError) else from_library_error(error)
    if known is not None:
        return known.render()
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"internal error ({type(error).__name__}: {first_line}). Please report it."
