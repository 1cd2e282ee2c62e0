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


def grid_blocks(grids: tuple[tuple[int, int, int], ...], merge_size: int) -> tuple[int, ...]:
    """Visual tokens of each image (then video) of a row from its (t, h, w) patch grids: what the prompt's budget
    is spread over. A video is one block even where the family interleaves its frames with text timestamps."""
    return tuple(t * h * w // (merge_size * merge_size) for t, h, w in grids)


def visual_blocks(visual: Tensor) -> tuple[int, ...]:
    """Lengths of the runs of True in a [L] bool row of visual-token flags, for batches whose requests are unknown
    (a caller's own processor output): each image is one run, as is a video without timestamps (a video with
    text timestamps between its frames, as Qwen3-VL writes it, is one run per temporal patch)."""
    lengths: list[int] = []
    previous = None
    for index in visual.nonzero().flatten().tolist():
        if previous is None or index != previous + 1:
            lengths.append(0)
        lengths[-1] += 1
        previous = index
    return tuple(lengths)


def kept_per_block(visual_keep: Tensor | None, blocks: tuple[int, ...]) -> tuple[int, ...]:
    """Visual tokens kept in each block (`visual_keep`: the row's keep flags over its visual tokens, prompt order;
    None: nothing was pruned): how the prompt's one budget was spent over its images and video."""
    if visual_keep is None:
        return blocks
    flags = visual_keep.tolist()
    counts, start = [], 0
    for size in blocks:
        counts.append(int(sum(flags[start : start + size])))
        start += size
    return tuple(counts)
