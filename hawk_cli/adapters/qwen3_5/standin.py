"""A tokenizer and image processor for a Qwen3.5 model built from a published config with no checkpoint
(`hawk bench --config qwen3.5-9b --random-weights`): prompts with the released layout and vision ids."""

from __future__ import annotations

from hawk_cli.errors import ModelError

# Qwen3.5's published preprocessor settings (those of Qwen3-VL): 16-pixel patches merged 2x2, mean and std 0.5,
# between 256 and 16384 merged patches per image, so a 1024x1024 image is 32x32 = 1024 visual tokens.
PATCH_SIZE, MERGE_SIZE = 16, 2
MIN_PIXELS, MAX_PIXELS = 65536, 16777216


def qwen3_5_tokenizer(config):
    """Qwen's special tokens at the ids the config names: the block of special tokens starts 9 below
    `<|vision_start|>` in every Qwen tokenizer (151643 in Qwen2-VL's, 248044 in Qwen3.5's)."""
    from hawk_cli.adapters.qwen2_vl.standin import qwen_id_tokenizer
    from hawk_cli.synthetic.tokenizer import QWEN_SPECIAL_TOKENS

    first = int(config.vision_start_token_id) - QWEN_SPECIAL_TOKENS.index("<|vision_start|>")
    tokenizer = qwen_id_tokenizer(first_special_id=first)
    expected = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for field, token in expected.items():
        if tokenizer.convert_tokens_to_ids(token) != int(getattr(config, field)):
            raise ModelError(
                f"the config's {field} {getattr(config, field)} is not where Qwen's tokenizer puts {token}",
                "Use a checkpoint folder with its own tokenizer",
            )
    return tokenizer


def qwen3_5_image_processor():
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
