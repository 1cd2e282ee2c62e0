"""Overlay picture: dropped cells dimmed, kept cells outlined; the outlined cells are exactly the kept tokens."""

from __future__ import annotations

import torch
from PIL import Image

from hawk_cli.io.overlay import KEPT_OUTLINE, overlay_name, panels_for, render_overlay, save_overlay

CELL = 28
GRAY = (128, 128, 128)


def outlined_and_dimmed(picture: Image.Image, x0: int, rows: int, cols: int) -> tuple[list[int], list[int]]:
    """Indices of cells whose corner is the outline colour, and of cells whose centre is dimmed."""
    pixels = picture.load()
    outlined, dimmed = [], []
    for index in range(rows * cols):
        row, col = divmod(index, cols)
        left, top = x0 + col * CELL, row * CELL
        if pixels[left, top] == KEPT_OUTLINE and pixels[left + CELL - 1, top + CELL - 1] == KEPT_OUTLINE:
            outlined.append(index)
        if pixels[left + CELL // 2, top + CELL // 2][0] < 60:
            dimmed.append(index)
    return outlined, dimmed


def test_outlined_cells_equal_the_known_keep_set():
    keep = torch.zeros(64, dtype=torch.bool)
    kept = [0, 5, 9, 10, 33, 63]
    keep[kept] = True
    picture = render_overlay([(Image.new("RGB", (224, 224), GRAY), 16, 16)], keep)
    assert picture.size == (224, 224)
    outlined, dimmed = outlined_and_dimmed(picture, 0, 8, 8)
    assert outlined == kept
    assert dimmed == [i for i in range(64) if i not in kept]


def test_several_images_and_video_groups_are_separate_panels_in_token_order():
    images = [Image.new("RGB", (300, 150), GRAY), Image.new("RGB", (80, 80), GRAY)]
    frames = [Image.new("RGB", (112, 112), GRAY)] * 3  # 3 frames -> 2 temporal groups (last frame repeated)
    grids = [(1, 8, 16), (1, 4, 4), (2, 8, 8)]
    panels = panels_for(images, frames, grids)
    assert [(h, w) for _, h, w in panels] == [(8, 16), (4, 4), (8, 8), (8, 8)]
    counts = [32, 4, 16, 16]
    keep = torch.zeros(sum(counts), dtype=torch.bool)
    keep[[1, 31, 32, 36, 40, 51, 52, 67]] = True
    picture = render_overlay(panels, keep)
    x, offset, total = 0, 0, 0
    for (h, w), count in zip([(8, 16), (4, 4), (8, 8), (8, 8)], counts, strict=True):
        outlined, _ = outlined_and_dimmed(picture, x, h // 2, w // 2)
        assert [offset + i for i in outlined] == [
            i for i in keep.nonzero().view(-1).tolist() if offset <= i < offset + count
        ]
        total += len(outlined)
        x, offset = x + (w // 2) * CELL + 8, offset + count
    assert total == int(keep.sum())


def test_colour_by_score_ranks_kept_cells():
    keep = torch.tensor([True, False, True, True])
    scores = torch.tensor([0.1, 9.0, 0.9, 0.5])
    picture = render_overlay([(Image.new("RGB", (56, 56), GRAY), 4, 4)], keep, scores, by_score=True)
    pixels = picture.load()
    assert pixels[0, 0] == (0, 64, 255)  # lowest kept score: blue
    assert pixels[0, CELL] == (255, 0, 0)  # highest kept score: red (the dropped 9.0 does not count)


def test_save_is_atomic_and_follows_the_suffix(tmp_path):
    picture = render_overlay([(Image.new("RGB", (56, 56), GRAY), 4, 4)], torch.tensor([True, False, False, True]))
    save_overlay(tmp_path / "kept.png", picture)
    save_overlay(tmp_path / "kept.jpg", picture)
    assert Image.open(tmp_path / "kept.png").format == "PNG" and Image.open(tmp_path / "kept.jpg").format == "JPEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jpg", "kept.png"]  # no temp files left


def test_overlay_names_are_safe():
    assert overlay_name("q-1", 3) == "q-1.png"
    assert overlay_name("../../etc/passwd", 4) == "etc_passwd.png"
    assert overlay_name(None, 7) == "line7.png"
