"""The `hawk_synthetic` task's content, without lmms-eval: the built-in model's held-out questions as documents,
their images regenerated on demand, and `hawk eval`'s scoring (the answer's first word, exact match)."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

from hawk_cli.synthetic.scenes import HELDOUT_SEED, heldout_scene, heldout_set
from hawk_cli.tasks.evaluation import normalise_answer

DEFAULT_QUESTIONS = 2000  # the whole held-out set, as `hawk eval` uses by default


def documents(n: int = DEFAULT_QUESTIONS, seed: int = HELDOUT_SEED) -> list[dict]:
    """The first `n` held-out questions, in `hawk eval`'s order, as plain records (no pixels: those are redrawn
    per scene when asked for, so 2000 documents hold no 1 GB of images)."""
    return [
        {
            "index": index,
            "question": q.question,
            "answer": q.answer,
            "kind": q.kind,
            "scene_id": q.scene_id,
            "seed": seed,
        }
        for index, q in enumerate(heldout_set(n, seed))
    ]


@lru_cache(maxsize=8)
def scene_image(scene_id: int, seed: int = HELDOUT_SEED) -> Image.Image:
    """The held-out scene's picture, drawn exactly as `heldout_set` draws it (recent scenes kept)."""
    scene, _ = heldout_scene(scene_id, seed)
    return Image.fromarray(scene.pixels)


def doc_to_visual(doc: dict) -> list[Image.Image]:
    return [scene_image(int(doc["scene_id"]), int(doc.get("seed", HELDOUT_SEED)))]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    return str(doc["question"])


def doc_to_target(doc: dict) -> str:
    return str(doc["answer"])


def is_correct(doc: dict, answer: str) -> bool:
    """`hawk eval`'s rule: the first word of the answer, lower case, equals the expected word."""
    return normalise_answer(answer) == doc["answer"]


def process_results(doc: dict, results: list) -> dict:
    answer = results[0] if results else ""
    return {"exact_match": float(is_correct(doc, answer if isinstance(answer, str) else str(answer)))}
