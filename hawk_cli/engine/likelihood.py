"""How likely given continuations are after a pruned prompt.

Evaluation harnesses score multiple-choice answers this way ("loglikelihood" requests): the log-probability of
each candidate answer's tokens after the prompt, and whether greedy decoding would produce exactly them. The
prompt is pruned as generation prunes it (same scorer, same kept tokens, original positions); the continuation
follows at the positions an unpruned run gives it, so a ratio of 0 is the model's own likelihood.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hawk_cli.adapters.base import ModelAdapter, VisualExtras
from hawk_cli.engine.generation import row_stats
from hawk_cli.engine.pruning import prune_prefill
from hawk_cli.engine.results import RowStats
from hawk_cli.engine.timing import EventTimer
from hawk_cli.scorers.base import Scorer


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float  # the sum of the continuation tokens' log-probabilities (natural log)
    greedy: bool  # whether greedy decoding from the prompt produces exactly these tokens
    tokens: int  # how many tokens the continuation has


def score_continuations(
    adapter: ModelAdapter,
    inputs: Any,  # the family's left-padded batch of prompts (ending where the answer starts)
    scorer: Scorer | None,
    continuations: Sequence[Sequence[int]],
    ratio: float,
    keep_tokens: int | None = None,
) -> tuple[list[ContinuationScore], list[RowStats]]:
    """Score one continuation (token ids, at least one) per prompt row, teacher-forced in one decoder pass over
    the pruned prompt followed by the continuation. Returns the scores and each row's token accounting."""
    if len(continuations) != int(inputs.input_ids.shape[0]):
        raise ValueError(f"{len(continuations)} continuations for {int(inputs.input_ids.shape[0])} prompts")
    if any(len(tokens) == 0 for tokens in continuations):
        raise ValueError("a continuation has no tokens")
    device = inputs.input_ids.device
    timer = EventTimer(device, adapter.devices)
    with torch.inference_mode():
        pruned = prune_prefill(adapter, inputs, scorer, ratio, timer, None, keep_tokens)
        embeds, positions, mask = pruned.decoder_inputs()
        batch, length = mask.shape
        width = max(len(tokens) for tokens in continuations)
        ids = torch.zeros(batch, width, dtype=torch.long)
        real = torch.zeros(batch, width, dtype=mask.dtype)
        for row, tokens in enumerate(continuations):
            ids[row, : len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
            real[row, : len(tokens)] = 1
        ids, real = ids.to(device), real.to(device)
        # the continuation sits where an unpruned run's answer would: right after the largest original id
        start = adapter.next_positions(pruned.prefill.position_ids, pruned.prefill.attention_mask)
        steps = (start[:, None] + torch.arange(width, device=device)).to(positions.dtype)
        extras = pruned.decoder_extras()
        if extras is not None:
            extras = VisualExtras(
                mask=torch.cat([extras.mask, torch.zeros(batch, width, dtype=torch.bool, device=device)], dim=1),
                values=extras.values,
            )
        hidden = adapter.decode(
            torch.cat([embeds, adapter.embed(ids).to(embeds.dtype)], dim=1),
            torch.cat([positions, steps.unsqueeze(0).expand(positions.shape[0], -1, -1)], dim=2),
            torch.cat([mask, real], dim=1),
            adapter.new_cache("dynamic", length + width),
            extras,
        )
        scores = []
        for row, tokens in enumerate(continuations):
            # the logits predicting continuation token j sit one slot before it (the prompt's last slot for j = 0)
            logits = adapter.logits(hidden[row, length - 1 : length - 1 + len(tokens)]).float()
            target = ids[row, : len(tokens)]
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
            scores.append(
                ContinuationScore(
                    logprob=float(logprobs.sum()),
                    greedy=bool((logits.argmax(dim=-1) == target).all()),
                    tokens=len(tokens),
                )
            )
    return scores, row_stats(pruned)
