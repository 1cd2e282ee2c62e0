"""The synthetic scene and question generator of the built-in model."""

from __future__ import annotations

import numpy as np
import pytest

from hawk_cli.synthetic import scenes as S
from hawk_cli.synthetic.tokenizer import VOCABULARY, build_word_tokenizer


@pytest.fixture(scope="module")
def heldout():
    return S.heldout_set(80)


def test_seeded_sets_are_deterministic(heldout):
    again = S.heldout_set(80)
    for a, b in zip(heldout, again, strict=True):
        assert (a.question, a.answer, a.kind, a.scene_id) == (b.question, b.answer, b.kind, b.scene_id)
        assert np.array_equal(a.target_mask, b.target_mask)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other = S.heldout_set(8, seed=S.HELDOUT_SEED + 1)
    assert not np.array_equal(np.asarray(other[0].image), np.asarray(heldout[0].image))


def test_training_stream_is_deterministic():
    a, qa = S.training_scene(3, 17)
    b, qb = S.training_scene(3, 17)
    assert np.array_equal(a.pixels, b.pixels) and qa == qb and np.array_equal(a.labels, b.labels)


def test_questions_images_and_masks_are_well_formed(heldout):
    vocab = set(VOCABULARY)
    tok = build_word_tokenizer()
    unk = tok.convert_tokens_to_ids("[UNK]")
    for q in heldout:
        assert q.kind in S.QUESTION_KINDS
        assert q.answer in vocab and q.answer in S.ANSWERS
        assert q.image.size == (448, 448) and q.image.mode == "RGB"
        ids = tok(q.question, add_special_tokens=False)["input_ids"]
        assert unk not in ids and len(ids) <= 8
        assert q.target_mask.shape == (16, 16) and q.target_mask.dtype == bool
        assert 1 <= q.target_mask.sum() <= 48  # non-empty, at most three objects' worth of tokens
    assert {q.kind for q in heldout} == set(S.QUESTION_KINDS)


def test_answers_match_the_scene_objects():
    for scene_id in range(20):
        scene, specs = S.heldout_scene(scene_id)
        for spec in specs:
            targets = [scene.objects[i] for i in spec.targets]
            if spec.kind == "color":
                assert spec.answer == targets[0].color and f" {targets[0].kind} " in spec.question
                assert sum(o.kind == targets[0].kind for o in scene.objects) == 1
            elif spec.kind == "shape":
                assert spec.answer == targets[0].kind
                assert sum(o.color == targets[0].color for o in scene.objects) == 1
            elif spec.kind == "digit":
                assert targets[0].kind == "box" and spec.answer == str(targets[0].digit)
            else:
                assert spec.answer == ("one", "two", "three")[len(targets) - 1]
                assert all(o.kind == targets[0].kind for o in targets)
                assert sum(o.kind == targets[0].kind for o in scene.objects) == len(targets)


def test_dense_labels_cover_objects():
    scene, _ = S.training_scene(0, 0)
    kind, colour, digit = scene.labels
    assert kind.shape == (16, 16)
    assert (kind > 0).sum() >= len(scene.objects)  # every object owns at least one token
    assert ((kind == 0) == (colour == 0)).all()
    boxes = kind == S.OBJECT_KINDS.index("box") + 1
    assert (digit[boxes] >= 0).all() and (digit[~boxes] == -100).all()


def test_heldout_and_calibration_are_disjoint(heldout):
    assert S.HELDOUT_SEED != S.CALIBRATION_SEED != S.TRAINING_SEED
    calibration = S.calibration_set(40)
    held = {np.asarray(q.image).tobytes() for q in heldout}
    assert not any(np.asarray(q.image).tobytes() in held for q in calibration)
    with pytest.raises(ValueError):
        S.calibration_set(4, seed=S.HELDOUT_SEED)


def test_glyph_split_is_disjoint_and_used():
    train, held = set(S.glyph_rows("train")), set(S.glyph_rows("heldout"))
    assert not train & held and len(train) + len(held) == 1797
    glyphs, labels = S.load_glyphs()
    assert glyphs.shape == (1797, 8, 8) and glyphs.min() >= 0.0 and glyphs.max() <= 1.0
    assert set(labels[sorted(held)]) == set(range(10))
    for i in range(10):
        for obj in S.heldout_scene(i)[0].objects:
            assert obj.glyph is None or obj.glyph in held
        for obj in S.training_scene(0, i)[0].objects:
            assert obj.glyph is None or obj.glyph in train


def test_noise_does_not_change_the_scene_content():
    noisy, q1 = S.heldout_scene(3)
    clean, q2 = S.heldout_scene(3, noise=0)
    assert q1 == q2 and [(o.kind, o.color, o.digit) for o in noisy.objects] == [
        (o.kind, o.color, o.digit) for o in clean.objects
    ]
