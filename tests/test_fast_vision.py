"""The batched vision path must reproduce stock `get_image_features` / `get_video_features` exactly.

Tiny random Qwen2.5-VL (windowed + full-attention blocks) and Qwen2-VL (full attention) models are
built from configs in code (no downloads). Images of different sizes give windows of several
lengths (padding + key mask), equal-size images give equal windows (plain reshape, no mask); a
negative control shows the comparison fails when windows or images are allowed to see each other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLModel,
    Qwen2VLConfig,
    Qwen2VLImageProcessorPil,
    Qwen2VLModel,
)

from hawk_cli.adapters.qwen2_vl import vision as qwen_vision
from hawk_cli.adapters.qwen2_vl.vision import encode_images_batched, encode_videos_batched, is_windowed_tower

FP32_TOL = 1e-5
BF16_REL_TOL = 2e-2
MIXED_SIZES = [(224, 224), (336, 168), (112, 280)]  # (width, height): 16x16, 12x24, 20x8 patch grids

TEXT = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
)


def tiny_qwen25() -> Qwen2_5_VLModel:
    """Windowed tower: 4 blocks, block 2 full attention, 112-px windows (4x4 merge units, many partial)."""
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=32,
        window_size=112,
        fullatt_block_indexes=[2],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=0.1,
    )
    config = Qwen2_5_VLConfig(text_config=TEXT, vision_config=vision, initializer_range=0.1)
    return _seeded(Qwen2_5_VLModel, config)


def tiny_qwen2() -> Qwen2VLModel:
    """Full-attention tower (per image / per frame), 3 blocks."""
    vision = dict(
        depth=3,
        embed_dim=32,
        hidden_size=32,
        mlp_ratio=2,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=0.1,
    )
    config = Qwen2VLConfig(text_config=TEXT, vision_config=vision, initializer_range=0.1)
    return _seeded(Qwen2VLModel, config)


def _seeded(cls: type, config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():  # post_init leaves norm weights at 1 and biases at 0: randomize them too
        for name, p in model.visual.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name or "ln_q" in name else 0.0))
    return model


def make_images(sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    proc = Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 448 * 448})
    out = proc(images=images, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def stock_images(model: torch.nn.Module, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return torch.cat(model.get_image_features(pixels, grid).pooler_output)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs error relative to the reference's max magnitude (robust to near-zero entries)."""
    return max_diff(a, b) / b.float().abs().max().item()


MODELS = {"qwen2_5_vl": tiny_qwen25, "qwen2_vl": tiny_qwen2}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return MODELS[request.param]()


@pytest.mark.parametrize("sizes", [MIXED_SIZES, [(224, 224), (224, 224)]], ids=["mixed", "equal"])
def test_fp32_matches_stock(model: torch.nn.Module, sizes: list[tuple[int, int]]) -> None:
    pixels, grid = make_images(sizes)
    with torch.no_grad():
        ref = stock_images(model, pixels, grid)
        fast = encode_images_batched(model.visual, pixels, grid)
    diff = max_diff(fast, ref)
    name = f"{model.config.model_type} fp32 {len(sizes)} imgs"
    print(f"\n[{name}] max abs diff {diff:.3e} (ref max {ref.abs().max():.2f})")
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert diff <= FP32_TOL


def test_bf16_matches_stock(model: torch.nn.Module) -> None:
    pixels, grid = make_images(MIXED_SIZES)
    bf16 = MODELS[model.config.model_type]().to(torch.bfloat16)
    with torch.no_grad():
        ref = stock_images(bf16, pixels, grid)
        fast = encode_images_batched(bf16.visual, pixels, grid)
    err = rel_err(fast, ref)
    print(f"\n[{model.config.model_type} bf16] max abs diff {max_diff(fast, ref):.3e}, relative {err:.3e}")
    assert fast.dtype == torch.bfloat16
    assert err <= BF16_REL_TOL


def test_video_frames_match_stock(model: torch.nn.Module) -> None:
    """t > 1 grids: attention is per frame (and per window within a frame), same code path."""
    grid = torch.tensor([[2, 8, 12], [3, 4, 8]])
    torch.manual_seed(1)
    pixels = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    with torch.no_grad():
        ref = torch.cat(model.get_video_features(pixels, grid).pooler_output)
        fast = encode_videos_batched(model.visual, pixels, grid)
    diff = max_diff(fast, ref)
    print(f"\n[{model.config.model_type} video fp32] max abs diff {diff:.3e}")
    assert diff <= FP32_TOL


def test_negative_control_cross_segment_attention_is_detected(
    model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letting windows (Qwen2.5-VL) or images (Qwen2-VL) attend to each other must break the match."""
    pixels, grid = make_images(MIXED_SIZES)
    if is_windowed_tower(model.visual):
        monkeypatch.setattr(qwen_vision, "is_windowed_tower", lambda visual: False)
    else:
        monkeypatch.setattr(qwen_vision, "get_vision_cu_seqlens", lambda g: torch.tensor([0, int(g.prod(-1).sum())]))
    with torch.no_grad():
        ref = stock_images(model, pixels, grid)
        wrong = encode_images_batched(model.visual, pixels, grid)
    diff = max_diff(wrong, ref)
    print(f"\n[{model.config.model_type} negative control] max abs diff {diff:.3e}")
    assert diff > 1000 * FP32_TOL


def test_tower_kind_detection() -> None:
    assert is_windowed_tower(tiny_qwen25().visual)
    assert not is_windowed_tower(tiny_qwen2().visual)


def test_segment_attention_matches_per_segment_loop() -> None:
    """Grouping by length (unsorted, repeated, singleton lengths) equals one SDPA call per segment."""
    torch.manual_seed(2)
    seg_lens = [3, 5, 3, 1, 5, 2, 3]
    cu = torch.tensor([0, *np.cumsum(seg_lens).tolist()], dtype=torch.int32)
    q, k, v = torch.randn(3, int(cu[-1]), 2, 4).unbind(0)
    layout = qwen_vision.build_layout(cu, q.device)
    assert sorted(layout.lengths) == [1, 2, 3, 5] and layout.gather is not None
    fast = qwen_vision.segment_attention(q, k, v, layout, scale=0.5)
    ref = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=0.5)
            .transpose(0, 1)
            .flatten(1)
            for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=False)
        ]
    )
    assert max_diff(fast, ref) <= FP32_TOL
    uniform = qwen_vision.build_layout(torch.tensor([0, 4, 8, 12]), q.device)
    assert uniform.gather is None and uniform.lengths == (4,)


def test_cached_tower_plans_give_the_uncached_features_and_follow_the_grids(model: torch.nn.Module) -> None:
    from hawk_cli.adapters.qwen2_vl.vision import TowerPlans

    plans = TowerPlans(size=2)
    batches = [make_images(MIXED_SIZES), make_images([(224, 224), (224, 224)]), make_images(MIXED_SIZES)]
    with torch.no_grad():
        for pixels, grid in batches:
            assert torch.equal(
                encode_images_batched(model.visual, pixels, grid, plans),
                encode_images_batched(model.visual, pixels, grid),
            )
    assert len(plans._plans) == 2  # the third batch reused the first one's plan
    pixels, grid = make_images([(224, 224), (224, 224)])
    wrong = plans.get(model.visual, make_images(MIXED_SIZES)[1], pixels.device)
    right = plans.get(model.visual, grid, pixels.device)
    assert wrong.cos.shape != right.cos.shape  # negative control: a plan is tied to its grids


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_REL_TOL)])
def test_mlps_padded_to_an_aligned_width_match_stock(dtype: torch.dtype, tolerance: float) -> None:
    """The tiny tower's MLP width (64) padded to 96 (alignment 48), as 3420 is padded to 3456 on a GPU: the padded
    hidden units are zero and add nothing, so features equal stock up to summation order."""
    model = tiny_qwen25().to(dtype)
    pixels, grid = make_images(MIXED_SIZES)
    mlps = qwen_vision.AlignedMlps(alignment=48)
    with torch.no_grad():
        ref = stock_images(model, pixels, grid)
        padded = encode_images_batched(model.visual, pixels, grid, mlps=mlps)
    kept = mlps.get(model.visual.blocks[0])
    assert isinstance(kept, qwen_vision.AlignedMlp)
    assert kept.gate_up_weight.shape == (192, 32) and kept.down_weight.shape == (32, 96)
    assert mlps.extra_bytes == 4 * dtype.itemsize * (192 * 32 + 192 + 32 * 96 + 32)  # 4 blocks
    error = max_diff(padded, ref) if dtype == torch.float32 else rel_err(padded, ref)
    assert error <= tolerance


def test_padding_that_is_not_zero_is_detected() -> None:
    """Negative control: padded hidden units that are not zero (a bias of 1 on the padded gate and up rows) change
    the features far beyond the tolerance."""
    model = tiny_qwen25()
    pixels, grid = make_images(MIXED_SIZES)
    mlps = qwen_vision.AlignedMlps(alignment=48)
    for block in model.visual.blocks:
        mlp = mlps.get(block)
        mlp.gate_up_bias[64:96] = 1.0
        mlp.gate_up_bias[160:] = 1.0
        mlp.down_weight[:, 64:] = 0.5
    with torch.no_grad():
        assert (
            max_diff(encode_images_batched(model.visual, pixels, grid, mlps=mlps), stock_images(model, pixels, grid))
            > 1e-2
        )


def test_towers_without_a_misaligned_gated_mlp_keep_their_own() -> None:
    aligned, plain = tiny_qwen25(), tiny_qwen2()
    mlps = qwen_vision.AlignedMlps()  # 64 is already a multiple of 64; Qwen2-VL's MLP has no gate
    assert mlps.get(aligned.visual.blocks[0]) is aligned.visual.blocks[0].mlp
    assert mlps.get(plain.visual.blocks[0]) is plain.visual.blocks[0].mlp and mlps.extra_bytes == 0
