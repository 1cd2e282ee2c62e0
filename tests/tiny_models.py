"""Tiny random Qwen2-VL / Qwen2.5-VL / Qwen3-VL / Qwen3.5 (dense and MoE) models built from configs in code (no
downloads), with their inputs.

initializer_range 0.1 (not 0.02) keeps logits peaky, so a positional or head-mapping bug moves them visibly.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5MoeConfig,
    Qwen3_5MoeForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
)

from hawk_cli.synthetic.tokenizer import build_word_tokenizer

TEXT = dict(
    vocab_size=68,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    initializer_range=0.1,
    max_position_embeddings=4096,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
# The contract tests also run on a GPU: HAWK_TEST_DEVICE=cuda HAWK_TEST_DTYPE=bfloat16 python -m pytest -m contract
DEVICE = torch.device(os.environ.get("HAWK_TEST_DEVICE", "cpu"))
DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}[os.environ.get("HAWK_TEST_DTYPE", "float32")]
# fp32 on CPU is exact to rounding; CUDA kernels differ more; bf16 logits carry ~3 significant digits.
TOLERANCE = 1e-5 if (DEVICE.type == "cpu" and torch.float32 == DTYPE) else (2e-4 if torch.float32 == DTYPE else 1e-1)

IDS = dict(image_token_id=12, video_token_id=13, vision_start_token_id=9, vision_end_token_id=10)
# Qwen3.5: layers 0-2 Gated DeltaNet, 3 gated attention, 4 DeltaNet again (the published 3:1 pattern, cut short);
# partial rotary over a quarter of the 32-wide heads (8 dims: 4 frequencies in sections [2, 1, 1]).
QWEN3_5_TEXT = dict(
    TEXT,
    num_hidden_layers=5,
    head_dim=32,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    linear_conv_kernel_dim=4,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [2, 1, 1],
        "mrope_interleaved": True,
        "partial_rotary_factor": 0.25,
    },
)
QWEN3_5_MOE_TEXT = dict(
    QWEN3_5_TEXT, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32
)
QWEN3_5_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=64,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    num_position_embeddings=16,
    initializer_range=0.1,
)
FAMILIES = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen3_5": Qwen3_5ForConditionalGeneration,
    "qwen3_5_moe": Qwen3_5MoeForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen3_vl_moe": Qwen3VLMoeForConditionalGeneration,
}

# Qwen3-VL: explicit head_dim with per-head q/k norms, interleaved mRoPE (sections over head_dim / 2 = 8), and
# DeepStack levels from both vision blocks, added after decoder layers 0 and 1 (layer 2 sees none).
QWEN3_TEXT = dict(
    TEXT,
    head_dim=16,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [4, 2, 2],
        "mrope_interleaved": True,
    },
)
QWEN3_MOE_TEXT = dict(QWEN3_TEXT, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
QWEN3_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=64,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    num_position_embeddings=64,
    deepstack_visual_indexes=[0, 1],
    initializer_range=0.1,
)
QWEN3_FAMILIES = ("qwen3_vl", "qwen3_vl_moe")


def tiny_config(family: str = "qwen2_5_vl", attn: str = "sdpa"):
    if family == "qwen3_vl":
        config = Qwen3VLConfig(text_config=QWEN3_TEXT, vision_config=QWEN3_VISION, **IDS)
    elif family == "qwen3_vl_moe":
        config = Qwen3VLMoeConfig(text_config=QWEN3_MOE_TEXT, vision_config=QWEN3_VISION, **IDS)
    elif family == "qwen2_5_vl":
        vision = dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=[1],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=0.1,
        )
        config = Qwen2_5_VLConfig(text_config=TEXT, vision_config=vision, **IDS)
    elif family == "qwen3_5":
        config = Qwen3_5Config(text_config=QWEN3_5_TEXT, vision_config=QWEN3_5_VISION, **IDS)
    elif family == "qwen3_5_moe":
        config = Qwen3_5MoeConfig(text_config=QWEN3_5_MOE_TEXT, vision_config=QWEN3_5_VISION, **IDS)
    else:
        vision = dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            mlp_ratio=2,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=0.1,
        )
        config = Qwen2VLConfig(text_config=TEXT, vision_config=vision, **IDS)
    config._attn_implementation = attn
    config.initializer_range = 0.1
    return config


def tiny_model(family: str = "qwen2_5_vl", attn: str = "sdpa", seed: int = 0, dtype=None, device=None):
    """A seeded tiny model on the test device and dtype (CPU float32 unless the environment says otherwise)."""
    torch.manual_seed(seed)
    config = tiny_config(family, attn)
    model = FAMILIES[family]._from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model.to(device or DEVICE, dtype or DTYPE).eval()


def tiny_tokenizer():
    return build_word_tokenizer()


def tiny_image_processor(max_pixels: int = 224 * 224, family: str = "qwen2_5_vl"):
    if family.startswith("qwen3"):  # 16-pixel patches, mean and std 0.5, as published for Qwen3.5 / Qwen3-VL
        return Qwen2VLImageProcessorPil(
            size={"shortest_edge": 64 * 64, "longest_edge": max_pixels},
            patch_size=16,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
        )
    return Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": max_pixels})


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def save_tiny_checkpoint(folder, max_pixels: int = 224 * 224):
    """Save a tiny CPU float32 model with its tokenizer and image processor, as `from_pretrained` expects."""
    tiny_model(device="cpu", dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor(max_pixels).save_pretrained(folder)
    return folder
