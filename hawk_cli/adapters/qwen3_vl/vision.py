"""The Qwen3-VL vision tower's outputs, through the model's own `get_image_features` / `get_video_features`.

Why the stock tower and not Qwen2-VL's batched re-execution (adapters/qwen2_vl/vision.py): this tower adds
learned position embeddings (bilinearly resampled per grid) and has no windows, so the Qwen2 fast path gives
silently wrong features here; and its only Python loop is one attention call per image or frame, which the
batched path would not remove. The stock call also returns the DeepStack features (one merger per level of
`vision_config.deepstack_visual_indexes`) that the decoder adds after its first layers.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _joined(parts) -> Tensor:
    """One [n, D] tensor from a per-image tuple (transformers 5.25 splits every output per image) or from a
    tensor already whole (5.17 leaves the DeepStack levels unsplit)."""
    return torch.cat(list(parts)) if isinstance(parts, (tuple, list)) else parts


def tower_features(stock, pixels: Tensor, grid: Tensor) -> tuple[Tensor, Tensor | None]:
    """(merged features [n, D], DeepStack features [n, levels, D] or None without levels) of the images or
    videos in `pixels` with grids `grid`, rows in placeholder order. `stock`: the model's own
    `get_image_features` or `get_video_features`."""
    output = stock(pixels, grid, return_dict=True)
    features = _joined(output.pooler_output)
    levels = [_joined(level) for level in (output.deepstack_features or [])]
    return features, (torch.stack(levels, dim=1) if levels else None)
