"""Seeded synthetic scenes and questions for the built-in model.

A scene is a 448x448 RGB image (16x16 = 256 merged visual tokens of 28x28 px for Qwen2.5-VL): a tinted grey
background with noise and clutter, 6-10 objects (filled shapes in 7 colours, 1-2 boxes holding a handwritten
digit), at most one object per cell of a 4x4 grid. Questions have one-word answers and come with a per-token
target mask (the tokens an oracle should keep). Digit glyphs are UCI optdigits (see data/README.md); rows
before `HELDOUT_GLYPH_START` feed training and calibration scenes, the rest held-out scenes only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

from hawk_cli.synthetic.tokenizer import COLORS, COUNT_WORDS, DIGITS, SHAPE_PLURALS, SHAPES

IMAGE_SIZE = 448
TOKEN_PX = 28
GRID = IMAGE_SIZE // TOKEN_PX  # 16 merged tokens per side
CELL_PX = 112  # 4x4 placement grid; one cell = one window of the vision tower's window attention
MASK_SCALE = 4  # per-object coverage is rendered at 1/4 scale
TARGET_COVERAGE = 0.15  # a token belongs to a target when the target covers at least this share of it
LABEL_COVERAGE = 0.30  # dense training labels: most-covering object with at least this share

QUESTION_KINDS = ("color", "shape", "digit", "count")
HELDOUT_SEED = 424242
CALIBRATION_SEED = 777
TRAINING_SEED = 1
HELDOUT_GLYPH_START = 1400  # optdigits rows [0, 1400) train, [1400, 1797) held out
GENERATOR_VERSION = "1"

COLOR_RGB = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 80, 220),
    "yellow": (235, 215, 45),
    "purple": (135, 60, 180),
    "orange": (245, 135, 30),
    "cyan": (40, 200, 210),
}
OBJECT_KINDS = SHAPES + ("box",)  # dense "kind" classes 1..7, 0 = background
ANSWERS = COLORS + SHAPES + ("box",) + DIGITS + COUNT_WORDS  # 27 one-word answers


@dataclass(frozen=True)
class SyntheticQuestion:
    image: Image.Image  # 448x448 RGB
    question: str  # e.g. "what color is the circle ?"
    answer: str  # one word from the vocabulary
    kind: str  # "color" | "shape" | "digit" | "count"
    target_mask: np.ndarray  # (16, 16) bool, row-major token grid, True = token covered by an asked-about object
    scene_id: int


@dataclass
class SceneObject:
    kind: str  # a shape name or "box"
    color: str
    digit: int | None
    coverage: np.ndarray  # (16, 16) float32 share of each token covered by this object
    glyph: int | None = None  # optdigits row drawn in a box


@dataclass
class Scene:
    pixels: np.ndarray  # (448, 448, 3) uint8
    objects: list[SceneObject]
    labels: np.ndarray = field(repr=False)  # (3, 16, 16) int64: kind (0 bg), colour (0 bg), digit (-100 off boxes)


@dataclass(frozen=True)
class QuestionSpec:
    question: str
    answer: str
    kind: str
    targets: tuple[int, ...]  # object indices


@lru_cache(maxsize=1)
def load_glyphs() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 optdigits glyphs (8x8, values 0..16) and labels shipped as package data."""
    with resources.files("hawk_cli.synthetic").joinpath("data/optdigits_8x8.npz").open("rb") as handle:
        data = np.load(handle)
        return data["images"].astype(np.float32) / 16.0, data["labels"].astype(np.int64)


def glyph_rows(split: str) -> np.ndarray:
    """Row indices of the glyphs that `split` ("train" or "heldout") may use."""
    total = len(load_glyphs()[1])
    if split == "train":
        return np.arange(0, HELDOUT_GLYPH_START)
    if split == "heldout":
        return np.arange(HELDOUT_GLYPH_START, total)
    raise ValueError(f"unknown glyph split {split!r}")


# ---------------------------------------------------------------------------------------------- drawing


def _shape_polygon(kind: str, x0: float, y0: float, size: float) -> list[tuple[float, float]] | None:
    cx, cy, r = x0 + size / 2, y0 + size / 2, size / 2
    if kind == "triangle":
        return [(cx, y0), (x0 + size, y0 + size), (x0, y0 + size)]
    if kind == "diamond":
        return [(cx, y0), (x0 + size, cy), (cx, y0 + size), (x0, cy)]
    if kind == "cross":
        a = size / 6
        return [
            (cx - a, y0),
            (cx + a, y0),
            (cx + a, cy - a),
            (x0 + size, cy - a),
            (x0 + size, cy + a),
            (cx + a, cy + a),
            (cx + a, y0 + size),
            (cx - a, y0 + size),
            (cx - a, cy + a),
            (x0, cy + a),
            (x0, cy - a),
            (cx - a, cy - a),
        ]
    if kind == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + r * 0.08 + radius * math.sin(angle)))
        return points
    return None


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, x0: float, y0: float, size: float, fill) -> None:
    """Draw a filled shape (or a box's outline square) with its bounding square at (x0, y0)."""
    x1, y1 = x0 + size - 1, y0 + size - 1
    if kind == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind in ("square", "box"):
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        draw.polygon(_shape_polygon(kind, x0, y0, size), fill=fill)


def _coverage(kind: str, x0: int, y0: int, size: int) -> np.ndarray:
    small = Image.new("L", (IMAGE_SIZE // MASK_SCALE, IMAGE_SIZE // MASK_SCALE), 0)
    s = MASK_SCALE
    _draw_shape(ImageDraw.Draw(small), kind, x0 / s, y0 / s, size / s, 255)
    block = TOKEN_PX // MASK_SCALE
    arr = np.asarray(small, dtype=np.float32).reshape(GRID, block, GRID, block)
    return arr.mean(axis=(1, 3)) / 255.0


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def render_scene(rng: np.random.Generator, glyph_split: str = "train", noise: int = 10) -> Scene:
    """Draw one scene from `rng`. `noise` is the background pixel noise amplitude (± grey levels)."""
    glyphs, glyph_labels = load_glyphs()
    allowed = glyph_rows(glyph_split)

    # Background: muted grey, per-channel tint, 4x4 bilinear colour gradient, pixel noise.
    base = rng.uniform(70, 165) + rng.uniform(-12, 12, size=3)
    corners = np.clip(base[None, None, :] + rng.uniform(-18, 18, size=(4, 4, 3)), 0, 255)
    gradient = Image.fromarray(np.round(corners).astype(np.uint8)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    noise_rng = np.random.default_rng(int(rng.integers(2**62)))  # own stream: `noise` never shifts later draws
    if noise > 0:
        pixels = np.asarray(gradient, dtype=np.int16) + noise_rng.integers(
            -noise, noise + 1, size=(IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.int16
        )
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    else:
        image = gradient
    draw = ImageDraw.Draw(image)

    # Clutter: thin lines and dots in object colours, near-white and near-black.
    clutter_colours = list(COLOR_RGB.values()) + [(235, 235, 235), (25, 25, 25)]
    for _ in range(int(rng.integers(5, 13))):
        length, angle = rng.uniform(30, 160), rng.uniform(0, math.pi)
        x, y = rng.uniform(0, IMAGE_SIZE), rng.uniform(0, IMAGE_SIZE)
        colour = _jitter(rng, clutter_colours[int(rng.integers(len(clutter_colours)))])
        draw.line(
            (x, y, x + length * math.cos(angle), y + length * math.sin(angle)),
            fill=colour,
            width=int(rng.integers(1, 3)),
        )
    for _ in range(int(rng.integers(10, 31))):
        x, y, radius = rng.uniform(0, IMAGE_SIZE), rng.uniform(0, IMAGE_SIZE), rng.uniform(1.5, 4)
        colour = _jitter(rng, clutter_colours[int(rng.integers(len(clutter_colours)))])
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)

    # Objects: one "count shape" with 1-3 instances, 1-2 boxes, the rest from the other shapes.
    n_objects = int(rng.integers(6, 11))
    n_boxes = int(rng.integers(1, 3))
    count_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    n_count = int(rng.integers(1, 4))
    others = [s for s in SHAPES if s != count_shape]
    kinds = ["box"] * n_boxes + [count_shape] * n_count
    kinds += [others[int(rng.integers(len(others)))] for _ in range(n_objects - len(kinds))]
    box_colours = rng.choice(len(COLORS), size=n_boxes, replace=False)
    cells = rng.choice(16, size=n_objects, replace=False)

    objects: list[SceneObject] = []
    n_box_seen = 0
    for kind, cell in zip(kinds, cells, strict=True):
        if kind == "box":
            colour = COLORS[int(box_colours[n_box_seen])]
            n_box_seen += 1
        else:
            colour = COLORS[int(rng.integers(len(COLORS)))]
        size = int(rng.integers(44, 65))
        cy, cx = divmod(int(cell), 4)
        x0 = cx * CELL_PX + int(rng.integers(3, CELL_PX - size - 3 + 1))
        y0 = cy * CELL_PX + int(rng.integers(3, CELL_PX - size - 3 + 1))
        rgb = _jitter(rng, COLOR_RGB[colour])
        _draw_shape(draw, kind, x0, y0, size, rgb)
        digit = row = None
        if kind == "box":
            frame = max(4, int(round(0.09 * size)))
            inner = size - 2 * frame
            light = int(rng.integers(225, 256))
            draw.rectangle(
                (x0 + frame, y0 + frame, x0 + frame + inner - 1, y0 + frame + inner - 1), fill=(light, light, light)
            )
            row = int(allowed[int(rng.integers(len(allowed)))])
            digit = int(glyph_labels[row])
            side = max(8, int(round(inner * 0.9)))
            ink = Image.fromarray(glyphs[row]).resize((side, side), Image.BILINEAR)
            ink_mask = Image.fromarray(np.clip(np.asarray(ink) * 255.0, 0, 255).astype(np.uint8))
            dark = int(rng.integers(0, 50))
            offset = (inner - side) // 2
            image.paste(
                (dark, dark, dark),
                (x0 + frame + offset, y0 + frame + offset, x0 + frame + offset + side, y0 + frame + offset + side),
                ink_mask,
            )
        objects.append(
            SceneObject(kind=kind, color=colour, digit=digit, coverage=_coverage(kind, x0, y0, size), glyph=row)
        )

    labels = np.zeros((3, GRID, GRID), dtype=np.int64)
    labels[2] = -100
    stack = np.stack([o.coverage for o in objects])
    best = stack.argmax(axis=0)
    best_cov = stack.max(axis=0)
    for index, obj in enumerate(objects):
        sel = (best == index) & (best_cov >= LABEL_COVERAGE)
        labels[0][sel] = OBJECT_KINDS.index(obj.kind) + 1
        labels[1][sel] = COLORS.index(obj.color) + 1
        if obj.digit is not None:
            labels[2][sel] = obj.digit
    return Scene(pixels=np.asarray(image, dtype=np.uint8), objects=objects, labels=labels)


# ---------------------------------------------------------------------------------------------- questions


def candidate_questions(scene: Scene) -> dict[str, list[QuestionSpec]]:
    """Every well-posed question about `scene`, grouped by kind."""
    objs = scene.objects
    by_kind: dict[str, list[int]] = {}
    by_colour: dict[str, list[int]] = {}
    for i, o in enumerate(objs):
        by_kind.setdefault(o.kind, []).append(i)
        by_colour.setdefault(o.color, []).append(i)
    out: dict[str, list[QuestionSpec]] = {k: [] for k in QUESTION_KINDS}
    for shape in SHAPES:
        idx = by_kind.get(shape, [])
        if len(idx) == 1:
            out["color"].append(QuestionSpec(f"what color is the {shape} ?", objs[idx[0]].color, "color", tuple(idx)))
        if 1 <= len(idx) <= 3:
            out["count"].append(
                QuestionSpec(
                    f"how many {SHAPE_PLURALS[shape]} are there ?", COUNT_WORDS[len(idx) - 1], "count", tuple(idx)
                )
            )
    for colour, idx in by_colour.items():
        if len(idx) == 1:
            out["shape"].append(
                QuestionSpec(f"what shape is the {colour} object ?", objs[idx[0]].kind, "shape", tuple(idx))
            )
    for i in by_kind.get("box", []):
        out["digit"].append(
            QuestionSpec(f"what digit is in the {objs[i].color} box ?", str(objs[i].digit), "digit", (i,))
        )
    return out


def _count_preference(scene: Scene, specs: list[QuestionSpec], rng: np.random.Generator) -> QuestionSpec:
    # The count shape (the one drawn 1-3 times on purpose) balances one/two/three; it is the first
    # object after the boxes.
    n_boxes = sum(o.kind == "box" for o in scene.objects)
    count_shape = scene.objects[n_boxes].kind
    for spec in specs:
        if spec.question == f"how many {SHAPE_PLURALS[count_shape]} are there ?":
            return spec
    return specs[int(rng.integers(len(specs)))]


def pick_questions(scene: Scene, rng: np.random.Generator, n: int = 4) -> list[QuestionSpec]:
    """`n` questions of distinct kinds where possible (kinds in random order), repeated kinds otherwise."""
    candidates = candidate_questions(scene)
    available = [k for k in QUESTION_KINDS if candidates[k]]
    order = [available[i] for i in rng.permutation(len(available))]
    chosen: list[QuestionSpec] = []
    used: set[str] = set()
    for i in range(n):
        kind = order[i % len(order)]
        pool = [s for s in candidates[kind] if s.question not in used] or candidates[kind]
        spec = (
            _count_preference(scene, pool, rng)
            if kind == "count" and i < len(order)
            else pool[int(rng.integers(len(pool)))]
        )
        used.add(spec.question)
        chosen.append(spec)
    return chosen


def target_mask(scene: Scene, spec: QuestionSpec) -> np.ndarray:
    """(16, 16) bool: tokens covered at least `TARGET_COVERAGE` by any of the question's targets."""
    return np.stack([scene.objects[i].coverage for i in spec.targets]).max(axis=0) >= TARGET_COVERAGE


def _question_set(n: int, seed: int, glyph_split: str, per_scene: int) -> list[SyntheticQuestion]:
    out: list[SyntheticQuestion] = []
    scene_id = 0
    while len(out) < n:
        rng = np.random.default_rng([seed, scene_id])
        scene = render_scene(rng, glyph_split=glyph_split)
        image = Image.fromarray(scene.pixels)
        for spec in pick_questions(scene, rng, per_scene):
            if len(out) < n:
                out.append(
                    SyntheticQuestion(
                        image=image,
                        question=spec.question,
                        answer=spec.answer,
                        kind=spec.kind,
                        target_mask=target_mask(scene, spec),
                        scene_id=scene_id,
                    )
                )
        scene_id += 1
    return out


def heldout_set(n: int = 2000, seed: int = HELDOUT_SEED) -> list[SyntheticQuestion]:
    """`n` held-out questions (4 per scene) on held-out digit glyphs; never seen in training."""
    return _question_set(n, seed, "heldout", 4)


def calibration_set(n: int, seed: int = CALIBRATION_SEED) -> list[SyntheticQuestion]:
    """`n` calibration questions (2 per scene) on training glyphs, from a seed disjoint from the held-out one."""
    if seed == HELDOUT_SEED:
        raise ValueError("the calibration seed must differ from the held-out seed")
    return _question_set(n, seed, "train", 2)


def heldout_scene(scene_id: int, seed: int = HELDOUT_SEED, noise: int = 10) -> tuple[Scene, list[QuestionSpec]]:
    """The held-out scene `scene_id` and its 4 questions (as `heldout_set` draws them), optionally re-rendered
    with less background noise (the same objects and questions: noise is the last draw of nothing else)."""
    rng = np.random.default_rng([seed, scene_id])
    scene = render_scene(rng, glyph_split="heldout", noise=noise)
    return scene, pick_questions(scene, rng, 4)


def training_scene(worker: int, counter: int, per_scene: int = 4) -> tuple[Scene, list[QuestionSpec]]:
    """The training stream's scene `counter` of data worker `worker` (training glyphs)."""
    rng = np.random.default_rng([TRAINING_SEED, worker, counter])
    scene = render_scene(rng, glyph_split="train")
    return scene, pick_questions(scene, rng, per_scene)
