"""Text-free saliency: the L2 norm of each visual feature entering the decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from hawk_cli.scorers.base import Scorer, ScoringInputs


@dataclass(frozen=True)
class NormScorer(Scorer):
    """Keeps the visual tokens whose merged features have the largest L2 norm; ignores the question.

    A text-free baseline: it tells whether a text-guided method's gain comes from the text at all. Assumes
    salient content has larger feature norms, which holds for the built-in model (objects over background).
    """

    name: ClassVar[str] = "norm"

    def score(self, inputs: ScoringInputs) -> Tensor:
        norms = inputs.embeds.float().norm(dim=-1)
        return norms.masked_fill(~inputs.visual_mask.bool(), float("-inf"))
