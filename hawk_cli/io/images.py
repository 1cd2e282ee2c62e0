"""Open user images with Pillow and turn every failure into one clear line."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from hawk_cli.errors import InputError

# Refuse before decoding: a 20000x20000 RGB image is 1.2 GB of pixels, and the model would shrink it anyway.
MAX_IMAGE_PIXELS = 50_000_000


def load_image(path: str | Path) -> Image.Image:
    """An RGB image fully decoded in memory, or an InputError naming the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"image '{path}' does not exist", "Check the path")
    if path.is_dir():
        raise InputError(f"image '{path}' is a folder", "Give an image file (PNG, JPEG, ...)")
    if path.stat().st_size == 0:
        raise InputError(f"image '{path}' is empty (0 bytes)", "Give a valid image file")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InputError(f"image '{path}' is {width}x{height} ({width * height / 1e6:.0f} Mpx), over "
                                 f"hawk's {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit",
                                 "Downscale it first (the model resizes to at most a few Mpx anyway)")
            image.load()
            return image.convert("RGB")
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"image '{path}' is over hawk's {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit (Pillow refuses to "
                         "decode it)", "Downscale it first (the model resizes to at most a few Mpx anyway)")
    except UnidentifiedImageError:
        raise InputError(f"'{path}' is not an image Pillow can read", "Give a PNG, JPEG, WebP, GIF or BMP file")
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"image '{path}' is unreadable or truncated ({error})", "Re-export or re-download it")
