"""The engine's own greedy prefill + decode loop (gpt-fast style): pruned or not, dynamic or static cache.

Decode positions are the unpruned run's (largest original rotary id + 1 + step), the decode mask is the
compacted prompt mask plus ones, and a static cache is sized AFTER pruning, so the KV saving is real. How each
step runs (eager, captured CUDA graph, compiled) is `decode_step.DecodeStep`'s business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter
from hawk_cli.engine.decode_step import DecodeStep, Decoding
from hawk_cli.engine.finish_watch import FinishWatch
from hawk_cli.engine.pruning import PrunedPrefill, prune_prefill
from hawk_cli.engine.results import GenerationResult, RowStats
from hawk_cli.engine.selection import validate_keep_tokens, validate_ratio
from hawk_cli.engine.timing import EventTimer, PhaseTimer
from hawk_cli.errors import UsageError
from hawk_cli.scorers.base import Scorer


class TokenChoice(Protocol):
    """A decoding policy (e.g. `engine.sampling.Sampling`): `start` binds it to one batch's prompts and returns
    the per-step chooser, `choose(logits [B, V] float32) -> next tokens [B]`, which also remembers what it chose
    (a repetition penalty reads the prompt and the tokens generated so far)."""

    def start(self, input_ids: Tensor, attention_mask: Tensor) -> Callable[[Tensor], Tensor]: ...


class PolicyStep(DecodeStep):
    """An eager decode step whose next tokens come from a decoding policy instead of argmax (a policy runs host
    code per step, which a captured or compiled step cannot)."""

    def __init__(self, adapter: ModelAdapter, choose: Callable[[Tensor], Tensor]) -> None:
        super().__init__(adapter, "eager")
        self._choose = choose

    def pick(self, logits: Tensor) -> Tensor:
        return self._choose(logits)


@dataclass(frozen=True)
class GenerationSettings:
    ratio: float = 0.8
    max_new_tokens: int = 16
    cache: str = "auto"  # "auto" (static where the decode step is captured or compiled, else dynamic) | ...
    compile: bool = False  # without a decode_step: a compiled static-cache step (CUDA)
    record_logits: bool = False
    keep_tokens: int | None = None  # visual tokens kept per prompt; when given, `ratio` is not used
    # How each next token is chosen from the step's logits; None: greedy (argmax), the exactness-tested default.
    choice: TokenChoice | None = None

    def __post_init__(self) -> None:
        validate_ratio(self.ratio)
        validate_keep_tokens(self.keep_tokens)
        if self.max_new_tokens < 1:
            raise UsageError(
                f"must be at least 1, got {self.max_new_tokens}",
                "Use e.g. {max_new_tokens=}16",
                setting="max_new_tokens",
            )
        if self.cache not in ("auto", "dynamic", "static"):
            raise UsageError(f"unknown cache kind '{self.cache}'", "Use auto, dynamic or static")
        if self.compile and self.cache == "dynamic":
            raise UsageError("a compiled decode step needs the static cache", "Use {cache=}static", setting="cache")
        if self.compile and self.choice is not None:
            raise UsageError(
                "sampling and penalties run eagerly, not in a compiled decode step",
                "Leave {compile} off",
                setting="compile",
            )


# What a cache layer holds: keys and values of attention layers (one slot per token), and the fixed-size states
# of convolution / recurrent layers (Qwen3.5's Gated DeltaNet: a conv window and a recurrent matrix per layer).
TOKEN_STATE_ATTRIBUTES = ("keys", "values")
FIXED_STATE_ATTRIBUTES = ("conv_states", "recurrent_states")


def _tensors(value: object) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def cache_bytes(cache: object, attributes: tuple[str, ...] = TOKEN_STATE_ATTRIBUTES + FIXED_STATE_ATTRIBUTES) -> int:
    """Bytes of all tensors the cache holds under `attributes` (allocated size for a static cache): by default
    keys, values and the conv / recurrent states of linear-attention layers, each tensor counted once."""
    seen: set[int] = set()
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in attributes:
            for tensor in _tensors(getattr(layer, name, None)):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    total += tensor.numel() * tensor.element_size()
    return total


def fixed_state_bytes(cache: object) -> int:
    """The part of `cache_bytes` that does not grow with the sequence (conv and recurrent states)."""
    return cache_bytes(cache, FIXED_STATE_ATTRIBUTES)


def row_stats(pruned: PrunedPrefill) -> list[RowStats]:
    """Per-row token counts, gathered on the device and read back in one transfer (not one sync per count)."""
    roles, valid, keep = pruned.roles, pruned.prefill.attention_mask.bool(), pruned.keep
    counts = torch.stack(
        [roles.visual.sum(1), (keep & roles.visual).sum(1), valid.sum(1), keep.sum(1), roles.query.sum(1)], dim=1
    ).tolist()
    return [
        RowStats(
            visual_tokens=v,
            visual_tokens_kept=vk,
            prompt_tokens=p,
            prompt_tokens_kept=pk,
            query_tokens=q,
            query_fallback=roles.fallback[r],
        )
        for r, (v, vk, p, pk, q) in enumerate(counts)
    ]


def generate(
    adapter: ModelAdapter,
    inputs: Any,  # the family's batch (ModelInputs for Qwen2-VL-style families)
    scorer: Scorer | None,
    settings: GenerationSettings,
    eos_ids: set[int],
    target_mask: Tensor | None = None,
    decode_step: DecodeStep | None = None,
    timer: PhaseTimer | EventTimer | None = None,
) -> GenerationResult:
    """Greedy generation with HAWK pruning before decoder layer 0. `inputs` is a left-padded ModelInputs.

    Pass a `decode_step` to choose how steps run (eager, captured CUDA graphs, compiled) and to reuse its graphs
    and caches across calls (default: an eager step, or a compiled one with `settings.compile`), and a `timer`
    to observe the phases (default: CUDA events, so the host never waits on a phase boundary; `hawk bench`
    passes a synchronising one). The decode loop never waits for the device: an empty `eos_ids` forces
    `max_new_tokens`, otherwise the end is learnt from flags copied to the host asynchronously (FinishWatch).
    """
    device = inputs.input_ids.device
    timer = timer or EventTimer(device, adapter.devices)
    if settings.choice is not None:
        if decode_step is not None:
            raise ValueError("a decoding policy runs its own eager step; pass no decode_step with it")
        step: DecodeStep = PolicyStep(adapter, settings.choice.start(inputs.input_ids, inputs.attention_mask))
    else:
        step = decode_step or DecodeStep(adapter, "compile" if settings.compile else "eager")
    with torch.inference_mode():
        pruned = prune_prefill(adapter, inputs, scorer, settings.ratio, timer, target_mask, settings.keep_tokens)
        embeds, positions, mask = pruned.decoder_inputs()
        extras = pruned.decoder_extras()
        batch, length = mask.shape
        next_position = adapter.next_positions(pruned.prefill.position_ids, pruned.prefill.attention_mask)
        with timer.phase("prefill_s"):
            captured_length = step.captured_prefill_length(batch, length, extras is not None)
            if captured_length is not None:
                embeds, positions, mask = pad_left(embeds, positions, mask, captured_length)
                length = captured_length
            decoding = step.start(
                batch,
                length,
                positions.shape[0],
                settings.max_new_tokens,
                len(eos_ids),
                step.cache_kind(settings.cache),
                device,
                padded=pruned.compaction.padded,
            )
            logits = decoding.prefill(embeds, positions, mask, extras, captured=captured_length is not None)
        kv_bytes, state_bytes = cache_bytes(decoding.cache), fixed_state_bytes(decoding.cache)
        # the unpruned run's position of the first new token, on every rotary axis: [P, B, 1]
        decoding.state.load(mask, next_position.view(1, batch, 1).expand(positions.shape[0], batch, 1), sorted(eos_ids))
        tokens, step_logits = _greedy_loop(decoding, logits, eos_ids, settings, timer)
    timings = dict(timer.seconds)
    timings["ttft_s"] = timings.get("vision_s", 0) + timings.get("scoring_s", 0) + timings.get("prefill_s", 0)
    timings["total_s"] = timings["ttft_s"] + timings.get("decode_s", 0)
    return GenerationResult(
        tokens=tokens,
        rows=row_stats(pruned),
        timings=timings,
        kv_cache_bytes=kv_bytes,
        keep_mask=pruned.keep.cpu(),
        visual_mask=pruned.roles.visual.cpu(),
        scores=None if pruned.scores is None else pruned.scores.cpu(),
        step_logits=step_logits,
        kv_cache_slots=decoding.cache_slots,
        cache_state_bytes=state_bytes,
    )


def pad_left(embeds: Tensor, positions: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """A left-padded prompt (`embeds` [B, L, D], rotary ids [P, B, L], `mask` [B, L]) padded further on the left
    to `length` columns: zero embeddings and ids, mask 0. The real tokens keep their ids and what they attend."""
    extra = length - mask.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad a prompt of {mask.shape[1]} columns to {length}")
    if extra == 0:
        return embeds, positions, mask
    return F.pad(embeds, (0, 0, extra, 0)), F.pad(positions, (extra, 0)), F.pad(mask, (extra, 0))


def _greedy_loop(
    decoding: Decoding, logits: Tensor, eos_ids: set[int], settings: GenerationSettings, timer: PhaseTimer | EventTimer
) -> tuple[list[list[int]], list[Tensor]]:
    """Token 0 from the prefill's logits, then one decode step per further token. Per step the host only queues
    work: the chosen tokens land in `produced` on the device and are read back once, at the end."""
    batch, steps = logits.shape[0], settings.max_new_tokens
    produced = torch.empty(batch, steps, dtype=torch.long, device=logits.device)
    watch = FinishWatch(logits.device) if eos_ids else None
    step_logits = []
    count = 0
    with timer.phase("decode_s"):
        for t in range(steps):
            if t > 0:
                logits, chosen = decoding.advance(t - 1)
            else:
                chosen = decoding.step.choose(decoding.state, logits)
            if settings.record_logits:
                step_logits.append(logits.cpu())
            produced[:, t] = chosen
            count = t + 1
            if watch is not None:
                watch.push(decoding.state.finished)
                if watch.done():
                    break
    return _trim(produced[:, :count].tolist(), eos_ids), step_logits


def _trim(rows: list[list[int]], eos_ids: set[int]) -> list[list[int]]:
    """Cut each row after its first end-of-sequence id."""
    trimmed = []
    for row in rows:
        end = next((i + 1 for i, token in enumerate(row) if token in eos_ids), len(row))
        trimmed.append(row[:end])
    return trimmed
