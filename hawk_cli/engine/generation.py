"""The engine's own greedy prefill + decode loop (gpt-fast style): pruned or not, dynamic or static cache.

Decode positions are the unpruned run's (largest original rotary id + 1 + step), the decode mask is the
compacted prompt mask plus ones, and a static cache is sized AFTER pruning, so the KV saving is real.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter
from hawk_cli.engine.pruning import PrunedPrefill, prune_prefill
from hawk_cli.engine.results import GenerationResult, RowStats
from hawk_cli.engine.selection import validate_ratio
from hawk_cli.engine.timing import EventTimer, PhaseTimer
from hawk_cli.errors import UsageError
from hawk_cli.scorers.base import Scorer


class TokenChoice(Protocol):
    """A decoding policy (e.g. `engine.sampling.Sampling`): `start` binds it to one batch's prompts and returns
    the per-step chooser, `choose(logits [B, V] float32) -> next tokens [B]`, which also remembers what it chose
    (a repetition penalty reads the prompt and the tokens generated so far)."""

    def start(self, input_ids: Tensor, attention_mask: Tensor) -> Callable[[Tensor], Tensor]: ...


@dataclass(frozen=True)
class GenerationSettings:
    ratio: float = 0.8
    max_new_tokens: int = 16
    cache: str = "dynamic"  # "dynamic" | "static"
    compile: bool = False  # compile the static-cache decode step (CUDA)
    record_logits: bool = False
    # How each next token is chosen from the step's logits; None: greedy (argmax), the exactness-tested default.
    choice: TokenChoice | None = None

    def __post_init__(self) -> None:
        validate_ratio(self.ratio)
        if self.max_new_tokens < 1:
            raise UsageError(f"must be at least 1, got {self.max_new_tokens}",
                             "Use e.g. {max_new_tokens=}16", setting="max_new_tokens")
        if self.cache not in ("dynamic", "static"):
            raise UsageError(f"unknown cache kind '{self.cache}'", "Use dynamic or static")
        if self.compile and self.cache != "static":
            raise UsageError("a compiled decode step needs the static cache", "Use {cache=}static", setting="cache")


def cache_bytes(cache) -> int:
    """Bytes of all key/value tensors the cache holds (allocated size for a static cache)."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def row_stats(pruned: PrunedPrefill) -> list[RowStats]:
    """Per-row token counts, gathered on the device and read back in one transfer (not one sync per count)."""
    roles, valid, keep = pruned.roles, pruned.prefill.attention_mask.bool(), pruned.keep
    counts = torch.stack([roles.visual.sum(1), (keep & roles.visual).sum(1), valid.sum(1), keep.sum(1),
                          roles.query.sum(1)], dim=1).tolist()
    return [RowStats(visual_tokens=v, visual_tokens_kept=vk, prompt_tokens=p, prompt_tokens_kept=pk,
                     query_tokens=q, query_fallback=roles.fallback[r])
            for r, (v, vk, p, pk, q) in enumerate(counts)]


class DecodeStep:
    """One greedy step: embed the last tokens, run the decoder at their positions, return next-token logits.

    Compiled (CUDA): `torch.compile` with CUDA graphs ("reduce-overhead") over a static cache and the fixed-size
    mask buffer. Shapes are dynamic, so one graph per batch size serves every prompt length, and the step keeps
    one static cache per (batch, capacity): a CUDA graph replays on fixed addresses, and a fresh cache would
    force a re-capture inside the timed decode.
    """

    def __init__(self, adapter: ModelAdapter, compiled: bool) -> None:
        self.adapter = adapter
        self.compiled = compiled
        self._caches: dict[tuple[int, int], object] = {}
        self._call = torch.compile(self._step, mode="reduce-overhead", dynamic=True) if compiled else self._step

    def _step(self, tokens: Tensor, positions: Tensor, mask: Tensor, cache) -> Tensor:
        hidden = self.adapter.decode(self.adapter.embed(tokens), positions, mask, cache)
        return self.adapter.logits(hidden[:, -1]).float()

    def __call__(self, tokens: Tensor, positions: Tensor, mask: Tensor, cache) -> Tensor:
        return self._call(tokens, positions, mask, cache)

    def new_cache(self, kind: str, batch: int, capacity: int):
        """A cache for one generation; a compiled step reuses its static cache of that shape (reset)."""
        if not self.compiled:
            return self.adapter.new_cache(kind, capacity)
        cache = self._caches.get((batch, capacity))
        if cache is None:
            cache = self._caches[(batch, capacity)] = self.adapter.new_cache("static", capacity)
        else:
            cache.reset()
        return cache


def generate(adapter: ModelAdapter, inputs, scorer: Scorer | None, settings: GenerationSettings,
             eos_ids: set[int], target_mask: Tensor | None = None,
             decode_step: DecodeStep | None = None,
             timer: PhaseTimer | EventTimer | None = None) -> GenerationResult:
    """Greedy generation with HAWK pruning before decoder layer 0. `inputs` is a left-padded ModelInputs.

    Pass a `decode_step` to reuse its compiled graphs across calls, and a `timer` to observe the phases (default:
    CUDA events, so the host never waits on a phase boundary; `hawk bench` passes a synchronising one).
    An empty `eos_ids` forces `max_new_tokens` and keeps the decode loop free of host synchronisation.
    """
    device = inputs.input_ids.device
    timer = timer or EventTimer(device)
    with torch.inference_mode():
        pruned = prune_prefill(adapter, inputs, scorer, settings.ratio, timer, target_mask)
        embeds, positions, mask = pruned.decoder_inputs()
        extras = pruned.decoder_extras()
        batch, length = mask.shape
        capacity = length + settings.max_new_tokens
        mask_buffer = torch.zeros(batch, capacity, dtype=mask.dtype, device=device)
        mask_buffer[:, :length] = mask
        next_position = adapter.next_positions(pruned.prefill.position_ids, pruned.prefill.attention_mask)
        step = decode_step or DecodeStep(adapter, settings.compile)
        with timer.phase("prefill_s"):
            cache = step.new_cache(settings.cache, batch, capacity)
            hidden = adapter.decode(embeds, positions, mask, cache, extras)
            logits = adapter.logits(hidden[:, -1]).float()
        kv_bytes = cache_bytes(cache)
        next_positions = next_position.view(1, batch, 1).expand(positions.shape[0], batch, 1)  # [P, B, 1]
        choose = settings.choice.start(inputs.input_ids, inputs.attention_mask) if settings.choice else None
        tokens, step_logits = _greedy_loop(step, logits, next_positions, mask_buffer, length, cache, eos_ids,
                                           adapter.tokens.pad, settings, timer, choose)
    timings = dict(timer.seconds)
    timings["ttft_s"] = timings.get("vision_s", 0) + timings.get("scoring_s", 0) + timings.get("prefill_s", 0)
    timings["total_s"] = timings["ttft_s"] + timings.get("decode_s", 0)
    return GenerationResult(tokens=tokens, rows=row_stats(pruned), timings=timings, kv_cache_bytes=kv_bytes,
                            keep_mask=pruned.keep.cpu(), visual_mask=pruned.roles.visual.cpu(), scores=None if pruned.scores is None else pruned.scores.cpu(),
                            step_logits=step_logits)


def _greedy_loop(step: DecodeStep, logits: Tensor, next_position: Tensor, mask_buffer: Tensor, length: int,
                 cache, eos_ids: set[int], pad_id: int, settings: GenerationSettings,
                 timer: PhaseTimer | EventTimer,
                 choose: Callable[[Tensor], Tensor] | None = None) -> tuple[list[list[int]], list[Tensor]]:
    batch = logits.shape[0]
    eos = torch.tensor(sorted(eos_ids), device=logits.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=logits.device)
    generated, step_logits = [], []
    with timer.phase("decode_s"):
        for t in range(settings.max_new_tokens):
            if settings.record_logits:
                step_logits.append(logits.cpu())
            chosen = logits.argmax(-1) if choose is None else choose(logits)
            token = torch.where(finished, torch.full_like(finished, pad_id, dtype=torch.long), chosen)
            generated.append(token)
            finished |= torch.isin(token, eos)
            if t == settings.max_new_tokens - 1 or (eos_ids and bool(finished.all())):
                break
            mask_buffer[:, length + t] = 1
            positions = next_position + t  # the unpruned run's position of this token, on every rotary axis
            mask = mask_buffer if settings.cache == "static" else mask_buffer[:, : length + t + 1]
            logits = step(token[:, None], positions, mask, cache)
    return _trim(torch.stack(generated, dim=1).tolist(), eos_ids), step_logits


def _trim(rows: list[list[int]], eos_ids: set[int]) -> list[list[int]]:
    """Cut each row after its first end-of-sequence id."""
    trimmed = []
    for row in rows:
        end = next((i + 1 for i, token in enumerate(row) if token in eos_ids), len(row))
        trimmed.append(row[:end])
    return trimmed
