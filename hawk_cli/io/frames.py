"""Video frames from files: a folder of images, a list of frame files, or one multi-frame file (GIF, APNG, WebP,
TIFF). Family-neutral: how frames become model inputs is each adapter's business."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageSequence, UnidentifiedImageError

from hawk_cli.errors import InputError
from hawk_cli.io.images import MAX_PROMPT_PIXELS, check_local_file, check_pixel_total, image_header, load_image, to_rgb

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FRAMES = 768  # the stock video processor's max_frames
DEFAULT_FPS = 2.0  # frames per second assumed for a video given as frames (the Qwen processors' default)


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
                raise InputError(
                    f"the video '{path}' has {n_frames} frames, over hawk's limit of {MAX_FRAMES}",
                    "Sample fewer frames (and set {fps} to their rate)",
                )
            width, height = image.size
            if width * height * min(n_frames, MAX_FRAMES) > MAX_PROMPT_PIXELS:
                raise InputError(
                    f"video '{path}' has {n_frames} frames of {width}x{height}, too many pixels",
                    "Downscale it or keep fewer frames",
                )
            return [to_rgb(frame, str(path)) for frame in ImageSequence.Iterator(image)]
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"'{path}' is not an image Pillow can read", "Give a GIF, a folder of frames or frame files"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(f"video '{path}' is unreadable or truncated ({error})", "Re-export it") from None


def _load_frame_files(paths: list) -> list[Image.Image]:
    """Frame files, with their count and pixel total checked from the headers before any decoding."""
    if len(paths) > MAX_FRAMES:
        raise InputError(
            f"the video has {len(paths)} frames, over hawk's limit of {MAX_FRAMES}",
            "Sample fewer frames (and set {fps} to their rate)",
        )
    check_pixel_total([image_header(p)[:2] for p in paths], "the video's frames")
    return [load_image(p) for p in paths]


def read_frames(source: str | Path | list | tuple) -> list[Image.Image]:
    """Frames from a folder of images (natural name order), a list of frame files, or one multi-frame file."""
    if isinstance(source, (list, tuple)):
        if len(source) == 1:
            return read_frames(source[0])
        frames = _load_frame_files(list(source))
    else:
        path = Path(source) if Path(source).is_dir() else check_local_file(source, "video")
        if path.is_dir():
            files = sorted(
                (p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()), key=_natural_key
            )
            if not files:
                raise InputError(
                    f"video folder '{path}' holds no frame images", f"Put frames ({', '.join(FRAME_SUFFIXES)}) in it"
                )
            frames = _load_frame_files(files)
        else:
            frames = _frames_of_file(path)
    if not frames:
        raise InputError("the video has no frames", "Give at least one frame")
    if len(frames) > MAX_FRAMES:
        raise InputError(
            f"the video has {len(frames)} frames, over hawk's limit of {MAX_FRAMES}",
            "Sample fewer frames (and set {fps} to their rate)",
        )
    return frames


# Frames are given their time positions from the rate they were sampled at (2 / fps seconds per temporal
# group). Outside this range the positions degenerate (every group at one time above it, or times beyond any
# context below it), and a value there is almost surely a typo.
FPS_RANGE = (0.01, 1000.0)


def validate_fps(fps: float) -> float:
    low, high = FPS_RANGE
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not low <= fps <= high:
        raise InputError(
            f"fps must be a number from {low:g} to {high:g} (frames per second), got {fps}",
            "Use e.g. 2 (frames per second)",
        )
    return float(fps)
