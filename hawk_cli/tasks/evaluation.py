"""Accuracy kept under pruning on the synthetic held-out set: methods × ratios against random and oracle bounds.

Each batch of questions is answered once unpruned and once per method × ratio, greedily, by the engine's own
`generate`; the answer's first word is compared with the expected word. Per configuration: accuracy overall and
per question type (with binomial standard errors), retention = pruned / unpruned accuracy, and target-token recall
= kept target tokens / target tokens (the synthetic masks, mapped row-major onto each prompt's visual tokens).
The images of a batch are encoded once and shared by all configurations (the tower does not depend on the method).
Never prints: progress goes through a callback.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from hawk_cli.engine.decode_step import DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.roles import token_roles
from hawk_cli.engine.selection import keep_count, validate_ratio
from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.requests import Request
from hawk_cli.scorers import Scorer, get_scorer_class
from hawk_cli.synthetic.scenes import GRID, HELDOUT_SEED, QUESTION_KINDS, SyntheticQuestion, heldout_set

DEFAULT_RATIOS = (0.5, 0.8, 0.9)
DEFAULT_METHODS = ("hawk", "hawk-uniform", "random", "norm", "oracle")
BOUNDS = {"random": "lower bound", "oracle": "upper bound"}
VISUAL_TOKENS_PER_SCENE = GRID * GRID


@dataclass(frozen=True)
class EvalSettings:
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    methods: tuple[str, ...] = DEFAULT_METHODS
    n: int = 2000
    seed: int = 0  # seeds the random draws of `random` and the oracle's tie-breaks
    batch_size: int = 16
    max_new_tokens: int = 2  # the answer word (and end of turn): greedy, so more tokens change nothing
    weights: str | None = None  # head-weight file for `hawk`
    set_seed: int = HELDOUT_SEED  # which held-out questions (the first n of the set drawn from this seed)

    def __post_init__(self) -> None:
        if not self.ratios:
            raise UsageError("no ratios to evaluate", "Use e.g. 0.5,0.8,0.9")
        for ratio in self.ratios:
            validate_ratio(ratio)
            if ratio == 0:
                raise UsageError(
                    "ratio 0 is the unpruned run, which every evaluation already includes", "Leave 0 out of the ratios"
                )
        if len(set(self.ratios)) != len(self.ratios):
            raise UsageError(
                f"repeats a value: {','.join(map(str, self.ratios))}", "Give each ratio once", setting="ratios"
            )
        if not self.methods:
            raise UsageError("no methods to evaluate", f"Use e.g. {','.join(DEFAULT_METHODS)}")
        for method in self.methods:
            get_scorer_class(method)
        if len(set(self.methods)) != len(self.methods):
            raise UsageError(f"repeats a name: {','.join(self.methods)}", "Give each method once", setting="methods")
        if self.n < 1:
            raise UsageError(f"must be at least 1, got {self.n}", "Use e.g. {n=}2000", setting="n")
        if self.batch_size < 1:
            raise UsageError(
                f"must be at least 1, got {self.batch_size}", "Use e.g. {batch_size=}16", setting="batch_size"
            )
        if self.seed < 0:
            raise UsageError(f"must be a non-negative integer, got {self.seed}", "Use e.g. {seed=}0", setting="seed")


@dataclass
class Tally:
    """Counts of one configuration (or the unpruned run), overall and per question type."""

    correct: dict[str, int] = field(default_factory=lambda: {k: 0 for k in QUESTION_KINDS})
    total: dict[str, int] = field(default_factory=lambda: {k: 0 for k in QUESTION_KINDS})
    targets: dict[str, int] = field(default_factory=lambda: {k: 0 for k in QUESTION_KINDS})
    targets_kept: dict[str, int] = field(default_factory=lambda: {k: 0 for k in QUESTION_KINDS})
    visual_kept: int = 0
    visual: int = 0
    scoring_s: float = 0.0
    prefill_s: float = 0.0
    answers: list[str] = field(default_factory=list)  # in question order

    def add(self, kind: str, correct: bool, targets: int, kept: int, answer: str) -> None:
        self.correct[kind] += int(correct)
        self.total[kind] += 1
        self.targets[kind] += targets
        self.targets_kept[kind] += kept
        self.answers.append(answer)


def proportion(successes: int, trials: int) -> tuple[float | None, float | None]:
    """(p, binomial standard error sqrt(p(1-p)/n)); (None, None) without trials."""
    if trials == 0:
        return None, None
    p = successes / trials
    return p, math.sqrt(p * (1 - p) / trials)


@dataclass(frozen=True)
class MethodResult:
    """One method at one ratio, with the shared unpruned run for reference. Fractions in [0, 1]."""

    method: str
    ratio: float
    scorer: dict
    tally: Tally
    unpruned: Tally

    def figures(self) -> dict:
        correct, total = sum(self.tally.correct.values()), sum(self.tally.total.values())
        accuracy, accuracy_se = proportion(correct, total)
        base, _ = proportion(sum(self.unpruned.correct.values()), sum(self.unpruned.total.values()))
        recall, _ = proportion(sum(self.tally.targets_kept.values()), sum(self.tally.targets.values()))
        per_kind = {}
        for kind in QUESTION_KINDS:
            acc, se = proportion(self.tally.correct[kind], self.tally.total[kind])
            kind_base, _ = proportion(self.unpruned.correct[kind], self.unpruned.total[kind])
            per_kind[kind] = {
                "questions": self.tally.total[kind],
                "accuracy": acc,
                "accuracy_se": se,
                "retention": acc / kind_base if acc is not None and kind_base else None,
                "target_recall": proportion(self.tally.targets_kept[kind], self.tally.targets[kind])[0],
            }
        return {
            "method": self.method,
            "bound": BOUNDS.get(self.method),
            "ratio": self.ratio,
            "keep_fraction": self.tally.visual_kept / self.tally.visual if self.tally.visual else None,
            "visual_tokens_kept_per_image": keep_count(VISUAL_TOKENS_PER_SCENE, self.ratio),
            "questions": total,
            "correct": correct,
            "accuracy": accuracy,
            "accuracy_se": accuracy_se,
            "retention": accuracy / base if base else None,
            "retention_se": accuracy_se / base if base else None,
            "target_recall": recall,
            "per_type": per_kind,
            "scoring_s": self.tally.scoring_s,
            "prefill_s": self.tally.prefill_s,
            "scoring_share_of_unpruned_prefill": (
                self.tally.scoring_s / self.unpruned.prefill_s if self.unpruned.prefill_s else None
            ),
            **{key: value for key, value in self.scorer.items() if key != "scorer"},
        }


@dataclass
class EvalReport:
    settings: EvalSettings
    unpruned: Tally
    results: list[MethodResult]
    seconds: float
    questions: int
    model: str = ""

    def unpruned_figures(self) -> dict:
        correct, total = sum(self.unpruned.correct.values()), sum(self.unpruned.total.values())
        accuracy, se = proportion(correct, total)
        per_kind = {
            kind: dict(
                zip(
                    ("accuracy", "accuracy_se"),
                    proportion(self.unpruned.correct[kind], self.unpruned.total[kind]),
                    strict=True,
                ),
                questions=self.unpruned.total[kind],
            )
            for kind in QUESTION_KINDS
        }
        return {
            "questions": total,
            "correct": correct,
            "accuracy": accuracy,
            "accuracy_se": se,
            "per_type": per_kind,
            "prefill_s": self.unpruned.prefill_s,
        }


# ------------------------------------------------------------------------------------------------ helpers


def normalise_answer(text: str) -> str:
    """The first word of a generated answer, lower case, without punctuation."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return words[0] if words else ""


def target_masks(visual_mask: Tensor, questions: Sequence[SyntheticQuestion]) -> Tensor:
    """[B, L] bool: each question's 16×16 target grid laid row-major onto its prompt's visual tokens."""
    out = torch.zeros(visual_mask.shape, dtype=torch.bool)
    visual = visual_mask.bool().cpu()
    for row, question in enumerate(questions):
        n_visual = int(visual[row].sum())
        grid = np.asarray(question.target_mask, dtype=bool).reshape(-1)
        if n_visual != grid.size:
            raise InputError(
                f"this model turns a {question.image.width}x{question.image.height} scene into "
                f"{n_visual} visual tokens, not the {grid.size} of the synthetic 16x16 grid",
                "Evaluate the built-in model, or a Qwen-VL model whose image processor keeps 448x448 images at 448x448",
            )
        out[row, visual[row]] = torch.from_numpy(grid)
    return out.to(visual_mask.device)


def for_rows(scorer: Scorer, keys: tuple[int, ...]) -> Scorer:
    """Give seeded scorers one key per prompt (the question's index), so each question gets its own draw."""
    fields = getattr(scorer, "__dataclass_fields__", {})
    return replace(scorer, row_keys=keys) if "row_keys" in fields else scorer


class _VisionOnce:
    """The adapter, with each batch's images encoded once for every configuration (same features, less time)."""

    def __init__(self, adapter) -> None:
        self._adapter = adapter
        self._inputs = None
        self._features = None

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)

    def encode_vision(self, inputs):
        if inputs is not self._inputs:
            self._features = self._adapter.encode_vision(inputs)
            self._inputs = inputs
        return self._features


def build_scorers(session, settings: EvalSettings) -> dict[str, Scorer]:
    """One scorer per method; head weights resolved by the session, seeds from the settings."""
    scorers = {}
    for method in settings.methods:
        weights = settings.weights if method == "hawk" else None
        scorer, _ = session.make_scorer(method, weights)
        if "seed" in getattr(scorer, "__dataclass_fields__", {}):
            scorer = replace(scorer, seed=settings.seed)
        scorers[method] = scorer
    return scorers


# ------------------------------------------------------------------------------------------------ the run


def evaluate(
    session,
    settings: EvalSettings,
    progress: Callable[[int], None] | None = None,
    questions: Sequence[SyntheticQuestion] | None = None,
) -> EvalReport:
    """Run the held-out set (or `questions`) unpruned once and under every method × ratio.

    `progress(n)` is called after each batch with the number of questions it held.
    """
    started = time.perf_counter()
    questions = list(questions) if questions is not None else heldout_set(settings.n, settings.set_seed)
    scorers = build_scorers(session, settings)
    adapter = _VisionOnce(session.adapter)
    step = DecodeStep(adapter, session.decode_mode)  # graphs captured once, replayed for every configuration
    unpruned = Tally()
    tallies = {(m, r): Tally() for m in settings.methods for r in settings.ratios}
    device = session.loaded.device
    for start in range(0, len(questions), settings.batch_size):
        batch = questions[start : start + settings.batch_size]
        keys = tuple(range(start, start + len(batch)))
        requests = [Request(question=q.question, images=(q.image,)) for q in batch]
        inputs = session.build_inputs(requests).to(device)
        visual = token_roles(inputs.input_ids, inputs.attention_mask, session.adapter.tokens).visual
        targets = target_masks(visual, batch)
        runs = [(unpruned, None, 0.0)] + [
            (tallies[m, r], for_rows(scorers[m], keys), r) for m in settings.methods for r in settings.ratios
        ]
        for tally, scorer, ratio in runs:
            result = generate(
                adapter,
                inputs,
                scorer,
                GenerationSettings(ratio=ratio, max_new_tokens=settings.max_new_tokens),
                session.eos_ids,
                target_mask=targets if scorer is not None else None,
                decode_step=step,
            )
            tally.scoring_s += result.timings.get("scoring_s", 0.0)
            tally.prefill_s += result.timings.get("prefill_s", 0.0)
            kept = result.keep_mask.to(targets.device) & visual
            for row, question in enumerate(batch):
                answer = session.decode(result.tokens[row])
                tally.visual += int(visual[row].sum())
                tally.visual_kept += int(kept[row].sum())
                tally.add(
                    question.kind,
                    normalise_answer(answer) == question.answer,
                    int(targets[row].sum()),
                    int((kept[row] & targets[row]).sum()),
                    answer,
                )
        if progress is not None:
            progress(len(batch))
    results = [
        MethodResult(method=m, ratio=r, scorer=scorers[m].describe(), tally=tallies[m, r], unpruned=unpruned)
        for m in settings.methods
        for r in settings.ratios
    ]
    return EvalReport(
        settings=settings,
        unpruned=unpruned,
        results=results,
        seconds=time.perf_counter() - started,
        questions=len(questions),
        model=session.loaded.name,
    )
