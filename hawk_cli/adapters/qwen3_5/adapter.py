"""Qwen3.5 and Qwen3.5-MoE (transformers 5.17+): a hybrid decoder of Gated DeltaNet and gated attention layers.

What differs from Qwen2-VL, and where it is handled:
* Token mixers (`config.layer_types`): three of every four layers are Gated DeltaNet (linear attention with a
  causal convolution and a decaying recurrent state), every fourth is softmax attention with a gated output.
  HAWK scores at the first full-attention layer by default, after a pass of the layers below it over the whole
  prompt (`default_scoring_layer`); asking for a DeltaNet layer scores with that layer's own q/k (mixers.py).
* Exactness: masking a token is not dropping it here, so the reference is the compaction oracle (oracle.py).
* Vision: the stock tower (learned position embeddings, no windows: Qwen2-VL's batched tower does not apply);
  no DeepStack. Video: text timestamps per frame group (prompts.py), rotary grids split per frame group.
* Cache: transformers' hybrid caches (keys / values on attention layers, conv and recurrent states on DeltaNet
  layers); dynamic and static both work, with the same layout as the stock `generate`.
Special-token ids come from the config and the tokenizer, as for every family.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter, RopeIndexCache
from hawk_cli.adapters.qwen3_5.mixers import attention_query_key, deltanet_qkv
from hawk_cli.adapters.qwen3_5.oracle import compaction_generate
from hawk_cli.adapters.qwen3_5.prompts import Qwen35Prompts
from hawk_cli.errors import UsageError

FULL_ATTENTION, LINEAR_ATTENTION = "full_attention", "linear_attention"


class FrameGroupRopeIndex:
    """Prompt rotary ids one row layout at a time (`RopeIndexCache`), with each video grid split into one grid
    per frame group first: Qwen3.5's `get_rope_index` does that split itself, and each frame group is its own
    run of video tokens in the prompt (timestamps between them)."""

    def __init__(self, get_rope_index) -> None:
        self.rows = RopeIndexCache(get_rope_index, takes_second_per_grid=False)

    def __call__(self, host) -> Tensor:
        grids = host.video_grid_thw
        if grids is not None:
            grids = grids.repeat_interleave(grids[:, 0], dim=0)
            grids[:, 0] = 1
        return self.rows(replace(host, video_grid_thw=grids, second_per_grid_ts=None))


class Qwen35Adapter(QwenVLAdapter):
    model_types = ("qwen3_5", "qwen3_5_moe")
    masking_equals_dropping = False

    def __init__(self, model, tokens) -> None:
        super().__init__(model, tokens)
        self.fast_vision = False  # Qwen2-VL's batched tower does not fit this tower
        self.layer_types = tuple(self.text_config.layer_types)
        self.rope_index = FrameGroupRopeIndex(self.inner.get_rope_index)
        self.default_scoring_layer = self.full_attention_layers()[0]

    def full_attention_layers(self) -> list[int]:
        return [index for index, kind in enumerate(self.layer_types) if kind == FULL_ATTENTION]

    def _kind(self, layer: int) -> str:
        if not 0 <= layer < len(self.layer_types):
            raise UsageError(
                f"layer {layer} does not exist: this model has {len(self.layer_types)} decoder layers",
                f"Choose {{layer}} in [0, {len(self.layer_types) - 1}]",
            )
        return self.layer_types[layer]

    def query_heads(self, layer: int) -> int:
        if self._kind(layer) == LINEAR_ATTENTION:
            return int(self.text_config.linear_num_key_heads)
        return self.num_query_heads

    @classmethod
    def standin_processors(cls, config) -> tuple:
        from hawk_cli.adapters.qwen3_5.standin import qwen3_5_image_processor, qwen3_5_tokenizer

        return qwen3_5_tokenizer(config), qwen3_5_image_processor()

    def prompts(self, tokenizer, image_processor) -> Qwen35Prompts:
        return Qwen35Prompts(tokenizer, image_processor)

    # --- scoring -------------------------------------------------------------------------------------------
    def query_key(self, hidden: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """Full-attention layer: q after `q_norm` (the query half of the gated projection) and k after `k_norm`,
        before RoPE. Gated DeltaNet layer: its q and k after the causal convolution and the L2 norm (no softmax
        and no rotary there: the vectors the delta rule multiplies). See mixers.py."""
        block = self.language_model.layers[layer]
        if self._kind(layer) == LINEAR_ATTENTION:
            q, k, _ = deltanet_qkv(block, hidden)
            return q, k
        return attention_query_key(block, hidden)

    def run_layers(self, embeds: Tensor, position_ids: Tensor, attention_mask: Tensor, n_layers: int) -> Tensor:
        """As for Qwen2-VL, with padded rows zeroed as the stock DeltaNet layers zero them (their convolution
        would otherwise read padding into the first tokens of a left-padded row)."""
        hidden = super().run_layers(embeds, position_ids, attention_mask, n_layers)
        return hidden * attention_mask[..., None].to(hidden.dtype)

    def head_output_projection(self, layer: int = 0) -> torch.nn.Module:
        """The gated attention's `o_proj`: its input is `attention * sigmoid(gate)`, both per head in head order,
        so zeroing head h's slice removes head h. DeltaNet layers have no such heads."""
        if self._kind(layer) == LINEAR_ATTENTION:
            first, *others = self.full_attention_layers()
            also = f"; also {', '.join(str(index) for index in others[:3])}, ..." if others else ""
            raise UsageError(
                f"layer {layer} of this model is a Gated DeltaNet (linear attention) layer: it has no "
                "attention heads to ablate",
                f"Use {{layer=}}{first} (a full-attention layer{also})",
            )
        return self.language_model.layers[layer].self_attn.o_proj

    # --- exactness -----------------------------------------------------------------------------------------
    def compaction_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        return compaction_generate(self.model, inputs, keep, max_new_tokens, self.tokens.pad, eos_ids)
