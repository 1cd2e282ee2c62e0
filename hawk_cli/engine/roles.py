"""Which prompt tokens are visual and which are the instruction (HAWK's queries)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hawk_cli.adapters.base import SpecialTokens


@dataclass
class TokenRoles:
    visual: Tensor  # [B, L] bool
    query: Tensor  # [B, L] bool
    fallback: list[bool]  # per row: True when the instruction span was empty and the user's text was used


def _last_index(row: Tensor, token: int, before: int | None = None) -> int:
    hits = (row[:before] == token).nonzero()
    return int(hits[-1]) if len(hits) else -1


def _last_where(condition: Tensor) -> Tensor:
    """[B]: index of the last True per row, -1 where none."""
    positions = torch.arange(condition.shape[1], device=condition.device).expand_as(condition)
    return torch.where(condition, positions, -1).amax(dim=1)


def instruction_spans(input_ids: Tensor, visual: Tensor, tokens: SpecialTokens) -> tuple[Tensor, Tensor]:
    """Per row [start, end): after the last `<|vision_end|>` (else after the last visual token) up to the last
    `<|im_end|>` after it (else the row's end): the authors' rule, for the whole batch at once."""
    start = _last_where(input_ids == tokens.vision_end) + 1
    start = torch.where(start > 0, start, _last_where(visual) + 1)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    end = _last_where((input_ids == tokens.im_end) & (positions >= start[:, None]))
    return start, torch.where(end >= 0, end, input_ids.shape[1])


def _user_text(row: Tensor, valid: Tensor, visual: Tensor, tokens: SpecialTokens) -> Tensor:
    """Fallback queries: the text of the turn holding the last visual token, outside vision spans.

    Used when the question comes before the image. The role name right after `<|im_start|>` is skipped.
    """
    last_visual = int(visual.nonzero()[-1]) if visual.any() else len(row) - 1
    turn_start = _last_index(row, tokens.im_start, before=last_visual + 1) + 2
    end_hits = (row[last_visual:] == tokens.im_end).nonzero()
    turn_end = last_visual + int(end_hits[0]) if len(end_hits) else len(row)
    markers = torch.tensor(
        [tokens.vision_start, tokens.vision_end, tokens.im_start, tokens.im_end, tokens.pad], device=row.device
    )
    mask = torch.zeros_like(valid)
    mask[max(turn_start, 0) : turn_end] = True
    return mask & valid & ~visual & ~torch.isin(row, markers)


def token_roles(input_ids: Tensor, attention_mask: Tensor, tokens: SpecialTokens) -> TokenRoles:
    valid = attention_mask.bool()
    visual = ((input_ids == tokens.image) | (input_ids == tokens.video)) & valid
    start, end = instruction_spans(input_ids, visual, tokens)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    query = (positions >= start[:, None]) & (positions < end[:, None]) & valid & ~visual
    fallback = (~query.any(dim=1)).tolist()
    for row in (index for index, empty in enumerate(fallback) if empty):
        query[row] = _user_text(input_ids[row], valid[row], visual[row], tokens)
    return TokenRoles(visual=visual, query=query, fallback=fallback)
