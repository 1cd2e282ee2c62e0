"""HAWK (arXiv 2604.07812): head-importance-weighted, text-guided scores from pre-RoPE layer-0 attention logits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from hawk_cli.scorers.base import Scorer, ScoringInputs


def per_head_relevance(q: Tensor, k: Tensor, query_mask: Tensor, visual_mask: Tensor) -> Tensor:
    """[B, H, L]: c_k^h = mean over instruction queries of q·k/sqrt(d), L2-normalised per head over visual tokens.

    Query head h reads key head h // (H / H_kv) (GQA, `repeat_kv` layout). Averaging the queries first
    is exact by linearity and costs O(H·d·L) instead of O(H·d·Q·L). Computed in float32.
    """
    q, k = q.float(), k.float()
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    weights = query_mask[:, None, :, None].float()
    mean_query = (q * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)  # [B, H, d]
    logits = torch.einsum("bhd,bhld->bhl", mean_query, k) / math.sqrt(q.shape[-1])
    logits = torch.nan_to_num(logits, nan=0.0, posinf=0.0, neginf=0.0) * visual_mask[:, None, :].float()
    return logits / logits.norm(dim=-1, keepdim=True).clamp(min=1e-12)


@dataclass
class HawkScorer(Scorer):
    """The published method: a weighted sum over query heads of per-head relevance (Eq. 3 weights)."""

    name: ClassVar[str] = "hawk"
    head_weights: Tensor | None = None  # [H]; None = uniform
    layer: int = 0
    weights_source: str = "uniform"
    extra: dict = field(default_factory=dict)

    def score(self, inputs: ScoringInputs) -> Tensor:
        q, k = inputs.query_key(self.layer)
        relevance = per_head_relevance(q, k, inputs.query_mask, inputs.visual_mask)
        weights = (
            torch.full((q.shape[1],), 1.0 / q.shape[1]) if self.head_weights is None else self.head_weights.float()
        )
        fused = torch.einsum("bhl,h->bl", relevance, weights.to(relevance.device))
        return fused.masked_fill(~inputs.visual_mask, float("-inf"))

    def describe(self) -> dict:
        return {"scorer": self.name, "layer": self.layer, "head_weights": self.weights_source}


@dataclass
class UniformHawkScorer(HawkScorer):
    """HAWK without head importance: every head counts the same (a layer-0, pre-RoPE FastV-style average)."""

    name: ClassVar[str] = "hawk-uniform"

    def __post_init__(self) -> None:
        self.head_weights = None
        self.weights_source = "uniform"
