"""The library face (`hawk_cli.api`): the same answers as `hawk run` and the masked oracle, seeded sampling through
transformers' processors, a user's own processor output, clear errors, and runnable docstring examples."""

from __future__ import annotations

import doctest
import json

import pytest
import torch
from cli_helpers import run_cli
from tiny_models import random_image

from hawk_cli import api
from hawk_cli.errors import HawkError, InputError, UsageError
from hawk_cli.io.requests import Request

QUESTION = "what color is the circle ?"
STEPS = 6


@pytest.fixture(scope="module")
def model(model_dir):
    return api.load(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def image():
    return random_image(224, 224, 7)


def _full_keep(model, request, generation) -> torch.Tensor:
    """[1, L] keep mask over the whole prompt from the answer's per-visual-token keep flags."""
    inputs = model.session.build_inputs([request])
    visual = (inputs.mm_token_type_ids > 0) & inputs.attention_mask.bool()
    keep = inputs.attention_mask.bool() & ~visual
    keep[visual] = generation.visual_keep
    return keep


def _oracle_tokens(model, request, keep: torch.Tensor) -> list[int]:
    """Greedy tokens of the model's OWN generate on the unpruned prompt with the dropped tokens masked out."""
    inputs = model.session.build_inputs([request])
    with torch.inference_mode():
        logits = model.session.adapter.masked_generate(inputs, keep, STEPS, model.session.eos_ids)
    tokens = []
    for step in logits:
        tokens.append(int(step[0].argmax()))
        if tokens[-1] in model.session.eos_ids:
            break
    return tokens


def test_greedy_through_the_api_equals_hawk_run_and_the_masked_oracle(capsys, model, model_dir, image, tmp_path):
    out = model.generate(image, QUESTION, ratio=0.8, max_new_tokens=STEPS, scorer="hawk-uniform")
    assert (out.stats.visual_tokens, out.stats.visual_tokens_kept) == (64, 13)
    assert int(out.visual_keep.sum()) == 13

    path = tmp_path / "scene.png"
    image.save(path)
    code, stdout, _ = run_cli(
        capsys,
        "run",
        path,
        QUESTION,
        "--model",
        model_dir,
        "--json",
        "--ratio",
        "0.8",
        "--max-new-tokens",
        STEPS,
        "--scorer",
        "hawk-uniform",
        "--device",
        "cpu",
    )
    record = json.loads(stdout)
    assert code == 0
    assert record["answer"] == out.text and record["generated_tokens"] == len(out.tokens)
    assert record["visual_tokens_kept"] == out.stats.visual_tokens_kept

    request = Request(question=QUESTION, images=(image,))
    keep = _full_keep(model, request, out)
    assert _oracle_tokens(model, request, keep) == out.tokens
    # Negative control: the oracle keeping the dropped visual tokens instead answers differently.
    inputs = model.session.build_inputs([request])
    visual = (inputs.mm_token_type_ids > 0) & inputs.attention_mask.bool()
    other = keep.clone()
    other[visual] = ~keep[visual]
    assert _oracle_tokens(model, request, other) != out.tokens


def _stock_sample(model, request, seed: int, **sampling) -> list[int]:
    """transformers' own generate, sampling from the global generator seeded with `seed`, unpruned prompt."""
    session = model.session
    inputs = session.build_inputs([request])
    torch.manual_seed(seed)
    with torch.inference_mode():
        output = session.model.generate(
            **session.adapter.stock_generate_inputs(inputs),
            max_new_tokens=STEPS,
            do_sample=True,
            pad_token_id=session.adapter.tokens.pad,
            eos_token_id=sorted(session.eos_ids),
            **sampling,
        )
    tokens = output[0, inputs.input_ids.shape[1] :].tolist()
    end = next((i + 1 for i, t in enumerate(tokens) if t in session.eos_ids), len(tokens))
    return tokens[:end]


SAMPLING = dict(temperature=1.7, top_k=30, top_p=0.95, repetition_penalty=1.3)


def test_seeded_sampling_is_reproducible_differs_from_greedy_and_equals_transformers_sampling(model, image):
    request = Request(question=QUESTION, images=(image,))
    rng_before = torch.get_rng_state()
    first = model.generate(image, QUESTION, ratio=0.0, max_new_tokens=STEPS, do_sample=True, seed=11, **SAMPLING)
    again = model.generate(image, QUESTION, ratio=0.0, max_new_tokens=STEPS, do_sample=True, seed=11, **SAMPLING)
    assert torch.equal(torch.get_rng_state(), rng_before)  # torch's global generator was not used
    greedy = model.generate(image, QUESTION, ratio=0.0, max_new_tokens=STEPS)
    assert first.tokens == again.tokens and first.sampling["seed"] == 11
    assert first.tokens != greedy.tokens
    # Unpruned, hawk's logits equal the stock model's, so its draws equal transformers' generate with the same
    # processors and seed; a different seed draws differently (negative control for the comparison).
    assert first.tokens == _stock_sample(model, request, 11, **SAMPLING)
    assert first.tokens != _stock_sample(model, request, 12, **SAMPLING)


def test_a_sample_does_not_depend_on_its_batch_mates(model, image):
    other = random_image(160, 224, 3)
    alone = model.generate(image, QUESTION, max_new_tokens=STEPS, do_sample=True, seed=4, **SAMPLING)
    batch = model.generate(
        [other, image],
        ["how many stars are there ?", QUESTION],
        max_new_tokens=STEPS,
        do_sample=True,
        seed=4,
        **SAMPLING,
    )
    assert batch[1].tokens == alone.tokens and batch[1].stats == alone.stats


def test_repetition_penalty_alone_changes_greedy_decoding_as_transformers_does(model, image):
    request = Request(question=QUESTION, images=(image,))
    penalised = model.generate(image, QUESTION, ratio=0.0, max_new_tokens=STEPS, repetition_penalty=3.0)
    session = model.session
    inputs = session.build_inputs([request])
    with torch.inference_mode():
        output = session.model.generate(
            **session.adapter.stock_generate_inputs(inputs),
            max_new_tokens=STEPS,
            do_sample=False,
            repetition_penalty=3.0,
            pad_token_id=session.adapter.tokens.pad,
            eos_token_id=sorted(session.eos_ids),
        )
    stock = output[0, inputs.input_ids.shape[1] :].tolist()
    assert penalised.tokens == stock[: len(penalised.tokens)]
    assert penalised.tokens != model.generate(image, QUESTION, ratio=0.0, max_new_tokens=STEPS).tokens


def _processor_output(model, images: list, questions: list[str], padding_side: str):
    """What the stock Qwen processor returns for these prompts (its recipe: chat template, each image pad token
    written out once per merged patch, the tokenizer, the image processor), right padded as processors often are.
    The stock processor class itself needs torchvision's video processor, which does not import beside the CPU
    torch wheel."""
    from transformers import BatchFeature

    tokenizer, processor = model.session.tokenizer, model.session.loaded.image_processor
    texts = []
    for image, question in zip(images, questions, strict=True):
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
        texts.append(text.replace("<|image_pad|>", "<|image_pad|>" * (int(grid.prod()) // processor.merge_size**2)))
    encoded = tokenizer(texts, padding=True, padding_side=padding_side, return_tensors="pt")
    pixels = processor(images=images, return_tensors="pt")
    return BatchFeature({**encoded, **pixels})


def test_a_user_built_processor_output_gives_the_same_answers_as_hawks_own_inputs(model, image):
    images = [image, random_image(160, 224, 3)]
    questions = [QUESTION, "how many stars are there ?"]
    own = model.generate(images, questions, max_new_tokens=STEPS, scorer="hawk-uniform")
    for side in ("right", "left"):
        features = _processor_output(model, images, questions, side)
        theirs = model.generate(inputs=features, max_new_tokens=STEPS, scorer="hawk-uniform")
        assert [g.tokens for g in theirs] == [g.tokens for g in own]
        assert [g.stats for g in theirs] == [g.stats for g in own]
    assert features["attention_mask"][1].sum() < features["attention_mask"].shape[1]  # the rows were padded


def test_chat_messages_equal_the_question_form_and_a_system_prompt_replaces_the_default(model, image):
    plain = model.generate(image, QUESTION, max_new_tokens=STEPS)
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    assert model.generate(messages=chat, max_new_tokens=STEPS).tokens == plain.tokens
    with_system = [{"role": "system", "content": "answer in one word ."}] + chat
    assert model.generate(messages=with_system, max_new_tokens=STEPS).stats.prompt_tokens != plain.stats.prompt_tokens


def test_prompts_without_an_image_run_unpruned_beside_pruned_ones(model, image):
    outs = model.generate([image, None], [QUESTION, "how many stars are there ?"], max_new_tokens=2)
    assert outs[0].stats.visual_tokens_kept == 13 and outs[0].ratio == 0.8
    assert outs[1].stats.visual_tokens == 0 and outs[1].ratio == 0.0


def test_an_already_loaded_model_and_processor_are_used_as_they_are(model_dir, image, model):
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    mine = AutoModelForImageTextToText.from_pretrained(model_dir)
    wrapped = api.load(
        mine,
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        image_processor=AutoImageProcessor.from_pretrained(model_dir, backend="pil"),
    )
    assert wrapped.session.model is mine and wrapped.session.loaded.device == torch.device("cpu")
    assert (
        wrapped.generate(image, QUESTION, max_new_tokens=STEPS, scorer="hawk-uniform").tokens
        == model.generate(image, QUESTION, max_new_tokens=STEPS, scorer="hawk-uniform").tokens
    )


def test_head_weights_as_values_are_checked_against_the_model(model, image):
    out = model.generate(image, QUESTION, max_new_tokens=2, scorer="hawk", weights=[0.1, 0.2, 0.3, 0.4])
    assert out.scorer == {"scorer": "hawk", "layer": 0, "head_weights": "user"}
    with pytest.raises(InputError, match="4"):
        model.generate(image, QUESTION, scorer="hawk", weights=[0.5, 0.5])


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(ratio=1.5), UsageError, "ratio must be in [0, 1)"),
        (dict(max_new_tokens=0), UsageError, "max_new_tokens must be at least 1"),
        (dict(do_sample=True, temperature=0), UsageError, "temperature must be a number greater than 0"),
        (dict(top_p=1.5), UsageError, "top_p must be a number in (0, 1]"),
        (dict(top_k=-1), UsageError, "top_k must be a non-negative integer"),
        (dict(seed=-3), UsageError, "seed must be a non-negative integer"),
        (dict(scorer="nope"), UsageError, "unknown scorer 'nope'"),
        (dict(batch_size=0), UsageError, "batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_raise_errors_in_the_librarys_words(model, image, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        model.generate(image, QUESTION, **kwargs)
    assert fragment in str(raised.value) and "--" not in str(raised.value)
    assert "--" not in raised.value.render()


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda m, im: m.generate(im, QUESTION, messages=[{"role": "user", "content": "x"}]), "exactly one of"),
        (lambda m, im: m.generate([im], [QUESTION, QUESTION]), "one entry of images per question"),
        (lambda m, im: m.generate(42, QUESTION), "cannot use a int as an image"),
        (lambda m, im: m.generate("/nonexistent.png", QUESTION), "does not exist"),
        (lambda m, im: m.generate(messages=[{"role": "robot", "content": "x"}]), "unknown chat role"),
        (lambda m, im: api.load(torch.nn.Linear(2, 2)), "needs its tokenizer and image processor"),
    ],
)
def test_bad_inputs_name_the_problem_and_the_fix(model, image, call, fragment):
    with pytest.raises(HawkError) as raised:
        call(model, image)
    assert fragment in str(raised.value) and raised.value.fix


def test_docstring_examples_run():
    results = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 10 and results.failed == 0


def test_kept_counts_per_image_add_up_to_the_row_budget(model, image):
    out = model.generate([image, random_image(112, 112, 5)], QUESTION, ratio=0.5, max_new_tokens=2)
    assert [total for _, total in out.kept_per_image] == [64, 16]
    assert sum(kept for kept, _ in out.kept_per_image) == out.stats.visual_tokens_kept == 40


def test_pixel_bounds_change_the_visual_token_count_on_a_copy_of_the_processor(model_dir, model, image):
    small = api.load(str(model_dir), device="cpu", max_pixels=112 * 112)
    assert small.generate(image, QUESTION, ratio=0.0, max_new_tokens=1).stats.visual_tokens == 16
    assert model.generate(image, QUESTION, ratio=0.0, max_new_tokens=1).stats.visual_tokens == 64
    with pytest.raises(UsageError, match="min_pixels 90000 is above max_pixels"):
        api.load(str(model_dir), device="cpu", min_pixels=300 * 300, max_pixels=112 * 112)
