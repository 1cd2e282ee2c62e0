"""Model-family adapters, looked up by `config.model_type`. A new family is one folder and one line here."""

from __future__ import annotations

from hawk_cli.adapters.base import ModelAdapter, Prefill, SpecialTokens
from hawk_cli.adapters.qwen2_vl import QwenVLAdapter
from hawk_cli.adapters.qwen3_5 import Qwen35Adapter
from hawk_cli.adapters.qwen3_vl import Qwen3VLAdapter
from hawk_cli.errors import ModelError

ADAPTERS: dict[str, type[ModelAdapter]] = {
    model_type: adapter
    for adapter in (QwenVLAdapter, Qwen3VLAdapter, Qwen35Adapter)
    for model_type in adapter.model_types
}


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS)


def special_tokens(config, tokenizer) -> SpecialTokens:
    """Role-giving ids from the model config (vision ids) and the tokenizer (chat-turn ids)."""

    def from_tokenizer(token: str) -> int:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ModelError(f"the tokenizer has no {token} token", "Use the tokenizer that ships with the model")
        return int(token_id)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else from_tokenizer("<|endoftext|>")
    return SpecialTokens(
        image=int(config.image_token_id),
        video=int(config.video_token_id),
        vision_start=int(config.vision_start_token_id),
        vision_end=int(config.vision_end_token_id),
        im_start=from_tokenizer("<|im_start|>"),
        im_end=from_tokenizer("<|im_end|>"),
        pad=int(pad),
    )


def adapter_class(model_type: str) -> type[ModelAdapter]:
    """The adapter class registered for `model_type`, or a one-line error naming the supported families."""
    if model_type not in ADAPTERS:
        raise ModelError(
            f"model type '{model_type}' is not supported", f"Supported: {', '.join(supported_model_types())}"
        )
    return ADAPTERS[model_type]


def adapter_for(model, tokenizer) -> ModelAdapter:
    """The adapter for `model`, or a one-line error naming the supported families."""
    return adapter_class(getattr(model.config, "model_type", "?"))(model, special_tokens(model.config, tokenizer))


__all__ = [
    "ADAPTERS",
    "ModelAdapter",
    "Prefill",
    "SpecialTokens",
    "adapter_class",
    "adapter_for",
    "supported_model_types",
]
