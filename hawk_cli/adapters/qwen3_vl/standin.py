"""A tokenizer and image processor for a Qwen3-VL model built from a published config with no checkpoint
(`hawk bench --config qwen3-vl-8b --random-weights`): prompts then have the released layout and ids."""

from __future__ import annotations

from hawk_cli.errors import ModelError

# The published Qwen3-VL preprocessor_config.json: 32x32-pixel merged patches, a 1024x1024 image is 32x32 =
# 1024 tokens; images between 256^2 and 4096^2 pixels; mean and std 0.5.
PUBLISHED_MIN_PIXELS, PUBLISHED_MAX_PIXELS = 65536, 16777216
PUBLISHED_MEAN = PUBLISHED_STD = (0.5, 0.5, 0.5)


def standin_tokenizer(config):
    """Qwen's special tokens at the ids the config names (its vision ids must sit where Qwen puts them)."""
    from hawk_cli.adapters.qwen2_vl.standin import qwen_id_tokenizer
    from hawk_cli.synthetic.tokenizer import QWEN_SPECIAL_TOKENS, QWEN_VL_CHAT_TEMPLATE

    first = int(config.image_token_id) - QWEN_SPECIAL_TOKENS.index("<|image_pad|>")
    named = {
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    for key, token in named.items():
        if int(getattr(config, key)) != first + QWEN_SPECIAL_TOKENS.index(token):
            raise ModelError(
                f"the config's {key} is not where Qwen's tokenizer puts {token}",
                "Give the checkpoint folder (with its tokenizer) instead of a bare config",
            )
    tokenizer = qwen_id_tokenizer(first)
    # Qwen3-VL's template writes no default system turn (Qwen2-VL's does).
    default_system = (
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    )
    if default_system not in QWEN_VL_CHAT_TEMPLATE:
        raise RuntimeError("the Qwen-VL chat template changed: update the Qwen3-VL stand-in")
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE.replace(default_system, "")
    return tokenizer


def standin_image_processor(config):
    """The PIL image processor with the published settings and the config's patch and merge sizes."""
    from transformers import Qwen2VLImageProcessorPil

    vision = config.vision_config
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": PUBLISHED_MIN_PIXELS, "longest_edge": PUBLISHED_MAX_PIXELS},
        patch_size=int(vision.patch_size),
        merge_size=int(vision.spatial_merge_size),
        temporal_patch_size=int(vision.temporal_patch_size),
        image_mean=list(PUBLISHED_MEAN),
        image_std=list(PUBLISHED_STD),
    )
