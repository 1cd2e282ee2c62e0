"""Video frames -> Qwen2-VL / Qwen2.5-VL video inputs, without torchvision's video processor.

The stock `Qwen2VLVideoProcessor` needs torchvision, which does not import beside the CPU torch wheel. Its
output layout is simple, so it is rebuilt here from the PIL image processor (version-stable pixels):

* every frame is resized to ONE size (the first frame's `smart_resize`), rescaled and normalised by the
  model's own image processor;
* the frame count is padded to a multiple of `temporal_patch_size` (2) by repeating the last frame;
* patches are laid out as the stock processor's `view(t, tp, C, h/m, m, p, w/m, m, p).permute(t, h/m, w/m,
  m, m, C, tp, p, p)`: rows ordered (temporal group, merged row, merged column, merge row, merge column),
  each row C x tp x p x p values;
* `video_grid_thw = [frames / tp, h / p, w / p]`, `second_per_grid_ts = tp / fps` (what the stock Qwen2.5-VL
  processor returns for frames sampled at `fps`).

Trick: the image processor already emits a frame's patches in the (h/m, w/m, m, m) order with the frame
copied over the temporal slot, so one temporal slice per frame, interleaved pairwise, is the video layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from hawk_cli.errors import InputError
from hawk_cli.io.frames import DEFAULT_FPS, validate_fps


@dataclass(frozen=True)
class VideoTensors:
    pixel_values_videos: torch.Tensor  # [t*h*w, C*tp*p*p] float32
    video_grid_thw: torch.Tensor  # [3] long: (t, h, w) in patches
    second_per_grid_t: float  # seconds covered by one temporal patch


def build_video(
    image_processor, frames: list[Image.Image] | tuple[Image.Image, ...], fps: float = DEFAULT_FPS, **processor_kwargs
) -> VideoTensors:
    """The stock video layout for `frames` sampled at `fps` frames per second (`processor_kwargs` go to the
    image processor's call, e.g. `do_resize=False` for frames a family has already sized)."""
    fps = validate_fps(fps)
    if not frames:
        raise InputError("the video has no frames", "Give at least one frame")
    tp = int(image_processor.temporal_patch_size)
    patch = int(image_processor.patch_size)
    size = frames[0].size
    frames = [f.convert("RGB") if f.size == size else f.convert("RGB").resize(size, Image.BICUBIC) for f in frames]
    frames = list(frames) + [frames[-1]] * (-len(frames) % tp)
    processed = image_processor(images=frames, return_tensors="pt", **processor_kwargs)
    grids = processed["image_grid_thw"]
    grid_h, grid_w = int(grids[0, 1]), int(grids[0, 2])
    pixels = processed["pixel_values"].float()  # [n_frames * h * w, C * tp * p * p], frame copied over tp
    per_frame = grid_h * grid_w
    channels = pixels.shape[1] // (tp * patch * patch)
    # One temporal slice per frame: [n_frames, h*w, C, p, p].
    slices = pixels.view(len(frames), per_frame, channels, tp, patch, patch)[:, :, :, 0]
    grid_t = len(frames) // tp
    # [t, tp, hw, C, p, p] -> [t, hw, C, tp, p, p]: frames of a temporal group side by side in each row.
    grouped = slices.view(grid_t, tp, per_frame, channels, patch, patch).permute(0, 2, 3, 1, 4, 5)
    values = grouped.reshape(grid_t * per_frame, channels * tp * patch * patch).contiguous()
    return VideoTensors(
        pixel_values_videos=values,
        video_grid_thw=torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long),
        second_per_grid_t=tp / fps,
    )
