"""Batched re-execution of the Qwen2-VL / Qwen2.5-VL vision towers.

Why: with any attention backend other than flash-attention, transformers 5.x runs the vision
tower's attention as one SDPA call per window (Qwen2.5-VL) or per image (Qwen2-VL) in a Python
loop. On a GPU that loop, not the arithmetic, dominates time-to-first-token, and visual-token
pruning happens after the tower, so it cannot help. This module re-runs the tower's *own*
submodules (patch embedding, rotary table, each block's norms/qkv/proj/MLP, merger, window
permutation) and replaces only the loop: segments (windows, or frames for full attention) of equal
length are stacked into one `[n_segments, n_heads, length, head_dim]` batch and attended by one
mask-free `scaled_dot_product_attention` call. There is one call per distinct segment length per
block (1 when all windows are full, a handful for edge windows or mixed image sizes), never one per
window. Padding to the longest segment with a key mask was tried first: exact in fp32, but on a GPU
it forces the masked (non-flash) kernel, which was slower than stock for mixed-size full-attention
batches and rounded differently from the stock path in bf16.

Qwen2.5-VL gains the most (one attention call per window before); Qwen2-VL's stock loop was per image
only, so it gains little. What is left is the tower's own work: matrix products and fp32 RMSNorm /
rotary elementwise ops. Timings: docs/benchmarks.md ("Batched vision tower").

Nothing in transformers is patched or modified; the stock path stays available and is the
reference the tests compare against.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

__all__ = ["AlignedMlps", "TowerPlans", "encode_images_batched", "encode_videos_batched", "is_windowed_tower"]

RopeFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class SegmentLayout:
    """How a packed `[S, ...]` sequence of contiguous segments is batched for attention.

    Segments are grouped by length; group `i` is `sizes[i]` tokens forming a `[n_i, lengths[i]]`
    batch. `gather` (`[S]`) lists the packed rows in group order and `scatter` is its inverse
    permutation; both are None when all segments have one length (the batch is then a plain
    reshape). Grouping instead of padding keeps every SDPA call mask-free, so the GPU runs its
    flash kernel, does no work on padding, and rounds as the stock per-segment calls do.
    """

    lengths: tuple[int, ...]
    sizes: tuple[int, ...]
    gather: Tensor | None
    scatter: Tensor | None


def build_layout(cu_seqlens: Tensor, device: torch.device) -> SegmentLayout:
    """Group the segments delimited by `cu_seqlens` by length (on the host, once per call, not per block)."""
    cu = cu_seqlens.to(device="cpu", dtype=torch.long)
    seg_len = cu[1:] - cu[:-1]
    lengths = sorted(set(seg_len.tolist()))
    if len(lengths) == 1:
        return SegmentLayout((lengths[0],), (int(cu[-1]),), None, None)
    token_len = torch.repeat_interleave(seg_len, seg_len)  # length of the segment each token is in
    gather = torch.cat([(token_len == n).nonzero().squeeze(1) for n in lengths])
    sizes = tuple(int(seg_len.eq(n).sum()) * n for n in lengths)
    return SegmentLayout(
        tuple(lengths), sizes, gather.to(device, non_blocking=True), torch.argsort(gather).to(device, non_blocking=True)
    )


def _grouped(x: Tensor, layout: SegmentLayout) -> tuple[Tensor, ...]:
    """`[S, H, D]` packed rows -> one `[n_i * length_i, H, D]` chunk per length group (views if ungrouped)."""
    if layout.gather is not None:
        x = x.index_select(0, layout.gather)
    return x.split(layout.sizes)


def segment_attention(q: Tensor, k: Tensor, v: Tensor, layout: SegmentLayout, scale: float) -> Tensor:
    """Attention within segments: `[S, H, D]` q/k/v -> `[S, H*D]`, one SDPA call per distinct length."""
    outs = []
    for n, *group in zip(layout.lengths, *(_grouped(t, layout) for t in (q, k, v)), strict=False):
        qs, ks, vs = (t.unflatten(0, (-1, n)).transpose(1, 2) for t in group)  # [B, H, n, D]
        out = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)
        outs.append(out.transpose(1, 2).flatten(0, 1).flatten(1))  # [B*n, H*D]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out if layout.scatter is None else out.index_select(0, layout.scatter)


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
    """The block's attention (its own qkv/proj weights and rotary function), batched over segments."""
    seq_len = x.shape[0]
    q, k, v = attn.qkv(x).reshape(seq_len, 3, attn.num_heads, -1).unbind(1)
    q, k = rope_fn(q, k, *rope)
    return attn.proj(segment_attention(q, k, v, layout, attn.scaling))


# Width the gated MLP's hidden size is padded to (a multiple of it) in `AlignedMlps`.
MLP_ALIGNMENT = 64


@dataclass(frozen=True)
class AlignedMlp:
    """A gated MLP (`down(act(gate(x)) * up(x))`) with its hidden size padded to a multiple of `MLP_ALIGNMENT`
    and gate and up joined into one matrix.

    Why: Qwen2.5-VL-3B/7B towers have an MLP hidden size of 3420, which is not a multiple of 8, so every
    product with it as a row length runs cuBLAS's slow 2-element-aligned kernels; the tower's MLP products
    dominate its time. The padded rows of gate and up (and their biases) are zero, so the padded hidden units are
    act(0) * 0 = 0, and the matching zero columns of down add nothing: the same arithmetic up to the order in
    which the products are summed. A copy of three matrices per block (the model's own stay as they are)."""

    gate_up_weight: Tensor  # [2P, D]: gate rows, then up rows, each padded to P
    gate_up_bias: Tensor | None
    down_weight: Tensor  # [D_out, P]
    down_bias: Tensor | None
    act: Callable[[Tensor], Tensor]

    @classmethod
    def of(cls, mlp: nn.Module, alignment: int = MLP_ALIGNMENT) -> AlignedMlp | None:
        """The padded copy of `mlp`, or None when it is no gated MLP or already aligned."""
        parts = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if any(not isinstance(part, nn.Linear) for part in parts) or not hasattr(mlp, "act_fn"):
            return None
        gate, up, down = parts
        hidden = gate.out_features
        padded = -(-hidden // alignment) * alignment
        if padded == hidden:
            return None
        extra = padded - hidden

        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else F.pad(t, (0, 0, 0, extra) if t.dim() == 2 else (0, extra))

        with torch.no_grad():
            weight = torch.cat([rows(gate.weight), rows(up.weight)])
            bias = None if gate.bias is None else torch.cat([rows(gate.bias), rows(up.bias)])
            down_weight = F.pad(down.weight, (0, extra)).contiguous()
            down_bias = None if down.bias is None else down.bias.detach().clone()
        return cls(weight, bias, down_weight, down_bias, mlp.act_fn)

    def __call__(self, x: Tensor) -> Tensor:
        gate, up = F.linear(x, self.gate_up_weight, self.gate_up_bias).chunk(2, dim=-1)
        return F.linear(self.act(gate) * up, self.down_weight, self.down_bias)


class AlignedMlps:
    """The aligned MLPs of a tower's blocks, made on first use and kept (the tower's weights are assumed fixed
    while the adapter lives). Blocks whose MLP needs no padding run their own module."""

    def __init__(self, alignment: int = MLP_ALIGNMENT) -> None:
        self.alignment = alignment
        self._mlps: dict[int, tuple[nn.Module, AlignedMlp | None]] = {}

    def get(self, block: nn.Module) -> Callable[[Tensor], Tensor]:
        kept = self._mlps.get(id(block))
        if kept is None or kept[0] is not block:
            kept = self._mlps[id(block)] = (block, AlignedMlp.of(block.mlp, self.alignment))
        return kept[1] or block.mlp

    @property
    def extra_bytes(self) -> int:
        """Memory the padded copies take."""
        return sum(
            t.numel() * t.element_size()
            for _, mlp in self._mlps.values()
            if mlp is not None
            for t in (mlp.gate_up_weight, mlp.gate_up_bias, mlp.down_weight, mlp.down_bias)
            if t is not None
        )


def run_block(
    block: nn.Module,
    hidden: Tensor,
    rope: tuple[Tensor, Tensor],
    layout: SegmentLayout,
    rope_fn: RopeFn,
    mlps: AlignedMlps | None = None,
) -> Tensor:
    """One vision block: pre-norm attention and pre-norm MLP, each with its residual, as in stock."""
    hidden = hidden + batched_attention(block.attn, block.norm1(hidden), rope, layout, rope_fn)
    mlp = block.mlp if mlps is None else mlps.get(block)
    return hidden + mlp(block.norm2(hidden))


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


@dataclass(frozen=True)
class TowerPlan:
    """Everything the tower needs besides pixels for one list of grids, already on the device: the rotary
    cos/sin tables (in window order for a windowed tower), the segment layouts and, for a windowed tower, the
    window permutation of merge-units and its inverse."""

    cos: Tensor
    sin: Tensor
    full_layout: SegmentLayout
    window_index: Tensor | None = None
    restore: Tensor | None = None
    window_layout: SegmentLayout | None = None


def plan_tower(visual: nn.Module, grid_thw: Tensor, device: torch.device) -> TowerPlan:
    """Host work (the stock helpers on CPU grids: no per-image device syncs), moved to `device` once, and the
    tower's own rotary tables for those positions (a function of positions alone; the module reads only the
    device from its first argument)."""
    grid_thw = grid_thw.cpu()
    positions = get_vision_position_ids(grid_thw, visual.spatial_merge_size).to(device, non_blocking=True)
    cos, sin = visual.rotary_pos_emb(torch.empty(0, device=device), positions)
    full_layout = build_layout(get_vision_cu_seqlens(grid_thw), device)
    if not is_windowed_tower(visual):
        return TowerPlan(cos, sin, full_layout)
    window_index, cu_window = _window_plan(visual, grid_thw, device)
    cos, sin = (_permute(visual, t, window_index) for t in (cos, sin))
    return TowerPlan(cos, sin, full_layout, window_index, torch.argsort(window_index), build_layout(cu_window, device))


class TowerPlans:
    """The plans of the last few grid lists: a stream of same-sized images repeats one plan batch after batch."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._plans: OrderedDict[tuple, TowerPlan] = OrderedDict()

    def get(self, visual: nn.Module, grid_thw: Tensor, device: torch.device) -> TowerPlan:
        key = (str(device), tuple(map(tuple, grid_thw.tolist())))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = plan_tower(visual, grid_thw, device)
            while len(self._plans) > self.size:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return plan


def encode_images_batched(
    visual: nn.Module,
    pixel_values: Tensor,
    grid_thw: Tensor,
    plans: TowerPlans | None = None,
    mlps: AlignedMlps | None = None,
) -> Tensor:
    """Merged vision features of all images (or videos: rows of `grid_thw` with t > 1), concatenated in order.

    Equals `torch.cat(model.model.get_image_features(pixel_values, grid_thw).pooler_output)` for a
    Qwen2-VL or Qwen2.5-VL tower `visual` (`model.model.visual`); bitwise equal in fp32 and bf16 in
    the CPU tests and on CUDA (7B-sized random towers, SDPA backend). Device and dtype follow
    `visual`'s weights; `grid_thw` may live on any device (the CPU saves a copy). `plans` reuses the
    plans of recently seen grid lists; `mlps` runs the blocks' MLPs from padded copies (`AlignedMlp`: equal up to
    the summation order, so bitwise equality then holds only without it). Autograd-safe (no in-place ops).
    """
    hidden = visual.patch_embed(pixel_values.to(visual.patch_embed.proj.weight.dtype))
    device = hidden.device
    plan = plans.get(visual, grid_thw, device) if plans is not None else plan_tower(visual, grid_thw, device)
    rope = (plan.cos, plan.sin)
    rope_fn = rope_function(visual.blocks[0].attn)
    if plan.window_index is None:
        for block in visual.blocks:
            hidden = run_block(block, hidden, rope, plan.full_layout, rope_fn, mlps)
        return visual.merger(hidden)
    hidden = _permute(visual, hidden, plan.window_index)
    full_blocks = set(visual.fullatt_block_indexes)
    for i, block in enumerate(visual.blocks):
        layout = plan.full_layout if i in full_blocks else plan.window_layout
        hidden = run_block(block, hidden, rope, layout, rope_fn, mlps)
    return visual.merger(hidden)[plan.restore]


def encode_videos_batched(
    visual: nn.Module,
    pixel_values_videos: Tensor,
    video_grid_thw: Tensor,
    plans: TowerPlans | None = None,
    mlps: AlignedMlps | None = None,
) -> Tensor:
    """Video counterpart of `encode_images_batched` (the towers treat videos as t-frame grids; same code)."""
    return encode_images_batched(visual, pixel_values_videos, video_grid_thw, plans, mlps)
