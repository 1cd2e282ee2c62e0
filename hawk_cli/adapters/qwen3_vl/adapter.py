"""Qwen3-VL and Qwen3-VL-MoE (transformers 5.17+): the Qwen2-VL adapter with this family's four differences.

1. Pre-RoPE q/k: the attention normalises each head (`q_norm`, `k_norm`, RMSNorm over the head dimension)
   between the projection and the rotary embedding, so HAWK's "pre-RoPE" q/k here are taken after the norms.
2. DeepStack: the vision tower also returns features of intermediate blocks (one tensor per level), which the
   text model adds to the hidden states at the visual positions after decoder layers 0, 1, ... (prefill only).
   They travel as `Prefill.extras` ("deepstack", [n_visual, levels, D]) and are gathered with the same keep
   set as the tokens, so a dropped token's features vanish from every layer; the decoder receives them
   through its public `visual_pos_masks` / `deepstack_visual_embeds` arguments.
3. Video: time is written in the prompt (video.py); `get_rope_index` consumes one grid per temporal patch and
   takes no `second_per_grid_ts`, so the rotary-id cache splits the video grids the same way.
4. Vision: the stock tower (vision.py); the Qwen2 batched tower does not apply here.
MoE: the router is untouched (tokens are dropped before the decoder, each kept token is routed as stock).
"""

from __future__ import annotations

from torch import Tensor

from hawk_cli.adapters.base import Prefill, VisualExtras
from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter, RopeIndexCache, _StopAfterLayer
from hawk_cli.adapters.qwen3_vl.prompts import Qwen3Prompts
from hawk_cli.adapters.qwen3_vl.vision import tower_features

DEEPSTACK = "deepstack"


class TemporalPatchRopeIndexCache(RopeIndexCache):
    """Qwen3's `get_rope_index` gives every temporal patch of a video its own grid (t = 1): the prompt has one
    run of video tokens per patch, between text timestamps, and each run consumes one of these grids."""

    def video_grids(self, host) -> list:
        return [[1, height, width] for t, height, width in super().video_grids(host) for _ in range(t)]


class Qwen3VLAdapter(QwenVLAdapter):
    model_types = ("qwen3_vl", "qwen3_vl_moe")

    def __init__(self, model, tokens) -> None:
        super().__init__(model, tokens)
        self.fast_vision = False  # the stock tower: see vision.py
        self.rope_index = TemporalPatchRopeIndexCache(self.inner.get_rope_index, takes_second_per_grid=False)

    @classmethod
    def standin_processors(cls, config) -> tuple:
        from hawk_cli.adapters.qwen3_vl.standin import standin_image_processor, standin_tokenizer

        return standin_tokenizer(config), standin_image_processor(config)

    @classmethod
    def load_image_processor(cls, location: str):
        """The auto class maps `qwen3_vl` to Qwen2-VL's PIL processor but knows no `qwen3_vl_moe`: settings that
        name no processor class load into that same class."""
        try:
            return super().load_image_processor(location)
        except ValueError:
            from transformers import Qwen2VLImageProcessorPil

            return Qwen2VLImageProcessorPil.from_pretrained(location)

    def prompts(self, tokenizer, image_processor) -> Qwen3Prompts:
        return Qwen3Prompts(tokenizer, image_processor)

    # --- prefill ---------------------------------------------------------------------------------------
    def encode_vision(self, inputs) -> dict[str, Tensor]:
        """ "image" / "video" features [n, D] and their DeepStack levels "image_deepstack" / "video_deepstack"
        [n, levels, D], rows in placeholder order."""
        features = {}
        kinds = (
            ("image", inputs.pixel_values, inputs.image_grid_thw, self.inner.get_image_features),
            ("video", inputs.pixel_values_videos, inputs.video_grid_thw, self.inner.get_video_features),
        )
        for kind, pixels, grid, stock in kinds:
            if pixels is None:
                continue
            merged, deepstack = tower_features(stock, pixels.to(self._tower_device, self.inner.visual.dtype), grid)
            features[kind] = merged
            if deepstack is not None:
                features[f"{kind}_{DEEPSTACK}"] = deepstack
        return features

    def build_prefill(self, inputs, features: dict[str, Tensor]) -> Prefill:
        prefill = super().build_prefill(inputs, features)
        prefill.extras = self._deepstack_extras(prefill, features)
        return prefill

    def _deepstack_extras(self, prefill: Prefill, features: dict[str, Tensor]) -> VisualExtras | None:
        """The DeepStack levels of every visual token, row-major over the batch like `hidden[visual_pos_masks]`
        (images and videos interleaved in prompt order, as the stock model joins them)."""
        valid = prefill.attention_mask.bool()
        image = (prefill.input_ids == self.tokens.image) & valid
        video = (prefill.input_ids == self.tokens.video) & valid
        parts = [
            (mask, features[f"{kind}_{DEEPSTACK}"])
            for kind, mask in (("image", image), ("video", video))
            if f"{kind}_{DEEPSTACK}" in features
        ]
        if not parts:
            return None
        visual = image | video
        dtype, device = prefill.inputs_embeds.dtype, prefill.inputs_embeds.device  # the tower's may differ
        if len(parts) == 1:
            joint = parts[0][1].to(device, dtype)
        else:
            reference = parts[0][1]
            count = sum(values.shape[0] for _, values in parts)  # no device sync: one row per visual token
            joint = reference.new_zeros(count, *reference.shape[1:], dtype=dtype, device=device)
            for mask, values in parts:
                joint[mask[visual]] = values.to(device, dtype)
        return VisualExtras(mask=visual, values={DEEPSTACK: joint})

    def query_key(self, hidden: Tensor, layer: int = 0) -> tuple[Tensor, Tensor]:
        """q/k after the per-head `q_norm` / `k_norm` and before the rotary embedding."""
        block = self.language_model.layers[layer]
        attention = block.self_attn
        normed = block.input_layernorm(hidden)
        batch, length, _ = normed.shape
        q = attention.q_norm(attention.q_proj(normed).view(batch, length, -1, attention.head_dim)).transpose(1, 2)
        k = attention.k_norm(attention.k_proj(normed).view(batch, length, -1, attention.head_dim)).transpose(1, 2)
        return q, k

    def run_layers(
        self,
        embeds: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor,
        n_layers: int,
        extras: VisualExtras | None = None,
    ) -> Tensor:
        """The input of decoder layer `n_layers` (the final norm's past the last layer), DeepStack levels of the
        layers below already added: the text model adds them after a layer returns, so a hook on the layer's
        output would miss them."""
        if n_layers == 0:
            return embeds
        layers = self.language_model.layers
        target = layers[n_layers] if n_layers < len(layers) else self.language_model.norm

        def stop(_module, args, kwargs):
            raise _StopAfterLayer(args[0] if args else kwargs["hidden_states"])

        handle = target.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.language_model(
                inputs_embeds=embeds,
                position_ids=position_ids,
                attention_mask=attention_mask,
                use_cache=False,
                **self._deepstack_arguments(extras),
            )
        except _StopAfterLayer as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError("the decoder finished without reaching the requested layer")

    # --- decoding --------------------------------------------------------------------------------------
    @staticmethod
    def _deepstack_arguments(extras: VisualExtras | None) -> dict:
        """The text model's public DeepStack arguments: the visual positions of the batch it runs on and one
        [n_visual, D] tensor per level, rows in the order of `hidden[visual_pos_masks]`."""
        if extras is None or DEEPSTACK not in extras.values:
            return {}
        return {"visual_pos_masks": extras.mask, "deepstack_visual_embeds": list(extras.values[DEEPSTACK].unbind(1))}

    def decode(
        self, embeds: Tensor, position_ids: Tensor, attention_mask: Tensor, cache, extras: VisualExtras | None = None
    ) -> Tensor:
        output = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=True,
            **{self._cache_keyword: cache},
            **self._deepstack_arguments(extras),
        )
        return output.last_hidden_state

    def decoder_weight_bytes(self) -> int:
        """As the base counts, except that a mixture-of-experts layer reads only the experts its router picks:
        experts count at `num_experts_per_tok / num_experts` of their bytes (the batch-1 floor; larger batches
        may touch more experts)."""
        total = super().decoder_weight_bytes()
        experts = getattr(self.text_config, "num_experts", None)
        chosen = getattr(self.text_config, "num_experts_per_tok", None)
        if not experts or not chosen:
            return total
        expert_bytes = sum(
            parameter.numel() * parameter.element_size()
            for name, module in self.decoder_module().named_modules()
            if name.endswith("mlp.experts")
            for parameter in module.parameters()
        )
        return total - expert_bytes + expert_bytes * int(chosen) // int(experts)


__all__ = ["Qwen3VLAdapter", "TemporalPatchRopeIndexCache"]
