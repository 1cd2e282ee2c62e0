"""A picture of what pruning kept: each input image (or video frame group) as the model saw it, dropped
tokens' cells dimmed, kept tokens' cells outlined (green, or coloured by score rank with `by_score`).

One visual token is one merged cell of `patch_size * merge_size` pixels (28 for Qwen-VL) of the resized
image. Tokens come in prompt order: images first, then the video's temporal groups; inside each, merged rows
then merged columns (the order of the placeholders, which the merger restores after window attention).
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from hawk_cli.errors import InputError
from hawk_cli.io.atomic import atomic_path

KEPT_OUTLINE = (0, 255, 0)
DIM_FACTOR = 0.3  # dropped cells keep 30% of their brightness
OUTLINE_WIDTH = 2
GAP = 8
BACKGROUND = (24, 24, 24)


def _score_colour(rank: float) -> tuple[int, int, int]:
    """rank 0 (lowest kept score) -> blue, 1 (highest) -> red, through green/yellow."""
    stops = [(0, 64, 255), (0, 220, 220), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
    position = min(max(rank, 0.0), 1.0) * (len(stops) - 1)
    low = int(position)
    high = min(low + 1, len(stops) - 1)
    frac = position - low
    return tuple(int(round(a + (b - a) * frac)) for a, b in zip(stops[low], stops[high], strict=True))


def panels_for(
    images: tuple[Image.Image, ...] | list[Image.Image],
    frames: tuple[Image.Image, ...] | list,
    grids: list[tuple[int, int, int]],
    temporal_patch_size: int = 2,
) -> list[tuple[Image.Image, int, int]]:
    """(picture, merged rows, merged columns) per token block, in prompt order; grids are in patches."""
    pictures = list(images)
    if frames:
        padded = list(frames) + [frames[-1]] * (-len(frames) % temporal_patch_size)
        pictures += padded[::temporal_patch_size]  # the first frame of each temporal group
    blocks = []
    for t, h, w in grids:
        blocks.extend([(h, w)] * t)
    if len(blocks) != len(pictures):
        raise InputError(f"{len(pictures)} pictures but {len(blocks)} token grids", "This is a bug; please report it")
    return [(picture, h, w) for picture, (h, w) in zip(pictures, blocks, strict=True)]


def render_overlay(
    panels: list[tuple[Image.Image, int, int]],
    keep: torch.Tensor,
    scores: torch.Tensor | None = None,
    merge_size: int = 2,
    cell_pixels: int = 28,
    by_score: bool = False,
) -> Image.Image:
    """One picture, panels side by side. `keep` / `scores`: [n_visual] over the panels' cells in order."""
    keep = keep.bool().cpu()
    counts = [(h // merge_size) * (w // merge_size) for _, h, w in panels]
    if sum(counts) != keep.numel():
        raise InputError(f"{keep.numel()} kept flags for {sum(counts)} cells", "This is a bug; please report it")
    colours = None
    if by_score and scores is not None and bool(keep.any()):
        kept_scores = scores.float().cpu()[keep]
        order = kept_scores.argsort().argsort().float()  # rank among kept tokens
        ranks = order / max(len(order) - 1, 1)
        colours = iter([_score_colour(float(r)) for r in ranks])
    sizes = [((w // merge_size) * cell_pixels, (h // merge_size) * cell_pixels) for _, h, w in panels]
    canvas = Image.new("RGB", (sum(s[0] for s in sizes) + GAP * (len(sizes) - 1), max(s[1] for s in sizes)), BACKGROUND)
    x, offset = 0, 0
    for (picture, _, w), (width, height), count in zip(panels, sizes, counts, strict=True):
        panel = picture.convert("RGB").resize((width, height), Image.BICUBIC)
        dimmed = panel.point(lambda v: int(v * DIM_FACTOR))
        cols = w // merge_size
        flags = keep[offset : offset + count].tolist()
        for index, kept in enumerate(flags):
            if not kept:
                row, col = divmod(index, cols)
                box = (col * cell_pixels, row * cell_pixels, (col + 1) * cell_pixels, (row + 1) * cell_pixels)
                panel.paste(dimmed.crop(box), box[:2])
        draw = ImageDraw.Draw(panel)
        for index, kept in enumerate(flags):
            if kept:
                row, col = divmod(index, cols)
                colour = next(colours) if colours is not None else KEPT_OUTLINE
                draw.rectangle(
                    (col * cell_pixels, row * cell_pixels, (col + 1) * cell_pixels - 1, (row + 1) * cell_pixels - 1),
                    outline=colour,
                    width=OUTLINE_WIDTH,
                )
        canvas.paste(panel, (x, 0))
        x += width + GAP
        offset += count
    return canvas


def save_overlay(path: Path, picture: Image.Image, overwrite: bool = False) -> None:
    """Write atomically (an existing file only with `overwrite`); the format follows the suffix (PNG when
    unknown)."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_path(path, overwrite) as temporary:
        picture.save(temporary, format=image_format)


class OverlayNames:
    """File names for one run's overlays, each used once: a request whose id's name is taken (a repeated id,
    ids differing only in case or in characters made safe, a name `reserved` for another output) gets its line
    number added, which no other request of the run has."""

    def __init__(self, reserved: tuple[str, ...] = ()) -> None:
        self._used = {name.casefold() for name in reserved}  # some file systems ignore case

    def name_for(self, request_id: object, line: int) -> str:
        name = overlay_name(request_id, line)
        stem = name[: -len(".png")]
        counter = 0
        while name.casefold() in self._used:
            counter += 1
            name = f"{stem}-line{line}.png" if counter == 1 else f"{stem}-line{line}-{counter}.png"
        self._used.add(name.casefold())
        return name


def overlay_name(request_id: object, line: int) -> str:
    """A safe file name for a JSONL row's overlay: the id's characters kept where harmless, else the line."""
    text = "" if request_id is None else str(request_id)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")[:100]  # file names: 255 B
    return f"{safe or f'line{line}'}.png"
