"""From model inputs to a pruned decoder prefill: vision, roles, scores, keep set, compaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter, Prefill, VisualExtras
from hawk_cli.engine.compaction import Compaction, compact
from hawk_cli.engine.roles import TokenRoles, token_roles
from hawk_cli.engine.selection import select_keep
from hawk_cli.engine.timing import EventTimer, PhaseTimer
from hawk_cli.errors import InputError
from hawk_cli.scorers.base import Scorer, ScoringInputs


@dataclass
class PrunedPrefill:
    prefill: Prefill  # the whole prompt, original positions
    roles: TokenRoles
    keep: Tensor  # [B, L] bool
    compaction: Compaction
    scores: Tensor | None

    def decoder_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """Compacted embeddings [B, L', D], ORIGINAL positions [P, B, L'] and mask [B, L']."""
        c = self.compaction
        return (
            c.gather_tokens(self.prefill.inputs_embeds),
            c.gather_positions(self.prefill.position_ids),
            c.attention_mask,
        )

    def decoder_extras(self) -> VisualExtras | None:
        """The kept visual tokens' per-token values, laid out like the compacted batch (same keep set)."""
        extras = self.prefill.extras
        if extras is None:
            return None
        return extras.pruned(self.keep, lambda mask: self.compaction.gather_tokens(mask.long()).bool())


def scoring_inputs(
    adapter: ModelAdapter, prefill: Prefill, roles: TokenRoles, target_mask: Tensor | None = None
) -> ScoringInputs:
    """Model-agnostic scorer inputs; q/k of layer n are computed lazily (a partial pass for n > 0)."""

    # Extras (e.g. DeepStack features) change the hidden states of the layers they are added after.
    with_extras = {} if prefill.extras is None else {"extras": prefill.extras}

    def query_key(layer: int) -> tuple[Tensor, Tensor]:
        hidden = adapter.run_layers(
            prefill.inputs_embeds, prefill.position_ids, prefill.attention_mask, layer, **with_extras
        )
        return adapter.placed_query_key(hidden, layer)

    return ScoringInputs(
        embeds=prefill.inputs_embeds,
        visual_mask=roles.visual,
        query_mask=roles.query,
        attention_mask=prefill.attention_mask,
        query_key=query_key,
        target_mask=target_mask,
    )


def prune_prefill(
    adapter: ModelAdapter,
    inputs: Any,  # the family's batch (ModelInputs for Qwen2-VL-style families)
    scorer: Scorer | None,
    ratio: float,
    timer: PhaseTimer | EventTimer,
    target_mask: Tensor | None = None,
    keep_tokens: int | None = None,
) -> PrunedPrefill:
    """Encode vision, build the stock prefill, then keep each row's top visual tokens: `keep_tokens` of them when
    given, else by `ratio` (ratio 0: keep all)."""
    with timer.phase("vision_s"):
        features = adapter.encode_vision(inputs)
        prefill = adapter.build_prefill(inputs, features)
    with timer.phase("scoring_s"):
        roles = token_roles(prefill.input_ids, prefill.attention_mask, adapter.tokens)
        valid = prefill.attention_mask.bool()
        if (ratio > 0 or keep_tokens is not None) and scorer is not None:
            if not bool(roles.visual.any(dim=1).all()):
                raise InputError(
                    "a prompt has no visual tokens to prune", "Give an image with each question, or use {ratio=}0"
                )
            scores = scorer.score(scoring_inputs(adapter, prefill, roles, target_mask))
            keep = select_keep(scores, roles.visual, valid, ratio, keep_tokens)
        else:
            scores, keep = None, valid.clone()
        compaction = compact(keep)
    return PrunedPrefill(prefill=prefill, roles=roles, keep=keep, compaction=compaction, scores=scores)
