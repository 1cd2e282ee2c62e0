"""Whether a question or a picture is within the built-in model's world, so hawk can say when its answer is a guess.

The built-in model learnt a 68-word vocabulary and synthetic scenes only (flat shapes in 7 colours, boxes with
digits, on a muted grey background): a word outside the vocabulary reaches it as the unknown token, and a photo
is nothing like what it saw. Neither is an error (the model still answers); both are worth a note.

`scene_likeness`: the share of pixels (at 112x112) that are near-grey (the background, white boxes, black ink:
channel spread at most `GREY_SPREAD`) or near one of the 7 object colours (within `COLOUR_DISTANCE`). On 1000
generated held-out scenes it was at least 0.879 (median 0.98); on the three photos in sample_images/ 0.26-0.68,
and 0.68 on uniform noise. `SCENE_LIKENESS_MIN` sits between. Greyscale photos pass as scene-like: the test is
about colour, the cheapest signal that separates the two worlds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hawk_cli.synthetic.scenes import COLOR_RGB

GREY_SPREAD = 45
COLOUR_DISTANCE = 50
SCENE_LIKENESS_MIN = 0.8
_PALETTE = np.array(list(COLOR_RGB.values()), dtype=np.float64)


def unknown_words(tokenizer, text: str) -> list[str]:
    """The words of `text` the tokenizer maps to its unknown token, in order, each once (adjacent unknown pieces
    joined: "zebra's" is one word)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans: list[list[int]] = []
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
        if token != unk:
            continue
        if spans and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return list(dict.fromkeys(text[start:end] for start, end in spans))


def scene_likeness(image: Image.Image) -> float:
    """Share of pixels that look like the built-in scenes' (see the module docstring), in [0, 1]."""
    pixels = np.asarray(image.convert("RGB").resize((112, 112), Image.BILINEAR), dtype=np.float64)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    distance = np.sqrt(((pixels[..., None, :] - _PALETTE) ** 2).sum(axis=-1)).min(axis=-1)
    return float(((spread <= GREY_SPREAD) | (distance <= COLOUR_DISTANCE)).mean())


def builtin_notes(tokenizer, question: str, images) -> list[str]:
    """Notes for a request to the built-in model whose question or pictures are outside its world."""
    notes = []
    unknown = unknown_words(tokenizer, question)
    if unknown:
        words = ", ".join(f"'{word}'" for word in unknown[:5])
        notes.append(
            f"the built-in model does not know {words}: it knows 68 words (shapes, colours, digits, "
            "counts; e.g. 'what color is the circle ?'), so its answer is a guess"
        )
    unlike = [index + 1 for index, image in enumerate(images) if scene_likeness(image) < SCENE_LIKENESS_MIN]
    if unlike:
        which = "the picture" if len(images) == 1 else "picture " + ", ".join(map(str, unlike))
        notes.append(
            f"{which} looks unlike the built-in model's synthetic scenes (flat shapes, colours and digits "
            "on grey): it was trained on nothing else, so its answer is a guess; photos need a Qwen2-VL / "
            "Qwen2.5-VL checkpoint ({model})"
        )
    return notes
