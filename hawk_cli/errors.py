"""Typed errors. The engine raises them; the faces render them (the CLI: one line and an exit code).

Messages and fixes name settings as templates, so nothing below the CLI knows the command line: `{batch_size}`
is a mention and `{seed=}0` a value. The library reads them as `batch_size` and `seed=0`; the CLI as
`--batch-size` and `--seed 0` (`HawkError.render(flag_for)`). With `setting=`, the message is about that one
setting and starts with its name (`max_new_tokens must be at least 1`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SETTING = re.compile(r"\{([a-z][a-z0-9_]*)(=?)\}")


def worded(template: str, name_of: Callable[[str], str] | None = None) -> str:
    """A template in the library's words (`name_of` None) or with each setting called `name_of(setting)`."""

    def one(match: re.Match) -> str:
        setting, valued = match.group(1), match.group(2)
        if name_of is None:
            return f"{setting}=" if valued else setting
        return f"{name_of(setting)} " if valued else name_of(setting)

    return _SETTING.sub(one, template)


class HawkError(Exception):
    """A failure the user can act on: `message` names the problem, `fix` says what to do."""

    exit_code: int = 1

    def __init__(self, message: str, fix: str = "", *, setting: str | None = None) -> None:
        self.setting = setting
        self._message = (f"{{{setting}}} " if setting else "") + message.rstrip(".")
        self._fix = fix
        super().__init__(worded(self._message, None))
        self.message = worded(self._message, None)
        self.fix = worded(fix, None)

    def render(self, name_of: Callable[[str], str] | None = None) -> str:
        """One line, problem then fix; `name_of` words the settings (e.g. as command-line flags)."""
        text = f"{worded(self._message, name_of)}."
        fix = worded(self._fix, name_of)
        if not fix:
            return text
        fix = fix if fix.endswith((".", "?", "!")) else f"{fix}."
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
        return ResourceError(
            "the device ran out of memory", "Use a smaller {batch_size}, a higher {ratio}, or smaller images"
        )
    return None


def failure_text(error: BaseException, name_of: Callable[[str], str] | None = None) -> str:
    """One line for a failure (for per-request error records); `name_of` words settings as in `render`."""
    known = error if isinstance(error, HawkError) else from_library_error(error)
    if known is not None:
        return known.render(name_of)
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"internal error ({type(error).__name__}: {first_line}). Please report it."
