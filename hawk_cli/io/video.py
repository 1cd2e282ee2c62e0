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

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageSequence, UnidentifiedImageError

from hawk_cli.errors import InputError
from hawk_cli.io.images import (MAX_IMAGE_PIXELS, MAX_PROMPT_PIXELS, check_local_file, check_pixel_total, image_header,
                                 load_image, to_rgb)

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FRAMES = 768  # the stock video processor's max_frames
DEFAULT_FPS = 2.0  # the stock Qwen2.5-VL processor's default: second_per_grid_ts = 2 / 2 = 1.0


@dataclass(frozen=True)
class VideoTensors:
    pixel_values_videos: torch.Tensor  # [t*h*w, C*tp*p*p] float32
    video_grid_thw: torch.Tensor  # [3] long: (t, h, w) in patches
    second_per_grid_t: float  # seconds covered by one temporal patch


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _frames_of_file(path: Path) -> list[Image.Image]:
    """All frames of one file: several for an animated GIF / APNG / WebP / multi-page TIFF, else one."""
    check_local_file(path, "video")  # names the problem (missing, folder, FIFO, URL)
    try:
        with Image.open(path) as image:
            n_frames = int(getattr(image, "n_frames", 1))
            if n_frames == 1:
                return [load_image(path)]
            if n_frames > MAX_FRAMES:
                raise InputError(f"the video '{path}' has {n_frames} frames, over hawk's limit of {MAX_FRAMES}",
                                 "Sample fewer frames (and set --fps to their rate)")
            width, height = image.size
            if width * height * min(n_frames, MAX_FRAMES) > MAX_PROMPT_PIXELS:
                raise InputError(f"video '{path}' has {n_frames} frames of {width}x{height}, too many pixels",
                                 "Downscale it or keep fewer frames")
            return [to_rgb(frame, str(path)) for frame in ImageSequence.Iterator(image)]
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"'{path}' is not an image Pillow can read", "Give a GIF, a folder of frames or frame files")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"video '{path}' is unreadable or truncated ({error})", "Re-export it")


def _load_frame_files(paths: list) -> list[Image.Image]:
    """Frame files, with their count and pixel total checked from the headers before any decoding."""
    if len(paths) > MAX_FRAMES:
        raise InputError(f"the video has {len(paths)} frames, over hawk's limit of {MAX_FRAMES}",
                         "Sample fewer frames (and set --fps to their rate)")
    check_pixel_total([image_header(p)[:2] for p in paths], "the video's frames")
    return [load_image(p) for p in paths]


def read_frames(source: str | Path | list | tuple) -> list[Image.Image]:
    """Frames from a folder of images (natural name order), a list of frame files, or one multi-frame file."""
    if isinstance(source, (list, tuple)):
        if len(source) == 1:
            return read_frames(source[0])
        frames = _load_frame_files(list(source))
    else:
        path = Path(check_local_file(source, "video")) if not Path(source).is_dir() else Path(source)
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                           key=_natural_key)
            if not files:
                raise InputError(f"video folder '{path}' holds no frame images",
                                 f"Put frames ({', '.join(FRAME_SUFFIXES)}) in it")
            frames = _load_frame_files(files)
        else:
            frames = _frames_of_file(path)
    if not frames:
        raise InputError("the video has no frames", "Give at least one frame")
    if len(frames) > MAX_FRAMES:
        raise InputError(f"the video has {len(frames)} frames, over hawk's limit of {MAX_FRAMES}",
                         "Sample fewer frames (and set --fps to their rate)")
    return frames


# Frames are given their time positions from the rate they were sampled at (2 / fps seconds per temporal
# group). Outside this range the positions degenerate (every group at one time above it, or times beyond any
# context below it), and a value there is almost surely a typo.
FPS_RANGE = (0.01, 1000.0)


def validate_fps(fps: float) -> float:
    low, high = FPS_RANGE
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not low <= fps <= high:
        raise InputError(f"fps must be a number from {low:g} to {high:g} (frames per second), got {fps}",
                         "Use e.g. 2 (frames per second)")
    return float(fps)


def build_video(image_processor, frames: list[Image.Image] | tuple[Image.Image, ...],
                fps: float = DEFAULT_FPS) -> VideoTensors:
    """The stock video layout for `frames` sampled at `fps` frames per second."""
    fps = validate_fps(fps)
    if not frames:
        raise InputError("the video has no frames", "Give at least one frame")
    tp = int(image_processor.temporal_patch_size)
    patch = int(image_processor.patch_size)
    size = frames[0].size
    frames = [f.convert("RGB") if f.size == size else f.convert("RGB").resize(size, Image.BICUBIC) for f in frames]
    frames = list(frames) + [frames[-1]] * (-len(frames) % tp)
    processed = image_processor(images=frames, return_tensors="pt")
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
    return VideoTensors(pixel_values_videos=values,
                        video_grid_thw=torch.tensor([grid_t, grid_h, grid_w], dtype=torch.long),
                        second_per_grid_t=tp / fps)
