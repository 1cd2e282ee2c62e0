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


def _instruction_span(row: Tensor, visual: Tensor, tokens: SpecialTokens) -> tuple[int, int]:
    """[start, end): after the last `<|vision_end|>` up to the last `<|im_end|>` after it (authors' rule)."""
    start = _last_index(row, tokens.vision_end) + 1
    if start == 0:  # no vision span markers: start after the last visual token
        visual_positions = visual.nonzero()
        start = int(visual_positions[-1]) + 1 if len(visual_positions) else 0
    end_hits = (row[start:] == tokens.im_end).nonzero()
    end = start + int(end_hits[-1]) if len(end_hits) else len(row)
    return start, end


def _user_text(row: Tensor, valid: Tensor, visual: Tensor, tokens: SpecialTokens) -> Tensor:
    """Fallback queries: the text of the turn holding the last visual token, outside vision spans.

    Used when the question comes before the image. The role name right after `<|im_start|>` is skipped.
    """
    last_visual = int(visual.nonzero()[-1]) if visual.any() else len(row) - 1
    turn_start = _last_index(row, tokens.im_start, before=last_visual + 1) + 2
    end_hits = (row[last_visual:] == tokens.im_end).nonzero()
    turn_end = last_visual + int(end_hits[0]) if len(end_hits) else len(row)
    markers = torch.tensor([tokens.vision_start, tokens.vision_end, tokens.im_start, tokens.im_end, tokens.pad],
                           device=row.device)
    mask = torch.zeros_like(valid)
    mask[max(turn_start, 0):turn_end] = True
    return mask & valid & ~visual & ~torch.isin(row, markers)


def token_roles(input_ids: Tensor, attention_mask: Tensor, tokens: SpecialTokens) -> TokenRoles:
    valid = attention_mask.bool()
    visual = ((input_ids == tokens.image) | (input_ids == tokens.video)) & valid
    query = torch.zeros_like(visual)
    fallback = []
    for row_index in range(input_ids.shape[0]):
        row = input_ids[row_index]
        start, end = _instruction_span(row, visual[row_index], tokens)
        query[row_index, start:end] = True
        query[row_index] &= valid[row_index] & ~visual[row_index]
        empty = not bool(query[row_index].any())
        if empty:
            query[row_index] = _user_text(row, valid[row_index], visual[row_index], tokens)
        fallback.append(empty)
    return TokenRoles(visual=visual, query=query, fallback=fallback)
