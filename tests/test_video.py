"""Video input built without torchvision: the stock layout, time positions, frame reading, and the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import DEVICE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.adapters.qwen2_vl.video import build_video
from hawk_cli.errors import InputError
from hawk_cli.io.frames import read_frames
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer
from hawk_cli.tasks.oracle import check_against_oracle

EOS = {2}


def stock_layout(frames, processor) -> torch.Tensor:
    """The stock Qwen2VLVideoProcessor's normalise + pad + view/permute (transformers 5.17-5.24), frames already
    at a size `smart_resize` keeps, written out independently of hawk's builder."""
    mean, std = np.array(processor.image_mean, np.float32), np.array(processor.image_std, np.float32)
    arrays = [((np.asarray(f, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for f in frames]
    videos = torch.from_numpy(np.stack(arrays))[None]  # [1, T, C, H, W]
    tp, patch, merge = 2, 14, 2
    if pad := -videos.shape[1] % tp:
        videos = torch.cat((videos, videos[:, -1:].expand(-1, pad, -1, -1, -1)), dim=1)
    _, frames_n, channel, height, width = videos.shape
    grid_t, grid_h, grid_w = frames_n // tp, height // patch, width // patch
    patches = videos.reshape(1, grid_t, tp, channel, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return patches.reshape(grid_t * grid_h * grid_w, channel * tp * patch * patch)


@pytest.mark.parametrize("n_frames", [4, 5])
def test_layout_equals_the_stock_video_processor(n_frames):
    processor = tiny_image_processor()
    frames = [random_image(168, 112, seed) for seed in range(n_frames)]  # 168x112: smart_resize keeps it
    video = build_video(processor, frames, fps=2.0)
    expected = stock_layout(frames, processor)
    assert video.video_grid_thw.tolist() == [(n_frames + 1) // 2, 8, 12]
    assert video.pixel_values_videos.shape == expected.shape
    assert (video.pixel_values_videos - expected).abs().max() < 1e-5
    assert video.second_per_grid_t == 1.0


def test_two_equal_frames_give_the_image_patches():
    """The image processor copies one picture over the temporal slot: a still 2-frame video is that image."""
    processor = tiny_image_processor()
    image = random_image(224, 224, 3)
    video = build_video(processor, [image, image], fps=4.0)
    still = processor(images=[image], return_tensors="pt")
    assert torch.equal(video.pixel_values_videos, still["pixel_values"])
    assert video.video_grid_thw.tolist() == still["image_grid_thw"][0].tolist()
    assert video.second_per_grid_t == 0.5


def test_temporal_positions_use_second_per_grid_ts():
    """fps 2 -> second_per_grid_ts 1.0 (a value transformers 5.17 and 5.24 treat alike): each temporal group
    starts tokens_per_second positions after the previous one."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    frames = tuple(random_image(112, 112, seed) for seed in range(6))
    inputs = build_inputs(tokenizer, tiny_image_processor(), [Request("what shape is there ?", video=frames, fps=2.0)])
    assert inputs.second_per_grid_ts.tolist() == [1.0]
    positions, _ = model.model.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        video_grid_thw=inputs.video_grid_thw,
        second_per_grid_ts=inputs.second_per_grid_ts,
        attention_mask=inputs.attention_mask,
    )
    temporal = positions[0, 0][inputs.mm_token_type_ids[0] == 2]
    per_group = 16  # (112 / 28)^2 merged cells per temporal group
    starts = temporal[::per_group].tolist()
    step = model.config.vision_config.tokens_per_second
    assert len(starts) == 3 and [b - a for a, b in zip(starts, starts[1:], strict=False)] == [step, step]


def test_frames_from_a_folder_a_gif_and_a_list(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in (10, 2, 1):  # natural order: 1, 2, 10
        random_image(56, 56, index).save(folder / f"f{index}.png")
    (folder / "notes.txt").write_text("ignored")
    frames = read_frames(folder)
    assert [np.asarray(f).tobytes() for f in frames] == [
        np.asarray(random_image(56, 56, i)).tobytes() for i in (1, 2, 10)
    ]
    gif = tmp_path / "clip.gif"
    first, *rest = [random_image(56, 56, i) for i in range(4)]
    first.save(gif, save_all=True, append_images=rest, duration=100)
    assert len(read_frames(gif)) == 4 and read_frames(gif)[0].mode == "RGB"
    assert len(read_frames([folder / "f1.png", folder / "f2.png"])) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no frame images"):
        read_frames(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        read_frames(tmp_path / "missing.gif")


@pytest.mark.contract
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_video_and_multi_image_prompts_match_the_masked_oracle(family):
    model, tokenizer = tiny_model(family), tiny_tokenizer()
    frames = tuple(random_image(112, 168, seed) for seed in range(5))
    requests = [
        Request("how many stars are there ?", video=frames, fps=2.0),
        Request("what color is the circle ?", (random_image(224, 112, 8), random_image(112, 112, 9))),
        Request("what shape is there ?", (random_image(112, 112, 10),), video=frames[:2], fps=2.0),
    ]
    inputs = build_inputs(tokenizer, tiny_image_processor(), requests).to(DEVICE)
    report = check_against_oracle(adapter_for(model, tokenizer), inputs, HawkScorer(), 0.7, 5, EOS, TOLERANCE)
    assert inputs.video_grid_thw.tolist() == [[3, 12, 8], [1, 12, 8]]
    assert report.visual_tokens_kept < report.visual_tokens  # video tokens are pruned like image tokens
    assert report.passed, report
