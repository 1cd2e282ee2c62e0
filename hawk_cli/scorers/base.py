"""The scorer contract: a small class whose `score` ranks a prompt's visual tokens; selection is not its job."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor


@dataclass
class ScoringInputs:
    """What a scorer may look at, prepared by the engine from the adapter (model-agnostic tensors)."""

    embeds: Tensor  # [B, L, D] decoder input (visual features scattered in)
    visual_mask: Tensor  # [B, L] bool
    query_mask: Tensor  # [B, L] bool, instruction tokens
    attention_mask: Tensor  # [B, L] long
    query_key: Callable[[int], tuple[Tensor, Tensor]]  # layer -> pre-RoPE q [B,H,L,d], k [B,H_kv,L,d]
    target_mask: Tensor | None = None  # [B, L] bool, ground-truth tokens (synthetic evaluation only)


class Scorer(ABC):
    """Ranks visual tokens. Returns [B, L] float32 with -inf on every non-visual token; higher = keep."""

    name: ClassVar[str]

    @abstractmethod
    def score(self, inputs: ScoringInputs) -> Tensor: ...

    def describe(self) -> dict:
        """Settings echoed into JSON records."""
        return {"scorer": self.name}
