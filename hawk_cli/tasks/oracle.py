"""The correctness check users can run on their own model: pruned decoding vs the family's oracle.

Both oracles are the model's own `generate`, sharing no code with hawk's loop. The masked oracle (attention-only
decoders) runs the UNPRUNED prompt with the dropped visual tokens masked out of attention, at original positions.
Where a token mixer also convolves or recurs over the sequence (Qwen3.5's Gated DeltaNet), a masked token still
moves the layer's state, so masking is not dropping; there the compaction oracle runs the stock embeddings of the
kept tokens alone at their original positions (`ModelAdapter.oracle_generate`). If hawk's compaction, positions
and cache are right, logits agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from hawk_cli.adapters.base import ModelAdapter
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.scorers.base import Scorer


@dataclass(frozen=True)
class StepComparison:
    """Per-step logits of two greedy runs, compared while their inputs are the same.

    Once a row's greedy token differs, later steps see different inputs, so comparison stops there. A
    divergence is only acceptable at a near-tie: the oracle's top-2 logit gap at that step within tolerance
    (bf16 rounding flips such ties; a real bug moves logits far more).
    """

    step_max_abs_logit_diff: list[float]  # step 0 = prefill, up to and including a divergence
    tokens_equal: int
    tokens_compared: int
    diverged_at_step: int | None
    divergence_gap: float | None  # the oracle's top-2 gap where the tokens first differ

    def passed(self, tolerance: float) -> bool:
        close = max(self.step_max_abs_logit_diff, default=0.0) <= tolerance
        return close and (self.diverged_at_step is None or self.divergence_gap <= tolerance)


def compare_step_logits(ours: list[torch.Tensor], oracle: list[torch.Tensor]) -> StepComparison:
    diffs, equal, compared = [], 0, 0
    for step, (mine, theirs) in enumerate(zip(ours, oracle, strict=False)):
        mine, theirs = mine.float().cpu(), theirs.float().cpu()
        diffs.append(float((mine - theirs).abs().max()))
        agree = mine.argmax(-1) == theirs.argmax(-1)
        equal, compared = equal + int(agree.sum()), compared + agree.numel()
        if not bool(agree.all()):
            top2 = theirs[~agree].topk(2, dim=-1).values
            return StepComparison(diffs, equal, compared, step, float((top2[:, 0] - top2[:, 1]).max()))
    return StepComparison(diffs, equal, compared, None, None)


@dataclass(frozen=True)
class OracleReport:
    step_max_abs_logit_diff: list[float]  # step 0 = prefill
    max_abs_logit: float  # scale of the logits, to read the differences against
    tokens_equal: int
    tokens_compared: int
    tolerance: float
    visual_tokens: int
    visual_tokens_kept: int
    diverged_at_step: int | None = None
    divergence_gap: float | None = None
    oracle: str = "masked"  # which reference: "masked" or "compaction"

    @property
    def passed(self) -> bool:
        return StepComparison(
            self.step_max_abs_logit_diff,
            self.tokens_equal,
            self.tokens_compared,
            self.diverged_at_step,
            self.divergence_gap,
        ).passed(self.tolerance)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def check_against_oracle(
    adapter: ModelAdapter, inputs, scorer: Scorer, ratio: float, steps: int, eos_ids: set[int], tolerance: float
) -> OracleReport:
    """Prune with `scorer` at `ratio`, decode `steps` tokens, and compare every step with the family's oracle."""
    settings = GenerationSettings(ratio=ratio, max_new_tokens=steps, record_logits=True)
    pruned = generate(adapter, inputs, scorer, settings, eos_ids)
    with torch.inference_mode():
        oracle = adapter.oracle_generate(inputs, pruned.keep_mask.to(inputs.input_ids.device), steps, eos_ids)
    comparison = compare_step_logits(pruned.step_logits, oracle)
    visual = sum(row.visual_tokens for row in pruned.rows)
    kept = sum(row.visual_tokens_kept for row in pruned.rows)
    return OracleReport(
        step_max_abs_logit_diff=comparison.step_max_abs_logit_diff,
        max_abs_logit=float(oracle[0].abs().max()),
        tokens_equal=comparison.tokens_equal,
        tokens_compared=comparison.tokens_compared,
        tolerance=tolerance,
        visual_tokens=visual,
        visual_tokens_kept=kept,
        diverged_at_step=comparison.diverged_at_step,
        divergence_gap=comparison.divergence_gap,
        oracle=adapter.oracle_name,
    )
