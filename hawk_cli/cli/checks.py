"""Checks of command-line values made before any model loads, worded with the flags the user typed.

The limits are stated, with their reasons, in docs/errors.md ("Limits").
"""

from __future__ import annotations

import os
from pathlib import Path

from hawk_cli.errors import UsageError

# Rows of one forward pass. A larger batch only waits longer for the same throughput: device memory runs out
# well before (the 7B model at 1296 visual tokens a row peaks near 40 GB at batch 64).
MAX_BATCH_SIZE = 1024
# Timed or warm-up rounds of `hawk bench`: medians settle within tens; more only keeps the machine busy.
MAX_ROUNDS = 1000
# Questions of `hawk eval` and `builtin:N` calibration sets are generated up front with their scenes held in memory
# (about 0.6 MB per scene, 4 or 2 questions a scene): 10 000 questions hold about 1.5 GB.
MAX_EVAL_QUESTIONS = 10_000


def check_range(flag: str, value: int, low: int, high: int, example: str) -> int:
    """`value` within [low, high], or a usage error naming `flag` and the reason-bearing limit."""
    if not low <= value <= high:
        bound = f"at least {low:,}" if value < low else f"at most {high:,} (hawk's limit; see docs/errors.md)"
        raise UsageError(f"{flag} must be {bound}, got {value:,}", f"Use e.g. {flag} {example}")
    return value


def _same_place(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_distinct_paths(outputs: dict[str, str | Path | None], inputs: dict[str, list]) -> None:
    """Every output path differs from every input and from the other outputs (before the model loads).

    `outputs`: flag -> path (None: not given); `inputs`: what -> paths. Hard links and symbolic links to one
    file count as the same file."""
    given = [(flag, Path(path)) for flag, path in outputs.items() if path is not None]
    for index, (flag, path) in enumerate(given):
        for other_flag, other in given[:index]:
            if _same_place(path, other):
                raise UsageError(
                    f"{other_flag} and {flag} name the same file '{path}'", "Give each output its own path"
                )
        for what, paths in inputs.items():
            for source in paths or []:
                if source is not None and _same_place(path, Path(source)):
                    raise UsageError(
                        f"{flag} '{path}' is also {what}; writing it would destroy the input",
                        "Choose another output path",
                    )


def resolve_budget(
    ratio: float | None, keep: float | None, keep_tokens: int | None, default_ratio: float
) -> tuple[float, int | None]:
    """(ratio, keep_tokens) from --ratio, --keep or --keep-tokens, exactly one of which may be given."""
    from hawk_cli.io.requests import ratio_for_keep

    given = [
        flag
        for flag, value in (("--ratio", ratio), ("--keep", keep), ("--keep-tokens", keep_tokens))
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(
            f"{' and '.join(given)} each set the visual-token budget", "Give one of --ratio, --keep or --keep-tokens"
        )
    if keep is not None:
        if not 0 < keep <= 1:
            raise UsageError(
                f"--keep must be in (0, 1], got {keep}", "Use e.g. --keep 0.2 to keep 20% of visual tokens"
            )
        return ratio_for_keep(keep), None
    if keep_tokens is not None:
        if keep_tokens < 1:
            raise UsageError(f"--keep-tokens must be at least 1, got {keep_tokens}", "Use e.g. --keep-tokens 64")
        return default_ratio, keep_tokens
    return (default_ratio if ratio is None else ratio), None
