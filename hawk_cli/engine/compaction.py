"""Gather the kept tokens of each row into a shorter, left-padded batch, keeping their original positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Compaction:
    source_index: Tensor  # [B, L'] column of the original prompt each compact slot comes from
    attention_mask: Tensor  # [B, L'] long, 0 on left padding
    row_lengths: tuple[int, ...] = ()  # kept tokens per row

    @property
    def padded(self) -> bool:
        """Whether some row is shorter than the batch (so its left padding must be masked)."""
        return len(set(self.row_lengths)) > 1

    @property
    def length(self) -> int:
        return int(self.source_index.shape[1])

    def gather_tokens(self, values: Tensor) -> Tensor:
        """[B, L, ...] -> [B, L', ...]; padding slots are zeroed."""
        index = self.source_index.view(*self.source_index.shape, *([1] * (values.dim() - 2)))
        gathered = values.gather(1, index.expand(-1, -1, *values.shape[2:]))
        keep = self.attention_mask.view(*self.attention_mask.shape, *([1] * (values.dim() - 2)))
        return gathered * keep.to(gathered.dtype)

    def gather_positions(self, position_ids: Tensor) -> Tensor:
        """[P, B, L] -> [P, B, L']: the ORIGINAL rotary ids of kept tokens (never renumbered)."""
        index = self.source_index.unsqueeze(0).expand(position_ids.shape[0], -1, -1)
        return position_ids.gather(2, index)


def compact(keep: Tensor) -> Compaction:
    """Kept columns of each row, in original order, right-aligned (left padding) to the longest row."""
    lengths = keep.sum(dim=1).tolist()  # one read-back: the batch length needs it anyway
    length = max(lengths, default=0)
    order = torch.sort(keep.int(), dim=1, stable=True).indices  # dropped first, kept last, each in order
    source = order[:, -length:] if length else order[:, :0]
    return Compaction(
        source_index=source, attention_mask=keep.gather(1, source).long(), row_lengths=tuple(int(n) for n in lengths)
    )
