"""Open user images with Pillow, convert every mode faithfully to RGB, and turn every failure into one clear line.

Conversion to 8-bit RGB (docs/errors.md, "Images"), after the EXIF orientation is applied (a phone photo is
seen upright, as an image viewer shows it):
* 16-bit greyscale (`I;16*`, and `I` from files of at most 16 bits per sample): scaled, v * 255 / 65535
  rounded, a TIFF declaring fewer bits (e.g. 12) by its own maximum (Pillow's own `convert` clips at 255,
  which turns almost every 16-bit picture white);
* 32-bit float (`F`): read as 0.0-1.0 (the usual convention of float images), scaled by 255 and rounded;
  values outside 0-1, NaN, and integer images of more than 16 bits are refused, since no scale is right for
  all of them;
* transparency (`RGBA`, `LA`, `PA`, premultiplied `RGBa` / `La`, and a transparent colour key in `P`, `L`,
  `1` or `RGB`): composited over
  white (`BACKGROUND`), as a page shows it; dropping the alpha channel instead shows whatever colour the
  transparent pixels happen to store (often black);
* `CMYK`, `YCbCr`, `HSV`, `1`, `L`, `P`, `RGBX`: Pillow's conversions (standard formulas); `LAB`: through
  LittleCMS (Pillow's ImageCms) to sRGB.
Embedded ICC profiles are not applied: pixels are taken as sRGB, as the stock processor takes them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hawk_cli.errors import InputError

# Refuse before decoding: a 20000x20000 RGB image is 1.2 GB of pixels, and the model would shrink it anyway.
MAX_IMAGE_PIXELS = 50_000_000
# One prompt's images (and, separately, its video frames) together: images are decoded whole before they are
# resized, so this bounds a prompt's decoded pixels at about 600 MB.
MAX_PROMPT_PIXELS = 4 * MAX_IMAGE_PIXELS
# Images in one prompt. Each costs at least 4 visual tokens and is decoded whole; more than this is almost
# surely a mistake (a glob that matched a folder of photos).
MAX_IMAGES_PER_PROMPT = 64
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited over
URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "hf://", "file://")
_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_local_file(path: str | Path, what: str = "image") -> Path:
    """The path of an existing regular file, or an InputError that names what it is instead."""
    text = os.fspath(path)
    if text.lower().startswith(URL_PREFIXES):
        raise InputError(f"{what} '{text}' is a URL; hawk reads local files only", "Download it first")
    if "\x00" in text:
        raise InputError(f"{what} path {text!r} contains a NUL character", "Check the path")
    path = Path(text)
    try:
        info = path.stat()
    except FileNotFoundError:
        if os.path.lexists(path):
            raise InputError(
                f"{what} '{path}' is a symbolic link to a missing file", "Check where the link points"
            ) from None
        raise InputError(f"{what} '{path}' does not exist", "Check the path") from None
    except OSError as error:  # a symlink loop, a name too long, no permission on a folder on the way
        raise InputError(f"cannot open {what} '{path}' ({error.strerror})", "Check the path") from None
    except ValueError as error:  # not encodable as a file name
        raise InputError(f"{what} path {text!r} is not a valid file name ({error})", "Check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{what} '{path}' is a folder", "Give an image file (PNG, JPEG, ...)")
    for test, kind in _FILE_KINDS:
        if test(info.st_mode):
            raise InputError(f"{what} '{path}' is {kind}, not a regular file", "Save the image to a file first")
    if info.st_size == 0:
        raise InputError(f"{what} '{path}' is empty (0 bytes)", "Give a valid image file")
    return path


def image_header(path: str | Path) -> tuple[int, int, int]:
    """(width, height, frames) from the file's header, without decoding pixels (errors as `load_image`'s)."""
    path = check_local_file(path)
    with _opened(path) as image:
        return int(image.width), int(image.height), int(getattr(image, "n_frames", 1))


def load_image(path: str | Path) -> Image.Image:
    """An RGB image fully decoded in memory, or an InputError naming the file and the fix."""
    path = check_local_file(path)
    with _opened(path) as image:
        return to_rgb(image, str(path))


def load_images(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[Image.Image, ...]:
    """One prompt's images, with the count and the pixel total checked from the headers before any decoding."""
    if len(paths) > MAX_IMAGES_PER_PROMPT:
        raise InputError(
            f"the prompt has {len(paths)} images, over hawk's limit of {MAX_IMAGES_PER_PROMPT}",
            "Give fewer images per prompt",
        )
    check_pixel_total([image_header(path)[:2] for path in paths], "the prompt's images")
    return tuple(load_image(path) for path in paths)


def check_pixel_total(sizes: list[tuple[int, int]], what: str) -> None:
    total = sum(width * height for width, height in sizes)
    if total > MAX_PROMPT_PIXELS:
        raise InputError(
            f"{what} hold {total / 1e6:.0f} Mpx together, over hawk's limit of "
            f"{MAX_PROMPT_PIXELS / 1e6:.0f} Mpx per prompt",
            "Downscale them or give fewer",
        )


class _opened:
    """`Image.open` with the size limit checked from the header and Pillow's errors as InputErrors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        try:
            self.image = Image.open(self.path)
        except Image.DecompressionBombError:
            raise _too_large(self.path, None) from None
        except UnidentifiedImageError:
            raise InputError(
                f"'{self.path}' is not an image Pillow can read", "Give a PNG, JPEG, WebP, GIF or BMP file"
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            raise InputError(
                f"image '{self.path}' is unreadable or truncated ({error})", "Re-export or re-download it"
            ) from None
        width, height = self.image.size
        if width * height > MAX_IMAGE_PIXELS:
            self.image.close()
            raise _too_large(self.path, (width, height))
        return self.image

    def __exit__(self, kind, error, trace) -> bool:
        if self.image is not None:
            self.image.close()
        if isinstance(error, Image.DecompressionBombError):
            raise _too_large(self.path, None)
        if isinstance(error, (OSError, SyntaxError, ValueError)) and not isinstance(error, InputError):
            raise InputError(f"image '{self.path}' is unreadable or truncated ({error})", "Re-export or re-download it")
        return False


def _too_large(path: Path, size: tuple[int, int] | None) -> InputError:
    limit = f"hawk's {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit"
    where = (
        f"is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} Mpx), over {limit}"
        if size
        else f"is over {limit} (Pillow refuses to decode it)"
    )
    return InputError(f"image '{path}' {where}", "Downscale it first (the model resizes to at most a few Mpx anyway)")


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """`image` (any mode Pillow opens), upright per its EXIF orientation, as 8-bit RGB (see module docstring).

    Always a new image, independent of the (possibly closed) file `image` was read from."""
    image.load()
    bits = _bits_per_sample(image)  # read before the copy below, which keeps no file tags
    upright = ImageOps.exif_transpose(image)
    image = upright if upright is not image else image.copy()
    mode = image.mode
    keyed = "transparency" in image.info and mode in ("1", "L", "P", "RGB")  # a colour key (PNG tRNS, GIF)
    if mode in ("RGBA", "LA", "PA", "RGBa") or keyed:
        return _over_background(image.convert("RGBA"))
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode == "I":
        return _from_grey(_sixteen_bit(image, bits, name)).convert("RGB")
    if mode == "F":
        return _from_grey(_unit_float(image, name)).convert("RGB")
    if mode == "LAB":
        from PIL import ImageCms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(image, transform)
    if mode == "La":  # premultiplied: Pillow has no conversion from it
        grey = np.asarray(image, dtype=np.float64)
        alpha = grey[..., 1:2]
        plain = np.where(alpha > 0, grey[..., :1] * 255.0 / np.maximum(alpha, 1), 0).clip(0, 255)
        rgba = np.concatenate([np.repeat(plain, 3, axis=2), alpha], axis=2)
        return _over_background(Image.fromarray(np.rint(rgba).astype(np.uint8), "RGBA"))
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "HSV", "RGBX"):
        return image.convert("RGB")
    raise InputError(
        f"image '{name}' has pixel mode '{mode}', which hawk cannot convert to RGB",
        "Re-export it as an 8-bit RGB PNG or JPEG",
    )


def _from_grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8), "L")


def _bits_per_sample(image: Image.Image) -> int:
    """Bits per sample the file declares (TIFF BitsPerSample), else 16: PNG, the other source of `I` and `I;16`
    images, stores at most 16."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:
        declared = tags[258]
        return int(declared[0] if isinstance(declared, tuple) else declared)
    return 16


def _sixteen_bit(image: Image.Image, bits: int, name: str) -> np.ndarray:
    """Grey values scaled from the declared bit depth (16 for PNG; 12 for a 12-bit TIFF) to 8 bits, rounded."""
    if bits > 16:
        raise InputError(
            f"image '{name}' holds {bits}-bit integer pixels, which have no single right scale to 8 bits",
            "Convert it to 8- or 16-bit first",
        )
    values = np.asarray(image).astype(np.int64)
    top = (1 << bits) - 1
    return (np.clip(values, 0, top) * 255 + top // 2) // top


def _unit_float(image: Image.Image, name: str) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64)
    if np.isnan(values).any():
        raise InputError(f"image '{name}' holds NaN pixel values", "Re-export it as an 8-bit image")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"image '{name}' holds floating-point pixels from {low:g} to {high:g}; hawk reads float images as 0.0-1.0",
            "Scale it to 0-1, or re-export it as an 8-bit image",
        )
    return np.floor(values * 255.0 + 0.5)


def _over_background(rgba: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(canvas, rgba).convert("RGB")
