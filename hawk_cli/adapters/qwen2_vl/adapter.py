"""Qwen2-VL and Qwen2.5-VL (transformers 5.17+): one adapter, since both share the decoder and mRoPE seams.

Only public methods and submodules are used: `get_input_embeddings`, `get_image_features`,
`get_video_features`, `get_placeholder_mask`, `get_rope_index` (with `mm_token_type_ids`), the text model
`language_model`, its `layers[i].input_layernorm / self_attn.q_proj / k_proj`, and `lm_head`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from itertools import groupby

import torch
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter, Prefill, VisualExtras
from hawk_cli.adapters.qwen2_vl.prompts import QwenPrompts
from hawk_cli.adapters.qwen2_vl.vision import AlignedMlps, TowerPlans, encode_images_batched
from hawk_cli.io.placement import module_device


class _StopAfterLayer(Exception):
    """Raised by a per-call forward hook to end a partial decoder pass early, carrying the hidden state."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden


class RopeIndexCache:
    """Rotary ids of prompt rows, by layout: the model's own `get_rope_index` run on one row at a time and
    remembered by everything it reads of that row (its runs of text / image / video tokens, its grids and
    video timings), so a stream of prompts with repeated layouts costs a dict lookup per row.

    Why: the stock routine loops over rows and images in Python with a dozen small tensor ops each; at batch 8
    that is milliseconds of host time per batch, in a model small enough to be bound by host time. Rows are
    independent in the stock routine (each reads only its own tokens and, in order, its own grids), so
    per-row results assembled at the rows' valid positions (zeros on padding, as stock) equal the batched call
    (tests/test_rope_cache.py, transformers 5.17 and 5.24). Holds the last `size` layouts (3 x tokens ids
    each: 128 rows of 1,300 tokens are 4 MB).
    """

    def __init__(self, get_rope_index, takes_second_per_grid: bool, size: int = 128) -> None:
        self.get_rope_index, self.takes_second_per_grid, self.size = get_rope_index, takes_second_per_grid, size
        self._rows: OrderedDict[tuple, Tensor] = OrderedDict()

    def __call__(self, host) -> Tensor:
        """[3, B, L] long positions of a left-padded batch whose index tensors are on the CPU."""
        batch, length = host.input_ids.shape
        positions = torch.zeros(3, batch, length, dtype=host.input_ids.dtype)
        images = iter([] if host.image_grid_thw is None else host.image_grid_thw.tolist())
        videos = iter(self.video_grids(host))
        timings = iter([] if host.second_per_grid_ts is None else host.second_per_grid_ts.tolist())
        for row in range(batch):
            valid = host.attention_mask[row].bool()
            types = host.mm_token_type_ids[row][valid]
            runs = tuple((kind, len(list(group))) for kind, group in groupby(types.tolist()))
            image_grids = tuple(tuple(next(images)) for kind, _ in runs if kind == 1)
            video_grids = tuple(tuple(next(videos)) for kind, _ in runs if kind == 2)
            video_timings = tuple(next(timings) for _ in video_grids) if host.second_per_grid_ts is not None else None
            key = (runs, image_grids, video_grids, video_timings)
            ids = self._rows.get(key)
            if ids is None:
                ids = self._rows[key] = self._one_row(
                    host.input_ids[row][valid], types, image_grids, video_grids, video_timings
                )
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
            self._rows.move_to_end(key)
            positions[:, row, valid] = ids
        return positions

    def video_grids(self, host) -> list:
        """The video grids in the order the prompt's video-token runs consume them (one run per video here)."""
        return [] if host.video_grid_thw is None else host.video_grid_thw.tolist()

    def _one_row(self, input_ids: Tensor, types: Tensor, image_grids, video_grids, video_timings) -> Tensor:
        args = dict(
            image_grid_thw=torch.tensor(image_grids, dtype=torch.long) if image_grids else None,
            video_grid_thw=torch.tensor(video_grids, dtype=torch.long) if video_grids else None,
        )
        if self.takes_second_per_grid:
            args["second_per_grid_ts"] = torch.tensor(video_timings) if video_timings else None
        positions, _ = self.get_rope_index(input_ids[None], types[None], **args)
        return positions[:, 0]


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
        # On a GPU the tower's MLPs run from copies padded to an aligned width (3B/7B towers: 3420 -> 3456).
        self.tower_mlps = AlignedMlps()
        self.rope_index = RopeIndexCache(self.inner.get_rope_index, "second_per_grid_ts" in self._rope_params)

    @property
    def num_query_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @classmethod
    def standin_processors(cls, config) -> tuple:
        from hawk_cli.adapters.qwen2_vl.standin import qwen2_vl_image_processor, qwen_id_tokenizer

        return qwen_id_tokenizer(), qwen2_vl_image_processor()

    def prompts(self, tokenizer, image_processor) -> QwenPrompts:
        return QwenPrompts(tokenizer, image_processor)

    def stock_generate_inputs(self, inputs) -> dict:
        return {
            name: getattr(inputs, name)
            for name in (
                "input_ids",
                "attention_mask",
                "mm_token_type_ids",
                "pixel_values",
                "image_grid_thw",
                "pixel_values_videos",
                "video_grid_thw",
                "second_per_grid_ts",
            )
            if getattr(inputs, name) is not None
            and (name != "second_per_grid_ts" or "second_per_grid_ts" in self._rope_params)
        }

    def stock_vision(self, inputs) -> None:
        if inputs.pixel_values is not None:
            pixels = inputs.pixel_values.to(self._tower_device, self.inner.visual.dtype)
            self.inner.get_image_features(pixels, inputs.image_grid_thw.to(self._tower_device))

    @property
    def _tower_device(self) -> torch.device:
        """Where the vision tower takes its pixels (its patch embedding's device)."""
        return module_device(self.inner.visual.patch_embed)

    def _tower_on_one_device(self) -> bool:
        """The batched tower calls the tower's submodules directly, so it runs only when they share a device;
        a tower a device map split is run stock, block by block through accelerate's hooks."""
        if not self.dispatched:
            return True
        visual = self.inner.visual
        parts = [visual.patch_embed, *visual.blocks, visual.merger]
        return len({module_device(part) for part in parts}) == 1

    # --- prefill ---------------------------------------------------------------------------------------
    def _features(self, pixels: Tensor, grid: Tensor, stock) -> Tensor:
        """`grid` on the host: the batched tower plans windows and rotary ids there, without device syncs."""
        pixels = pixels.to(self._tower_device, self.inner.visual.dtype)
        if self.fast_vision and self._tower_on_one_device():
            visual, plans = self.inner.visual, self.tower_plans
            mlps = self.tower_mlps if pixels.is_cuda else None  # CPUs have no misaligned-kernel penalty

            def tower(pixels: Tensor) -> Tensor:
                return encode_images_batched(visual, pixels, grid, plans, mlps)  # videos: t > 1

            if self.vision_graphs is not None:  # the grids are all the tower reads from the host
                return self.vision_graphs(("tower", tuple(map(tuple, grid.tolist()))), tower, pixels)
            return tower(pixels)
        output = stock(pixels, grid.to(pixels.device))
        pooled = output.pooler_output if hasattr(output, "pooler_output") else output[0]
        return torch.cat(list(pooled)) if isinstance(pooled, (tuple, list)) else pooled

    def encode_vision(self, inputs) -> dict[str, Tensor]:
        features, host = {}, inputs.on_host()
        if inputs.pixel_values is not None:
            features["image"] = self._features(inputs.pixel_values, host.image_grid_thw, self.inner.get_image_features)
        if inputs.pixel_values_videos is not None:
            features["video"] = self._features(
                inputs.pixel_values_videos, host.video_grid_thw, self.inner.get_video_features
            )
        return features

    def build_prefill(self, inputs, features: dict[str, Tensor]) -> Prefill:
        input_ids = inputs.input_ids
        embeds = self.embed(input_ids)
        image, video = features.get("image"), features.get("video")
        image_mask, video_mask = self.inner.get_placeholder_mask(
            input_ids, inputs_embeds=embeds, image_features=image, video_features=video
        )
        if image is not None:
            embeds = embeds.masked_scatter(image_mask, image.to(embeds.device, embeds.dtype))
        if video is not None:
            embeds = embeds.masked_scatter(video_mask, video.to(embeds.device, embeds.dtype))
        # Rotary ids from the host copies (the stock routine loops over images with .item() calls, each a
        # device sync when run on the GPU), one row layout at a time, remembered (RopeIndexCache).
        positions = self.rope_index(inputs.on_host()).to(input_ids.device, non_blocking=True)
        return Prefill(
            input_ids=input_ids, inputs_embeds=embeds, position_ids=positions, attention_mask=inputs.attention_mask
        )

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

    def run_layers(
        self,
        embeds: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor,
        n_layers: int,
        extras: VisualExtras | None = None,
    ) -> Tensor:
        if n_layers == 0:
            return embeds

        def stop(_module, _args, output):
            raise _StopAfterLayer(output[0] if isinstance(output, tuple) else output)

        handle = self.language_model.layers[n_layers - 1].register_forward_hook(stop)
        try:
            self.language_model(
                inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
            )
        except _StopAfterLayer as stopped:
            return stopped.hidden
        finally:
            handle.remove()
        raise RuntimeError("the decoder finished without reaching the requested layer")

    def masked_generate(self, inputs, keep: Tensor, max_new_tokens: int, eos_ids: set[int]) -> list[Tensor]:
        # Explicit (4, B, L) ids: row 0 text positions, rows 1-3 the stock mRoPE ids of the UNMASKED prompt;
        # generate then extends them by last + 1 itself, independently of hawk's decode bookkeeping.
        rope_args = dict(
            image_grid_thw=inputs.image_grid_thw,
            video_grid_thw=inputs.video_grid_thw,
            attention_mask=inputs.attention_mask,
        )
        if "second_per_grid_ts" in self._rope_params:
            rope_args["second_per_grid_ts"] = inputs.second_per_grid_ts
        positions, _ = self.inner.get_rope_index(inputs.input_ids, inputs.mm_token_type_ids, **rope_args)
        text_positions = (inputs.attention_mask.cumsum(-1) - 1).clamp(min=0)
        pixels = {
            name: getattr(inputs, name)
            for name in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
            if getattr(inputs, name) is not None
        }
        if "second_per_grid_ts" in self._rope_params and inputs.second_per_grid_ts is not None:
            pixels["second_per_grid_ts"] = inputs.second_per_grid_ts
        output = self.model.generate(
            input_ids=inputs.input_ids,
            attention_mask=(inputs.attention_mask.bool() & keep).long(),
            position_ids=torch.cat([text_positions[None], positions]),
            mm_token_type_ids=inputs.mm_token_type_ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=self.tokens.pad,
            eos_token_id=sorted(eos_ids),
            **pixels,
        )
        return [step.float() for step in output.logits]

    # --- decoding --------------------------------------------------------------------------------------
    def decode(
        self,
        embeds: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor | None,
        cache,
        extras: VisualExtras | None = None,
    ) -> Tensor:
        output = self.language_model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=True,
            **{self._cache_keyword: cache},
        )
        return output.last_hidden_state

    def logits(self, hidden: Tensor) -> Tensor:
        """On the input device, where the decode state lives (the head may sit on the last device)."""
        if self.dispatched:
            return self.model.lm_head(hidden.to(module_device(self.model.lm_head))).to(self.input_device)
        return self.model.lm_head(hidden)

    def embed(self, token_ids: Tensor) -> Tensor:
        return self.inner.get_input_embeddings()(token_ids)

    def new_cache(self, kind: str, max_length: int):
        from transformers.cache_utils import DynamicCache, StaticCache

        if kind == "static":
            return StaticCache(config=self.model.config, max_cache_len=max_length)
        return DynamicCache(config=self.model.config)
