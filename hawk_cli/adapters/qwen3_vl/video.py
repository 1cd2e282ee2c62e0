"""Video frames -> Qwen3-VL video inputs without torchvision, and the family's text timestamps.

Qwen3-VL marks time in the prompt instead of in the rotary ids: the stock `Qwen3VLProcessor` writes, for each
temporal patch (two frames), `<{t:.1f} seconds>` then the patch's tokens wrapped in their own
`<|vision_start|> ... <|vision_end|>`, where t is the mean of the two frames' times, and it replaces the chat
template's single `<|vision_start|><|video_pad|><|vision_end|>` with that sequence (transformers 5.25 and
Qwen's own processor; 5.17 replaces only the pad and keeps the template's outer pair). `get_rope_index` then
splits each video grid into one grid per temporal patch and takes no `second_per_grid_ts`.

Pixels: the stock `Qwen3VLVideoProcessor` needs torchvision. Its frame size rule is reproduced (its own
`smart_resize` over the whole clip with the published video bounds), the frames are resized with Pillow and
rescaled / normalised / laid out by the model's PIL image processor, as for Qwen2.5-VL (adapters/qwen2_vl/video.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from hawk_cli.adapters.qwen2_vl.video import build_video as build_video_layout
from hawk_cli.errors import InputError
from hawk_cli.io.frames import DEFAULT_FPS, validate_fps

VISION_START, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"
# The published Qwen3-VL video_preprocessor_config.json: pixel bounds for the whole clip (frames x height x width).
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 4096, 25165824


@dataclass(frozen=True)
class Qwen3Video:
    pixel_values_videos: torch.Tensor  # [t*h*w, C*tp*p*p] float32, the stock layout
    video_grid_thw: torch.Tensor  # [3] long: (temporal patches, h, w) in patches
    timestamps: tuple[float, ...]  # seconds at the middle of each temporal patch, as the stock processor writes


def frame_size(n_frames: int, width: int, height: int, image_processor) -> tuple[int, int]:
    """(height, width) every frame is resized to: the stock video processor's rule for a clip of `n_frames`."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    temporal = int(image_processor.temporal_patch_size)
    factor = int(image_processor.patch_size) * int(image_processor.merge_size)
    try:
        return smart_resize(
            max(n_frames, temporal),
            height,
            width,
            temporal_factor=temporal,
            factor=factor,
            min_pixels=VIDEO_MIN_PIXELS,
            max_pixels=VIDEO_MAX_PIXELS,
        )
    except ValueError as error:
        raise InputError(f"the video frames cannot be used: {error}", "Give frames of a usual aspect ratio") from error


def frame_timestamps(n_frames: int, fps: float, temporal: int) -> list[float]:
    """Seconds of each temporal patch of `n_frames` frames sampled at `fps`: the stock processor's rule (the
    last frame repeated up to a whole patch, then the mean of each patch's first and last frame times)."""
    indices = list(range(n_frames))
    indices += [indices[-1]] * (-n_frames % temporal)
    times = [index / fps for index in indices]
    return [(times[i] + times[i + temporal - 1]) / 2 for i in range(0, len(times), temporal)]


def build_video(image_processor, frames, fps: float = DEFAULT_FPS) -> Qwen3Video:
    """The stock Qwen3-VL video inputs for `frames` sampled at `fps` frames per second."""
    fps = validate_fps(fps)
    if not frames:
        raise InputError("the video has no frames", "Give at least one frame")
    height, width = frame_size(len(frames), frames[0].width, frames[0].height, image_processor)
    resample = int(getattr(image_processor, "resample", None) or Image.Resampling.BICUBIC)
    sized = [frame.convert("RGB") for frame in frames]
    sized = [frame if frame.size == (width, height) else frame.resize((width, height), resample) for frame in sized]
    layout = build_video_layout(image_processor, sized, fps, do_resize=False)
    return Qwen3Video(
        pixel_values_videos=layout.pixel_values_videos,
        video_grid_thw=layout.video_grid_thw,
        timestamps=tuple(frame_timestamps(len(frames), fps, int(image_processor.temporal_patch_size))),
    )


def video_placeholders(timestamps) -> str:
    """One `<t seconds>` and one wrapped `<|video_pad|>` per temporal patch (each pad expands to its tokens)."""
    return "".join(f"<{t:.1f} seconds>{VISION_START}{VIDEO_PAD}{VISION_END}" for t in timestamps)


def with_timestamps(text: str, timestamps) -> str:
    """The chat text with its (first) video placeholder replaced the way the stock processor does: the
    template's wrapped `<|video_pad|>` as a whole, or a bare one when the template writes no wrapper."""
    wrapper = VISION_START + VIDEO_PAD + VISION_END
    target = wrapper if wrapper in text else VIDEO_PAD
    return text.replace(target, video_placeholders(timestamps), 1)
