"""HAWK with attention mass: each instruction token spreads a softmax over the visual tokens; a token's score is
the mass it receives, averaged over instruction tokens and weighted over heads (pre-RoPE, before layer 0)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from hawk_cli.scorers.base import ScoringInputs
from hawk_cli.scorers.hawk import HawkScorer


def attention_mass(q: Tensor, k: Tensor, query_mask: Tensor, visual_mask: Tensor) -> Tensor:
    """[B, H, L]: mean over instruction tokens i of softmax_j(q_i·k_j/sqrt(d)) over the row's visual tokens j.

    Pre-RoPE like HAWK; query head h reads key head h // (H / H_kv). Each query's softmax sums to 1 over the visual
    tokens, so no single query token (or head with large logits) dominates the average as it can with mean logits.
    Computed per row on the (instruction x visual) block only, in float32.
    """
    batch, heads, length, dim = q.shape
    groups = heads // k.shape[1]
    out = torch.zeros(batch, heads, length, dtype=torch.float32, device=q.device)
    for row in range(batch):
        queries = query_mask[row].nonzero().flatten()
        visual = visual_mask[row].nonzero().flatten()
        if len(queries) == 0 or len(visual) == 0:
            continue
        q_row = q[row][:, queries].float()  # [H, Q, d]
        k_row = k[row][:, visual].float().repeat_interleave(groups, dim=0)  # [H, V, d]
        logits = torch.einsum("hqd,hvd->hqv", q_row, k_row) / math.sqrt(dim)
        out[row][:, visual] = torch.softmax(logits, dim=-1).mean(dim=1)
    return out


@dataclass
class AttentionMassScorer(HawkScorer):
    """Text-guided and pre-decoder like HAWK, but scoring by attention mass instead of mean logits.

    Why: averaging raw logits over the question lets generic words and large-logit heads decide, and on the built-in
    model layer-0 HAWK then keeps fewer target tokens than random on colour and shape questions. A softmax per
    instruction token first turns each word's preference into a distribution over the image. Same inputs and cost as
    HAWK (layer-0 q/k, no extra decoder pass); head weights as for `hawk` (uniform without a file).
    """

    name: ClassVar[str] = "hawk-attn"

    def score(self, inputs: ScoringInputs) -> Tensor:
        q, k = inputs.query_key(self.layer)
        mass = attention_mass(q, k, inputs.query_mask, inputs.visual_mask)
        weights = (torch.full((q.shape[1],), 1.0 / q.shape[1]) if self.head_weights is None
                   else self.head_weights.float())
        fused = torch.einsum("bhl,h->bl", mass, weights.to(mass.device))
        return fused.masked_fill(~inputs.visual_mask, float("-inf"))
