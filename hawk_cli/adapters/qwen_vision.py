"""Batched re-execution of the Qwen2-VL / Qwen2.5-VL vision towers.

Why: with any attention backend other than flash-attention, transformers 5.x runs the vision
tower's attention as one SDPA call per window (Qwen2.5-VL) or per image (Qwen2-VL) in a Python
loop. On a GPU that loop, not the arithmetic, dominates time-to-first-token, and visual-token
pruning happens after the tower, so it cannot help. This module re-runs the tower's *own*
submodules (patch embedding, rotary table, each block's norms/qkv/proj/MLP, merger, window
permutation) and replaces only the loop by ONE `scaled_dot_product_attention` call per block:
segments (windows or frames) are laid into a `[n_segments, max_len]` batch, padded keys masked out.
When every segment has the same length (the usual case: all windows of one image size are full),
the batch is a zero-copy view and no mask is passed, so the GPU can use its flash kernel.

Nothing in transformers is patched or modified; the stock path stays available and is the
reference the tests compare against.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

__all__ = ["encode_images_batched", "encode_videos_batched", "is_windowed_tower"]

RopeFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class SegmentLayout:
    """How a packed `[S, ...]` sequence of contiguous segments maps to a padded `[B, L, ...]` batch.

    `gather` (`[B*L]`, padding rows point at token 0) and `scatter` (`[S]`, the padded row of each
    token) are None when all segments have equal length: then the batch is a plain reshape.
    `key_mask` (`[B, 1, 1, L]`, True = attend) is None in that case too.
    """

    n_segments: int
    max_len: int
    gather: Tensor | None
    scatter: Tensor | None
    key_mask: Tensor | None


def build_layout(cu_seqlens: Tensor, device: torch.device) -> SegmentLayout:
    """Build the padded layout of the segments delimited by `cu_seqlens` (one host sync, once per call)."""
    cu = cu_seqlens.to(device=device, dtype=torch.long)
    lengths = cu[1:] - cu[:-1]
    n_seg = int(lengths.numel())
    max_len = int(lengths.max())
    if int(lengths.min()) == max_len:
        return SegmentLayout(n_seg, max_len, None, None, None)
    offsets = torch.arange(max_len, device=device)
    valid = offsets[None, :] < lengths[:, None]
    gather = torch.where(valid, cu[:-1, None] + offsets[None, :], torch.zeros_like(offsets)).reshape(-1)
    scatter = valid.reshape(-1).nonzero().squeeze(1)
    return SegmentLayout(n_seg, max_len, gather, scatter, valid[:, None, None, :])


def to_batch(x: Tensor, layout: SegmentLayout) -> Tensor:
    """`[S, *rest]` packed tokens -> `[B, L, *rest]` padded segments."""
    if layout.gather is not None:
        x = x.index_select(0, layout.gather)
    return x.reshape(layout.n_segments, layout.max_len, *x.shape[1:])


def from_batch(x: Tensor, layout: SegmentLayout) -> Tensor:
    """`[B, L, *rest]` padded segments -> `[S, prod(rest)]` packed tokens (padding rows dropped)."""
    x = x.reshape(layout.n_segments * layout.max_len, -1)
    return x if layout.scatter is None else x.index_select(0, layout.scatter)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _fallback_rope(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Same arithmetic as transformers' `apply_rotary_pos_emb_vision` (fp32 rotation, cast back)."""
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    q_out = qf * cos + _rotate_half(qf) * sin
    k_out = kf * cos + _rotate_half(kf) * sin
    return q_out.to(q.dtype), k_out.to(k.dtype)


def rope_function(attn: nn.Module) -> RopeFn:
    """The rotary function of the module that defines the tower's attention class (reuse, don't copy)."""
    module = sys.modules.get(type(attn).__module__)
    return getattr(module, "apply_rotary_pos_emb_vision", _fallback_rope)


def batched_attention(
    attn: nn.Module, x: Tensor, rope: tuple[Tensor, Tensor], layout: SegmentLayout, rope_fn: RopeFn
) -> Tensor:
    """The block's attention (its own qkv/proj weights) with one SDPA call over all segments."""
    seq_len = x.shape[0]
    q, k, v = attn.qkv(x).reshape(seq_len, 3, attn.num_heads, -1).unbind(1)
    q, k = rope_fn(q, k, *rope)
    qkv = to_batch(torch.stack((q, k, v), dim=1), layout)  # [B, L, 3, H, D]
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, L, D]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask, scale=attn.scaling)
    out = from_batch(out.transpose(1, 2), layout)  # [S, H*D]
    return attn.proj(out)


def run_block(
    block: nn.Module, hidden: Tensor, rope: tuple[Tensor, Tensor], layout: SegmentLayout, rope_fn: RopeFn
) -> Tensor:
    """One vision block: pre-norm attention and pre-norm MLP, each with its residual, as in stock."""
    hidden = hidden + batched_attention(block.attn, block.norm1(hidden), rope, layout, rope_fn)
    return hidden + block.mlp(block.norm2(hidden))


def is_windowed_tower(visual: nn.Module) -> bool:
    """Qwen2.5-VL towers carry `window_size`/`fullatt_block_indexes`; Qwen2-VL towers attend per frame."""
    return getattr(visual, "window_size", None) is not None and hasattr(visual, "fullatt_block_indexes")


def _permute(visual: nn.Module, x: Tensor, window_index: Tensor) -> Tensor:
    """Reorder merge-units of `x` into window order, exactly as the tower's own helper does."""
    unit = visual.spatial_merge_unit
    return x.reshape(x.shape[0] // unit, unit, -1)[window_index].reshape(x.shape[0], -1)


def _window_plan(visual: nn.Module, grid_thw: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Window permutation of merge-units and window boundaries (in permuted token order)."""
    window_index, cu_window = get_vision_window_index(
        grid_thw,
        spatial_merge_size=visual.spatial_merge_size,
        window_size=visual.window_size,
        patch_size=visual.patch_size,
    )
    return window_index.to(device), cu_window


def encode_images_batched(visual: nn.Module, pixel_values: Tensor, grid_thw: Tensor) -> Tensor:
    """Merged vision features of all images (or videos: rows of `grid_thw` with t > 1), concatenated in order.

    Equals `torch.cat(model.model.get_image_features(pixel_values, grid_thw).pooler_output)` for a
    Qwen2-VL or Qwen2.5-VL tower `visual` (`model.model.visual`), up to floating-point reordering
    inside attention. Device and dtype follow `visual`'s weights; `grid_thw` may live on any device.
    """
    hidden = visual.patch_embed(pixel_values.to(visual.patch_embed.proj.weight.dtype))
    device = hidden.device
    grid_thw = grid_thw.to(device)
    cos, sin = visual.rotary_pos_emb(hidden, get_vision_position_ids(grid_thw, visual.spatial_merge_size))
    full_layout = build_layout(get_vision_cu_seqlens(grid_thw), device)
    rope_fn = rope_function(visual.blocks[0].attn)
    if not is_windowed_tower(visual):
        for block in visual.blocks:
            hidden = run_block(block, hidden, (cos, sin), full_layout, rope_fn)
        return visual.merger(hidden)
    window_index, cu_window = _window_plan(visual, grid_thw, device)
    hidden, cos, sin = (_permute(visual, t, window_index) for t in (hidden, cos, sin))
    window_layout = build_layout(cu_window, device)
    full_blocks = set(visual.fullatt_block_indexes)
    for i, block in enumerate(visual.blocks):
        layout = full_layout if i in full_blocks else window_layout
        hidden = run_block(block, hidden, (cos, sin), layout, rope_fn)
    return visual.merger(hidden)[torch.argsort(window_index)]


def encode_videos_batched(visual: nn.Module, pixel_values_videos: Tensor, video_grid_thw: Tensor) -> Tensor:
    """Video counterpart of `encode_images_batched` (the towers treat videos as t-frame grids; same code)."""
    return encode_images_batched(visual, pixel_values_videos, video_grid_thw)
