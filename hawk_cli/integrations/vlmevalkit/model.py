"""HAWK-pruned answers behind VLMEvalKit's model interface (what `vlmeval.inference.infer_data` calls).

VLMEvalKit calls `set_dump_image`, `use_custom_prompt(dataset)`, `build_prompt(line, dataset)` (only when custom
prompts are used) and `generate(message, dataset)`, where a message is a list of `{"type": "image" | "text",
"value": path or text}` in prompt order. This class needs nothing from VLMEvalKit itself, so it can be built and
tested without it; it follows VLMEvalKit's `Qwen2.5-VL-7B-Instruct` entry (the model the paper evaluated): the
dataset's own prompts (`use_custom_prompt=False`), images in the order given, greedy answers (VLMEvalKit samples
with top_k=1, the same token), up to 2048 new tokens, and OCRBench's larger minimum image size.
"""

from __future__ import annotations

import os
from typing import Any

from hawk_cli.engine.library import Generation, HawkModel, load
from hawk_cli.errors import InputError

OCRBENCH_MIN_PIXELS = 10 * 10 * 28 * 28  # VLMEvalKit's Qwen2-VL wrapper raises the minimum for OCRBench


class HawkVLM:
    """A VLMEvalKit model answering with the library model (visual tokens pruned before the language model)."""

    INTERLEAVE = True
    VIDEO_LLM = False
    is_api = False
    allowed_types = ("text", "image")

    def __init__(
        self,
        pretrained: str = "builtin",
        ratio: float = 0.8,
        scorer: str | None = None,
        weights: str | None = None,
        layer: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        attn: str = "sdpa",
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_new_tokens: int = 2048,
        system_prompt: str | None = None,
        model: HawkModel | None = None,
        **unused: Any,
    ) -> None:
        if device == "auto" and os.environ.get("LOCAL_RANK") is not None:  # torchrun: one model per GPU
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        self.ratio, self.scorer, self.weights, self.layer = ratio, scorer, weights, layer
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.max_new_tokens, self.system_prompt = max_new_tokens, system_prompt
        self.model = model or load(
            pretrained, device=device, dtype=dtype, attn=attn, min_pixels=min_pixels, max_pixels=max_pixels
        )
        self._by_bounds: dict[tuple, HawkModel] = {(min_pixels, max_pixels): self.model}
        self.dump_image_func = None
        self.last: Generation | None = None
        self.visual_tokens = self.visual_tokens_kept = 0  # over every answer so far

    # --- VLMEvalKit's model interface ------------------------------------------------------------------------
    def set_dump_image(self, dump_image_func) -> None:
        self.dump_image_func = dump_image_func

    def dump_image(self, line, dataset):
        return self.dump_image_func(line)

    def use_custom_prompt(self, dataset: str | None) -> bool:
        return False

    def build_prompt(self, line, dataset: str | None = None):
        raise NotImplementedError("HawkVLM uses each dataset's own prompt (use_custom_prompt is False)")

    def generate(self, message, dataset: str | None = None) -> str:
        return self.generate_inner(self.preproc_content(message), dataset)

    def generate_inner(self, message: list[dict], dataset: str | None = None) -> str:
        content = []
        for item in message:
            if item["type"] == "image":
                content.append({"type": "image", "image": item["value"]})
            elif item["type"] == "text":
                content.append({"type": "text", "text": item["value"]})
            else:
                raise InputError(
                    f"HawkVLM reads text and images, got a {item['type']!r} item", "Run it on image datasets"
                )
        chat = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": content}
        ]
        output = self._model_for(dataset).generate(
            messages=chat,
            ratio=self.ratio,
            max_new_tokens=self.max_new_tokens,
            scorer=self.scorer,
            weights=self.weights,
            layer=self.layer,
        )
        self.last = output
        self.visual_tokens += output.stats.visual_tokens
        self.visual_tokens_kept += output.stats.visual_tokens_kept
        return output.text

    def preproc_content(self, inputs) -> list[dict]:
        """VLMEvalKit's accepted message shapes as a list of `{"type", "value"}` items (a bare string is text;
        a bare path to an existing image file is an image)."""
        if isinstance(inputs, str):
            return [{"type": "text", "value": inputs}]
        if isinstance(inputs, dict):
            inputs = [inputs]
        items = []
        for item in inputs:
            if isinstance(item, dict) and "type" in item and "value" in item:
                items.append(dict(item))
            elif isinstance(item, str):
                is_image = os.path.isfile(item) and item.lower().endswith(
                    (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
                )
                items.append({"type": "image" if is_image else "text", "value": item})
            else:
                raise InputError(
                    f"cannot read a message item {item!r}", "Give {'type': 'image' or 'text', 'value': ...} items"
                )
        return items

    # --- helpers -------------------------------------------------------------------------------------------------
    def _model_for(self, dataset: str | None) -> HawkModel:
        bounds = (self.min_pixels, self.max_pixels)
        if dataset == "OCRBench":
            bounds = (OCRBENCH_MIN_PIXELS, self.max_pixels)
        if bounds not in self._by_bounds:
            loaded = self.model.session.loaded
            self._by_bounds[bounds] = load(
                loaded.model,
                tokenizer=loaded.tokenizer,
                image_processor=loaded.image_processor,
                min_pixels=bounds[0],
                max_pixels=bounds[1],
            )
        return self._by_bounds[bounds]
