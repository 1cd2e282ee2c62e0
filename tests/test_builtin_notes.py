"""The built-in model says when a question or a picture is outside its synthetic world (a note; it still answers)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hawk_cli.synthetic.familiarity import SCENE_LIKENESS_MIN, scene_likeness, unknown_words
from hawk_cli.synthetic.scenes import HELDOUT_SEED, render_scene
from hawk_cli.synthetic.tokenizer import VOCABULARY, build_word_tokenizer

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
TOKENIZER = build_word_tokenizer()
KNOWN = sorted(word for word in VOCABULARY if word.isalpha())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    words=st.lists(
        st.one_of(st.sampled_from(KNOWN), st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=7)),
        min_size=1,
        max_size=8,
    )
)
def test_unknown_words_are_the_words_outside_the_vocabulary(words):
    expected = list(dict.fromkeys(word for word in words if word.lower() not in VOCABULARY))
    assert unknown_words(TOKENIZER, " ".join(words)) == expected


def test_a_possessive_is_one_unknown_word():
    assert unknown_words(TOKENIZER, "what color is the zebra's tail ?") == ["zebra's", "tail"]


def test_generated_scenes_are_scene_like_and_photos_are_not():
    """Scenes drawn here (ids 1000-1099) were not among the 1000 the threshold was read from."""
    scores = [
        scene_likeness(
            Image.fromarray(render_scene(np.random.default_rng([HELDOUT_SEED, i]), glyph_split="heldout").pixels)
        )
        for i in range(1000, 1100)
    ]
    assert min(scores) >= SCENE_LIKENESS_MIN
    for index in range(1, 6):
        assert scene_likeness(Image.open(SAMPLES / f"scene_{index}.png")) >= SCENE_LIKENESS_MIN
    for photo in ("astronaut", "chelsea", "coffee"):
        assert scene_likeness(Image.open(SAMPLES / f"{photo}.png")) < SCENE_LIKENESS_MIN


def test_a_photo_and_unknown_words_get_notes_and_an_answer(capsys):
    code, out, err = run_cli(
        capsys, "run", SAMPLES / "coffee.png", "what colour is the mug ?", "--device", "cpu", "--max-new-tokens", 2
    )
    notes = [line for line in err.splitlines() if line.startswith("hawk: note: ")]
    assert code == 0 and out.strip()
    assert any("does not know 'colour', 'mug'" in note for note in notes)
    assert any(
        "the picture looks unlike the built-in model's synthetic scenes" in note and "(--model)" in note
        for note in notes
    )


def test_a_scene_and_a_known_question_get_no_such_note(capsys):
    code, _, err = run_cli(
        capsys, "run", SAMPLES / "scene_1.png", "what color is the triangle ?", "--device", "cpu", "--max-new-tokens", 2
    )
    assert code == 0 and "does not know" not in err and "looks unlike" not in err


def test_jsonl_records_carry_the_notes(capsys, tmp_path):
    requests = tmp_path / "r.jsonl"
    requests.write_text(
        json.dumps({"id": "photo", "image": str(SAMPLES / "chelsea.png"), "question": "what is it ?"})
        + "\n"
        + json.dumps({"id": "scene", "image": str(SAMPLES / "scene_2.png"), "question": "what color is the cross ?"})
        + "\n"
    )
    code, out, _ = run_cli(capsys, "run", "--input", requests, "--device", "cpu", "--max-new-tokens", 2)
    records = {r["id"]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and "notes" not in records["scene"]
    assert len(records["photo"]["notes"]) == 2 and re.search(r"\(model\)$", records["photo"]["notes"][1])
