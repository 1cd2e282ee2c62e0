"""Sampling and penalties for the engine's decode loop, with transformers' own logits processors.

Nothing here re-implements a processor: the list is built from transformers' public classes in the order its
`generate` builds them (repetition penalty; then, when sampling, temperature, top-k, top-p), and the draw is
`softmax` + `torch.multinomial`, as in `generate`'s sampling step.

Two choices differ from a batched `generate` on purpose, so that a prompt's result does not depend on its batch
mates (an evaluation harness batches as it likes):
* each row is processed with its own history, the row's prompt without its left padding plus what it generated
  (transformers >= 5.25 skips the padding the same way; older releases penalise the pad token in padded rows);
* each row draws from its own `torch.Generator` seeded with `seed`, never from torch's global generator. A row
  alone with seed s draws what `torch.manual_seed(s)` followed by `model.generate(do_sample=True)` draws on the
  CPU. Two equal prompts in one batch therefore get equal samples: vary `seed` for several samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hawk_cli.errors import UsageError


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy unless `do_sample`; `repetition_penalty` applies either way.

    `top_k` 0 and `top_p` 1.0 switch those filters off; `temperature` is used only when sampling.
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None  # None when sampling: a fresh seed, drawn without touching torch's global generator

    def __post_init__(self) -> None:
        if not isinstance(self.do_sample, bool):
            raise UsageError(f"must be True or False, got {self.do_sample!r}", setting="do_sample")
        _check_number(self.temperature, "temperature", low=0.0, low_open=True, example="0.7")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise UsageError(
                f"must be a non-negative integer, got {self.top_k!r}",
                "Use e.g. {top_k=}50, or 0 for no top-k filter",
                setting="top_k",
            )
        _check_number(self.top_p, "top_p", low=0.0, low_open=True, high=1.0, example="0.9")
        _check_number(self.repetition_penalty, "repetition_penalty", low=0.0, low_open=True, example="1.1")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63
        ):
            raise UsageError(f"must be a non-negative integer, got {self.seed!r}", "Use e.g. {seed=}0", setting="seed")

    @property
    def is_greedy(self) -> bool:
        """Plain argmax: the engine's default path, nothing to process."""
        return not self.do_sample and self.repetition_penalty == 1.0

    def seeded(self) -> Sampling:
        """These settings with a concrete seed when sampling (so the caller can report and replay it)."""
        if self.do_sample and self.seed is None:
            return replace(self, seed=int(torch.Generator().seed()) % 2**63)
        return self

    def processors(self):
        """The transformers `LogitsProcessorList` these settings mean, in `generate`'s order."""
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        processors = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(self.repetition_penalty)))
        if self.do_sample:
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(float(self.temperature)))
            if self.top_k:
                processors.append(TopKLogitsWarper(top_k=self.top_k))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p=float(self.top_p)))
        return processors

    def start(self, input_ids: Tensor, attention_mask: Tensor) -> RowChooser:
        """The chooser for one left-padded batch (`engine.generation.TokenChoice`)."""
        return RowChooser(self.seeded(), input_ids, attention_mask)

    def describe(self) -> dict:
        return {
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }


class RowChooser:
    """Chooses each row's next token from its own history and generator; remembers the tokens it chose."""

    def __init__(self, sampling: Sampling, input_ids: Tensor, attention_mask: Tensor) -> None:
        self.sampling = sampling
        self.processors = sampling.processors()
        valid = attention_mask.bool()
        self.histories = [input_ids[row][valid[row]][None] for row in range(input_ids.shape[0])]
        self.generators = None
        if sampling.do_sample:
            seed = int(sampling.seed or 0)  # `start` seeds the settings first: never None here
            self.generators = [torch.Generator(device=input_ids.device).manual_seed(seed) for _ in self.histories]

    def __call__(self, logits: Tensor) -> Tensor:
        chosen = []
        for row, history in enumerate(self.histories):
            scores = self.processors(history, logits[row : row + 1].float())
            if self.generators is None:
                token = scores.argmax(-1)
            else:
                probs = torch.nn.functional.softmax(scores, dim=-1)
                token = torch.multinomial(probs, num_samples=1, generator=self.generators[row]).squeeze(1)
            self.histories[row] = torch.cat([history, token[:, None].to(history.dtype)], dim=1)
            chosen.append(token)
        return torch.cat(chosen)


def _check_number(value: Any, name: str, low: float, low_open: bool, example: str, high: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        bounds = f"in ({low:g}, {high:g}]" if high is not None else f"greater than {low:g}"
        raise UsageError(f"must be a number {bounds}, got {value!r}", f"Use e.g. {{{name}=}}{example}", setting=name)
