"""What the engine returns: plain dataclasses, serialisable with `to_dict`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import Tensor


@dataclass(frozen=True)
class RowStats:
    """Token accounting of one prompt."""

    visual_tokens: int
    visual_tokens_kept: int
    prompt_tokens: int
    prompt_tokens_kept: int
    query_tokens: int
    query_fallback: bool  # True: no instruction after the image; the user's text was used as queries

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # generated ids per row, up to and including the first end-of-sequence id
    rows: list[RowStats]
    timings: dict[str, float]  # vision_s, scoring_s, prefill_s, decode_s, ttft_s, total_s
    kv_cache_bytes: int  # bytes held by the cache right after prefill (keys, values, conv / recurrent states)
    keep_mask: Tensor  # [B, L] bool over the original prompt
    visual_mask: Tensor  # [B, L] bool: the prompt's visual tokens (engine.roles' definition)
    scores: Tensor | None = None  # [B, L] float32, -inf off visual tokens
    step_logits: list[Tensor] = field(default_factory=list)  # per step [B, V] float32 (when recorded)
    cache_state_bytes: int = 0  # the part of kv_cache_bytes that does not grow with length (conv / recurrent)
    kv_cache_slots: int = 0  # positions a static cache holds (a captured step's: a bucket); 0: dynamic cache
