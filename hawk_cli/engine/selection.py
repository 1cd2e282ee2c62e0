"""How many visual tokens to keep and which: exact arithmetic, stable order, padding never selected."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from hawk_cli.errors import UsageError


def validate_ratio(ratio: float) -> float:
    """`ratio` is the fraction of visual tokens removed; it must lie in [0, 1)."""
    if not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0 <= ratio < 1:
        raise UsageError(
            f"must be in [0, 1), got {ratio}",
            "Use e.g. {ratio=}0.8 to remove 80% of visual tokens (0 disables pruning)",
            setting="ratio",
        )
    return float(ratio)


def keep_count(n_visual: int, ratio: float) -> int:
    """ceil(n * (1 - ratio)), at least 1 when there are visual tokens, computed exactly.

    Floats get it wrong: ceil(10 * (1 - 0.7)) == 4. The ratio is read as the decimal the user wrote.
    """
    if n_visual <= 0:
        return 0
    kept = Fraction(n_visual) * (1 - Fraction(str(float(ratio))))
    return min(n_visual, max(1, math.ceil(kept)))


def validate_keep_tokens(keep_tokens: int | None) -> int | None:
    """`keep_tokens`: visual tokens kept per prompt (all of them when the prompt has fewer); None: use the ratio."""
    if keep_tokens is not None and (
        isinstance(keep_tokens, bool) or not isinstance(keep_tokens, int) or keep_tokens < 1
    ):
        raise UsageError(
            f"must be a whole number of at least 1, got {keep_tokens}",
            "Use e.g. {keep_tokens=}64",
            setting="keep_tokens",
        )
    return keep_tokens


def row_keep_count(n_visual: int, ratio: float, keep_tokens: int | None = None) -> int:
    """Visual tokens a row keeps: `keep_tokens` (at most all of them) when given, else `keep_count(n, ratio)`."""
    return min(n_visual, keep_tokens) if keep_tokens is not None else keep_count(n_visual, ratio)


def select_keep(scores: Tensor, visual: Tensor, valid: Tensor, ratio: float, keep_tokens: int | None = None) -> Tensor:
    """[B, L] bool: every valid non-visual token, plus each row's top `row_keep_count` visual tokens.

    Ties go to the earlier token (stable sort), so the choice does not depend on the backend's topk. One host
    round trip for the whole batch (the per-row counts), whatever the batch size.
    """
    keep = valid.bool() & ~visual
    ranked = scores.float().masked_fill(~visual, float("-inf"))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank of each token within its row
    counts = torch.tensor(
        [row_keep_count(n, ratio, keep_tokens) for n in visual.sum(dim=1).tolist()], device=scores.device
    )
    return keep | (visual & (rank < counts[:, None]))
