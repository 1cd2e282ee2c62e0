"""Random selection: a seeded uniform draw over each prompt's visual tokens (a strong baseline in the literature)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from hawk_cli.errors import UsageError
from hawk_cli.scorers.base import Scorer, ScoringInputs


def row_uniforms(visual_mask: Tensor, seed: int, row_keys: tuple[int, ...] | None) -> Tensor:
    """[B, L] float32: U[0, 1) draws on each row's visual tokens (in prompt order), -inf elsewhere.

    Row r draws from a generator seeded with (seed, row_keys[r]) (or (seed,) without keys), so a row scores the
    same alone and inside any batch, and the same on every device.
    """
    if row_keys is not None and len(row_keys) != visual_mask.shape[0]:
        raise UsageError(
            f"{len(row_keys)} row keys were given for a batch of {visual_mask.shape[0]} prompts",
            "Pass one key per prompt",
        )
    out = torch.full(visual_mask.shape, float("-inf"), dtype=torch.float32)
    visual = visual_mask.bool().cpu()
    for row in range(visual.shape[0]):
        entropy = [seed] if row_keys is None else [seed, int(row_keys[row])]
        draws = np.random.default_rng(entropy).random(int(visual[row].sum()))
        out[row, visual[row]] = torch.from_numpy(draws).float()
    return out.to(visual_mask.device)


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"the seed must be a non-negative integer, got {seed!r}", "Use e.g. {seed=}0")


@dataclass(frozen=True)
class RandomScorer(Scorer):
    """Keeps a uniformly random subset of each prompt's visual tokens; text-free, costs nothing.

    The lower bound every method should beat. `row_keys` (one int per prompt, e.g. question ids in `hawk eval`)
    give each prompt its own draw; without them every prompt draws from the same seeded stream.
    """

    name: ClassVar[str] = "random"
    seed: int = 0
    row_keys: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)

    def score(self, inputs: ScoringInputs) -> Tensor:
        return row_uniforms(inputs.visual_mask, self.seed, self.row_keys)

    def describe(self) -> dict:
        return {"scorer": self.name, "seed": self.seed}
