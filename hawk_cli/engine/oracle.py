"""The correctness check users can run on their own model: pruned decoding vs the masked oracle.

The oracle is the model's own `generate` on the UNPRUNED prompt with the dropped visual tokens masked out of
attention and original positions: if hawk's compaction, positions and cache are right, logits agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from hawk_cli.adapters.base import ModelAdapter
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.scorers.base import Scorer


@dataclass(frozen=True)
class OracleReport:
    step_max_abs_logit_diff: list[float]  # step 0 = prefill
    max_abs_logit: float  # scale of the logits, to read the differences against
    tokens_equal: int
    tokens_compared: int
    tolerance: float
    visual_tokens: int
    visual_tokens_kept: int

    @property
    def passed(self) -> bool:
        return (max(self.step_max_abs_logit_diff) <= self.tolerance
                and self.tokens_equal == self.tokens_compared)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def check_against_oracle(adapter: ModelAdapter, inputs, scorer: Scorer, ratio: float, steps: int,
                         eos_ids: set[int], tolerance: float) -> OracleReport:
    """Prune with `scorer` at `ratio`, decode `steps` tokens, and compare every step with the masked oracle."""
    settings = GenerationSettings(ratio=ratio, max_new_tokens=steps, record_logits=True)
    pruned = generate(adapter, inputs, scorer, settings, eos_ids)
    with torch.inference_mode():
        oracle = adapter.masked_generate(inputs, pruned.keep_mask.to(inputs.input_ids.device), steps, eos_ids)
    compared = min(len(pruned.step_logits), len(oracle))
    diffs = [float((pruned.step_logits[t] - oracle[t].cpu()).abs().max()) for t in range(compared)]
    ours = torch.stack([s.argmax(-1) for s in pruned.step_logits[:compared]])
    theirs = torch.stack([s.cpu().argmax(-1) for s in oracle[:compared]])
    visual = sum(row.visual_tokens for row in pruned.rows)
    kept = sum(row.visual_tokens_kept for row in pruned.rows)
    return OracleReport(step_max_abs_logit_diff=diffs, max_abs_logit=float(oracle[0].abs().max()),
                        tokens_equal=int((ours == theirs).sum()), tokens_compared=int(ours.numel()),
                        tolerance=tolerance, visual_tokens=visual, visual_tokens_kept=kept)
