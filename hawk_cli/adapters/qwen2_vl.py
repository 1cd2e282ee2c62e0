"""Qwen2-VL and Qwen2.5-VL (transformers 5.17+): one adapter, since both share the decoder and mRoPE seams.

Only public methods and submodules are used: `get_input_embeddings`, `get_image_features`,
`get_video_features`, `get_placeholder_mask`, `get_rope_index` (with `mm_token_type_ids`), the text model
`language_model`, its `layers[i].input_layernorm / self_attn.q_proj / k_proj`, and `lm_head`.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter, Prefill
from hawk_cli.adapters.qwen_vision import TowerPlans, encode_images_batched


class _StopAfterLayer(Exception):
    """Raised by a per-call forward hook to end a partial decoder pass early, carrying the hidden state."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden


class QwenVLAdapter(ModelAdapter):
    model_types = ("qwen2_5_vl", "qwen2_vl")

    def __init__(self, model, tokens) -> None:
        super().__init__(model, tokens)
        self.inner = model.model
        self.language_model = self.inner.language_model
        self.text_config = model.config.get_text_config()
        decoder_params = inspect.signature(type(self.language_model).forward).parameters
        # transformers 5.24 renamed `past_key_values` to `cache`; the old name warns there.
        self._cache_keyword = "cache" if "cache" in decoder_params else "past_key_values"
        self._rope_params = set(inspect.signature(self.inner.get_rope_index).parameters)
        # One attention call per window size instead of one per window: equal to stock, several times faster.
        self.fast_vision = True
        self.tower_plans = TowerPlans()

    @property
    def num_query_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def num_kv_heads(self) -> int:
        return int(self.text_config.num_key_value_heads)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    # --- prefill ---------------------------------------------------------------------------------------
    def _features(self, pixels: Tensor, grid: Tensor, stock) -> Tensor:
        """`grid` on the host: the batched tower plans windows and rotary ids there, without device syncs."""
        pixels = pixels.to(self.inner.visual.dtype)
        if self.fast_vision:
            return encode_images_batched(self.inner.visual, pixels, grid, self.tower_plans)  # videos: t > 1
        output = stock(pixels, grid.to(pixels.device))
        pooled = output.pooler_output if hasattr(output, "pooler_output") else output[0]
        return torch.cat(list(pooled)) if isinstance(pooled, (tuple, list)) else pooled

    def encode_vision(self, inputs) -> dict[str, Tensor]:
        features, host = {}, inputs.on_host()
        if inputs.pixel_values is not None:
            features["image"] = self._features(inputs.pixel_values, host.image_grid_thw,
                                               self.inner.get_image_features)
        if inputs.pixel_values_videos is not None:
            features["video"] = self._features(inputs.pixel_values_videos, host.video_grid_thw,
                                               self.inner.get_video_features)
        return features

    def build_prefill(self, inputs, features: dict[str, Tensor]) -> Prefill:
        input_ids = inputs.input_ids
        embeds = self.embed(input_ids)
        image, video = features.get("image"), features.get("video")
        image_mask, video_mask = self.inner.get_placeholder_mask(
            input_ids, inputs_embeds=embeds, image_features=image, video_features=video)
        if image is not None:
            embeds = embeds.masked_scatter(image_mask, image.to(embeds.dtype))
        if video is not None:
            embeds = embeds.masked_scatter(video_mask, video.to(embeds.dtype))
        # Rotary ids from the host copies: the stock routine loops over images with .item() calls, each a
        # device sync when run on the GPU; on the CPU the same integer arithmetic costs microseconds.
        host = inputs.on_host()
        rope_args = dict(image_grid_thw=host.image_grid_thw, video_grid_thw=host.video_grid_thw,
                         attention_mask=host.attention_mask)
        if "second_per_grid_ts" in self._rope_params:
            rope_args["second_per_grid_ts"] = host.second_per_grid_ts
        positions, _ = self.inner.get_rope_index(host.input_ids, host.mm_token_type_ids, **rope_args)
        positions = positions.to(input_ids.device, non_blocking=True)
        visual = ((input_ids == self.tokens.image) | (input_ids == self.tokens.video)) & (inputs.attention_mask == 1)
        return Prefill(input_ids=input_ids, inputs_embeds=embeds, position_ids=positions,
                       attention_mask=inputs.attention_mask, visual_mask=visual)

    def query_key(self, hidden: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        block = self.language_model.layers[layer]
        attention = block.self_attn
        normed = block.input_layernorm(hidden)
        batch, length, _ = normed.shape
        q = attention.q_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
        k = attention.k_proj(normed).view(batch, length, -1, attention.head_dim).transpose(1, 2)
        return q, k

    def head_output_projection(self, layer: int = 0) -> torch.nn.Module:
        return self.language_model.layers[layer].self_attn.o_proj

    def run_layers(self, embeds: Tensor, position_ids: Tensor, attention_mask: Tensor, n_layers: int) -> Tensor:
        if n_layers == 0:
            return embeds

        def stop(_module, _args, output):
            raise _StopAfterLayer(output[0] if isinstance(output, tuple) else output)

        handle = self.language_model.layers[n_layers - 1].register_forward_hook(stop)
        try:
            self.language_model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask,
                                use_cache=False)
        except _StopAfterLayer as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError("the decoder finished without reaching the requested layer")

    def masked_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        # Explicit (4, B, L) ids: row 0 text positions, rows 1-3 the stock mRoPE ids of the UNMASKED prompt;
        # generate then extends them by last + 1 itself, independently of hawk's decode bookkeeping.
        rope_args = dict(image_grid_thw=inputs.image_grid_thw, video_grid_thw=inputs.video_grid_thw,
                         attention_mask=inputs.attention_mask)
        if "second_per_grid_ts" in self._rope_params:
            rope_args["second_per_grid_ts"] = inputs.second_per_grid_ts
        positions, _ = self.inner.get_rope_index(inputs.input_ids, inputs.mm_token_type_ids, **rope_args)
        text_positions = (inputs.attention_mask.cumsum(-1) - 1).clamp(min=0)
        pixels = {name: getattr(inputs, name) for name in
                  ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
                  if getattr(inputs, name) is not None}
        if "second_per_grid_ts" in self._rope_params and inputs.second_per_grid_ts is not None:
            pixels["second_per_grid_ts"] = inputs.second_per_grid_ts
        output = self.model.generate(
            input_ids=inputs.input_ids, attention_mask=(inputs.attention_mask.bool() & keep).long(),
            position_ids=torch.cat([text_positions[None], positions]), mm_token_type_ids=inputs.mm_token_type_ids,
            max_new_tokens=max_new_tokens, do_sample=False, output_logits=True, return_dict_in_generate=True,
            pad_token_id=self.tokens.pad, eos_token_id=sorted(eos_ids), **pixels)
        return [step.float() for step in output.logits]

    # --- decoding --------------------------------------------------------------------------------------
    def decode(self, embeds: Tensor, position_ids: Tensor, attention_mask: Tensor, cache) -> Tensor:
        output = self.language_model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask,
                                     use_cache=True, **{self._cache_keyword: cache})
        return output.last_hidden_state

    def logits(self, hidden: Tensor) -> Tensor:
        return self.model.lm_head(hidden)

    def embed(self, token_ids: Tensor) -> Tensor:
        return self.inner.get_input_embeddings()(token_ids)

    def new_cache(self, kind: str, max_length: int):
        from transformers.cache_utils import DynamicCache, StaticCache

        if kind == "static":
            return StaticCache(config=self.model.config, max_cache_len=max_length)
        return DynamicCache(config=self.model.config)
