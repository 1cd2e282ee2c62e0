"""The oracle upper bound: keep the tokens of the asked-about objects first (synthetic evaluation only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from hawk_cli.errors import UsageError
from hawk_cli.scorers.base import Scorer, ScoringInputs
from hawk_cli.scorers.random import check_seed, row_uniforms


@dataclass(frozen=True)
class OracleScorer(Scorer):
    """Ranks every ground-truth target token above every other visual token; random order within each group.

    Needs `ScoringInputs.target_mask`, which only the synthetic evaluation (`hawk eval`) provides. It bounds what
    selection alone can reach; it is not a method.
    """

    name: ClassVar[str] = "oracle"
    seed: int = 0
    row_keys: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)

    def score(self, inputs: ScoringInputs) -> Tensor:
        if inputs.target_mask is None:
            raise UsageError(
                "the oracle scorer needs ground-truth target masks, which only 'hawk eval' has",
                "Use it with 'hawk eval' ({scorer=}oracle); choose another {scorer} for real images",
            )
        tie_break = row_uniforms(inputs.visual_mask, self.seed, self.row_keys)  # [0, 1), -inf off visual
        target = inputs.target_mask.to(tie_break.device).bool() & inputs.visual_mask.bool()
        return tie_break * 0.5 + target.float()  # targets in [1, 1.5), the rest in [0, 0.5)

    def describe(self) -> dict:
        return {"scorer": self.name, "seed": self.seed}
