"""Image patches finished on the model's device: the stock Qwen2-VL PIL image processor's steps, split in two.

Why: in JSONL mode the PIL image processor (a float64 rescale, a float32 normalisation and a patch reshuffle in
NumPy) is a large share of host time per request (docs/run-workloads.md), and its float32 patches are 8x the bytes
of the uint8 image they come from. Here the host only resizes (with Pillow, as the stock processor does) and keeps
uint8 pixels; the device does the arithmetic with the stock operations in the stock dtypes (uint8 -> float64 *
rescale_factor -> float32, then (x - mean) / std in float32, then the same patch layout), so the patches are bitwise
the stock processor's (tests/test_prompts.py, CPU and CUDA).

Only the processor hawk loads (`Qwen2VLImageProcessorPil` with resize, rescale, normalise and RGB conversion
on) is reproduced; `PixelRecipe.of` returns None for anything else and callers fall back to the stock call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

SUPPORTED_PROCESSORS = ("Qwen2VLImageProcessorPil",)


@dataclass(frozen=True)
class PixelRecipe:
    """What the stock processor does to one image, read from its settings."""

    patch_size: int
    temporal_patch_size: int
    merge_size: int
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int
    min_pixels: int
    max_pixels: int

    @classmethod
    def of(cls, image_processor) -> PixelRecipe | None:
        """The recipe of a supported processor with the standard steps switched on, else None."""
        if type(image_processor).__name__ not in SUPPORTED_PROCESSORS:
            return None
        flags = ("do_resize", "do_rescale", "do_normalize", "do_convert_rgb")
        if not all(getattr(image_processor, flag, False) is True for flag in flags):
            return None
        mean, std = image_processor.image_mean, image_processor.image_std
        size = image_processor.size
        min_pixels, max_pixels = _size_value(size, "shortest_edge"), _size_value(size, "longest_edge")
        if not (_three(mean) and _three(std) and min_pixels and max_pixels):
            return None
        return cls(
            patch_size=int(image_processor.patch_size),
            temporal_patch_size=int(image_processor.temporal_patch_size),
            merge_size=int(image_processor.merge_size),
            rescale_factor=float(image_processor.rescale_factor),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            resample=int(image_processor.resample),
            min_pixels=int(min_pixels),
            max_pixels=int(max_pixels),
        )

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) the stock processor resizes to; its own `smart_resize`, so errors read the same."""
        smart_resize = importlib.import_module(_PIL_PROCESSOR_MODULE).smart_resize
        return smart_resize(
            height,
            width,
            factor=self.patch_size * self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )

    def resize(self, image: Image.Image) -> Tensor:
        """Host half: the RGB image resized as the stock processor resizes it, as uint8 `[H, W, 3]`."""
        image = image if image.mode == "RGB" else image.convert("RGB")
        height, width = self.target_size(image.width, image.height)
        if image.size != (width, height):
            image = image.resize((width, height), resample=self.resample)
        return torch.from_numpy(np.array(image, dtype=np.uint8))  # one copy, [H, W, 3]

    def grid(self, image: Tensor) -> tuple[int, int, int]:
        return (1, image.shape[0] // self.patch_size, image.shape[1] // self.patch_size)

    def patches(self, images: list[Tensor], device: torch.device | str) -> Tensor:
        """Device half: `[sum patches, C*T*P*P]` float32 patches of uint8 `[H, W, 3]` images, in order."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1).to(device, non_blocking=True)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1).to(device, non_blocking=True)
        # Images of one size go through together (one copy, one set of kernels); the rows keep prompt order.
        runs: list[list[Tensor]] = []
        for image in images:
            if runs and runs[-1][0].shape == image.shape:
                runs[-1].append(image)
            else:
                runs.append([image])
        out = []
        pinned = torch.device(device).type == "cuda"
        for run in runs:
            stacked = _stack_on_host([image.numpy() for image in run], pinned)
            pixels = stacked.to(device, non_blocking=True).permute(0, 3, 1, 2)  # [N, C, H, W]
            pixels = (pixels.to(torch.float64) * self.rescale_factor).to(torch.float32)
            out.append(self._patchify((pixels - mean) / std))
        return out[0] if len(out) == 1 else torch.cat(out)

    def _patchify(self, images: Tensor) -> Tensor:
        """The stock layout per image: rows (merged row, merged column, merge row, merge column), each
        C x T x P x P; images one after another."""
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        count, channels, height, width = images.shape
        gh, gw = height // p, width // p
        blocks = images.reshape(count, channels, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        blocks = blocks.unsqueeze(6).expand(*blocks.shape[:6], t, p, p)
        return blocks.reshape(count * gh * gw, channels * t * p * p)


_PIL_PROCESSOR_MODULE = "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl"


def _stack_on_host(images: list[np.ndarray], pinned: bool) -> Tensor:
    """Images of one size as one host tensor, ready for one copy to the device.

    Stacked by NumPy (one thread): torch's host-side stack is a parallel CPU op, which stalls while preparation
    threads keep the cores busy, and one copy per image waits on the device and hands the interpreter lock to
    those threads each time (seen in traces of benchmarks/jsonl_throughput.py --trace; docs/run-workloads.md). For a
    CUDA device the stack is written into page-locked memory (torch's caching host allocator, so reused from
    batch to batch), which makes the copy truly asynchronous: from pageable memory the driver stages it first,
    with the host waiting.
    """
    out = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=pinned)
    np.stack(images, out=out.numpy())
    return out


def _size_value(size, key: str):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _three(values) -> bool:
    return isinstance(values, (list, tuple)) and len(values) == 3
