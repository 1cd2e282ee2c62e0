"""The compaction oracle of Qwen3.5: the model's own `generate` on the kept tokens alone.

Why not the masked oracle: three of every four decoder layers are Gated DeltaNet, whose short causal convolution
reads the previous tokens and whose recurrent state decays at every token, masked or not (a masked token is zeroed,
but the state still steps through it). Masking a token out is therefore not dropping it, and the exact reference
for a pruned prompt is the same model run on the pruned prompt itself: the stock embeddings of the kept tokens,
left-padded per row, at their ORIGINAL multimodal position ids (so every kept token sits where it sat), decoded by
`generate`, which extends the ids by last + 1 as it does for any prompt.

Independent of hawk's engine: stock vision (`get_image_features` / `get_video_features`), stock embeddings and
placeholder scatter, the stock batched `get_rope_index`, and a plain per-row boolean gather.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _features(output) -> Tensor:
    pooled = output.pooler_output if hasattr(output, "pooler_output") else output[0]
    return torch.cat(list(pooled)) if isinstance(pooled, (tuple, list)) else pooled


def stock_prompt(model, inputs) -> tuple[Tensor, Tensor]:
    """(embeddings [B, L, D], rotary ids [3, B, L]) of the whole prompt, as the stock forward builds them."""
    inner, config = model.model, model.config
    embeds = inner.get_input_embeddings()(inputs.input_ids)
    for pixels, grid, token, encode in (
        (inputs.pixel_values, inputs.image_grid_thw, config.image_token_id, inner.get_image_features),
        (inputs.pixel_values_videos, inputs.video_grid_thw, config.video_token_id, inner.get_video_features),
    ):
        if pixels is not None:
            features = _features(encode(pixels, grid)).to(embeds.dtype)
            slots = (inputs.input_ids == token).unsqueeze(-1).expand_as(embeds)
            embeds = embeds.masked_scatter(slots, features)
    positions, _ = inner.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw,
        video_grid_thw=inputs.video_grid_thw,
        attention_mask=inputs.attention_mask,
    )
    return embeds, positions


def compacted(embeds: Tensor, positions: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The kept columns of each row, right-aligned (left padding): embeddings, [4, B, L'] ids with the text
    row (0) numbering the compacted tokens, and the mask."""
    rows = [row.nonzero().flatten() for row in keep]
    width = max(len(columns) for columns in rows)
    batch = len(rows)
    out_embeds = embeds.new_zeros(batch, width, embeds.shape[-1])
    out_positions = positions.new_zeros(3, batch, width)
    mask = torch.zeros(batch, width, dtype=torch.long, device=embeds.device)
    for row, columns in enumerate(rows):
        start = width - len(columns)
        out_embeds[row, start:] = embeds[row, columns]
        out_positions[:, row, start:] = positions[:, row, columns]
        mask[row, start:] = 1
    text = (mask.cumsum(-1) - 1).clamp(min=0)
    return out_embeds, torch.cat([text[None], out_positions]), mask


def compaction_generate(
    model, inputs, keep: Tensor, max_new_tokens: int, pad_id: int, eos_ids: set[int]
) -> list[Tensor]:
    """Greedy per-step logits [B, V] (float32) of the stock model on the kept tokens of each row."""
    embeds, positions = stock_prompt(model, inputs)
    prompt, position_ids, mask = compacted(embeds, positions, keep.bool() & inputs.attention_mask.bool())
    output = model.generate(
        inputs_embeds=prompt,
        attention_mask=mask,
        position_ids=position_ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids),
    )
    return [step.float() for step in output.logits]
