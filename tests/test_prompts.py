"""The fast input path (ids expanded in id space, pixels finished on the device) equals the stock path."""

from __future__ import annotations

import pytest
import torch
from tiny_models import DEVICE, random_image, tiny_image_processor, tiny_tokenizer

from hawk_cli.adapters.qwen2_vl.pixels import PixelRecipe
from hawk_cli.adapters.qwen2_vl.prompts import IMAGE_PAD, VIDEO_PAD, _messages, build_inputs, encode_request
from hawk_cli.errors import InputError
from hawk_cli.io.requests import Request

pytestmark = pytest.mark.contract

SIZES = [(64, 48), (300, 200), (1000, 37), (57, 400), (28, 28), (13, 200), (223, 224)]


@pytest.mark.parametrize("width,height", SIZES)
def test_device_finished_patches_are_bitwise_the_stock_processors(width, height):
    processor = tiny_image_processor(max_pixels=448 * 448)
    image = random_image(width, height, seed=width)
    stock = processor(images=[image], return_tensors="pt")
    recipe = PixelRecipe.of(processor)
    resized = recipe.resize(image)
    assert recipe.grid(resized) == tuple(stock["image_grid_thw"][0].tolist())
    patches = recipe.patches([resized], DEVICE)
    assert patches.device.type == DEVICE.type
    assert torch.equal(patches.cpu(), stock["pixel_values"])


def test_a_changed_recipe_gives_different_patches():
    """Negative control: the comparison above sees a one-ulp-scale change of the normalisation."""
    processor = tiny_image_processor()
    image = random_image(64, 48)
    stock = processor(images=[image], return_tensors="pt")["pixel_values"]
    recipe = PixelRecipe.of(processor)
    nudged = PixelRecipe(**{**vars(recipe), "std": tuple(s * (1 + 1e-6) for s in recipe.std)})
    assert not torch.equal(nudged.patches([recipe.resize(image)], "cpu"), stock)


def test_unsupported_or_customised_processors_fall_back_to_stock():
    processor = tiny_image_processor()
    processor.do_normalize = False
    assert PixelRecipe.of(processor) is None
    assert PixelRecipe.of(object()) is None
    encoded = encode_request(tiny_tokenizer(), processor, Request("what ?", (random_image(56, 56),)), defer_pixels=True)
    assert encoded.images_u8 == () and encoded.pixel_values is not None


def _requests():
    frames = tuple(random_image(56, 84, seed=s) for s in range(3))
    return [
        Request("what color is the circle ?", (random_image(64, 48),)),
        Request(
            "how many stars are there ?", (random_image(120, 90, 1), random_image(120, 90, 5), random_image(40, 70, 2))
        ),
        Request("what shape is there ?", (random_image(84, 56, 3),), question_first=True),
        Request("what happens ?", video=frames, fps=2.0),
        Request("what changed ?", (random_image(56, 56, 4),), video=frames[:2], fps=1.0),
    ]


def test_ids_expanded_in_id_space_equal_tokenising_the_written_out_text():
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    requests = _requests()
    inputs = build_inputs(tokenizer, processor, requests)
    texts = []
    for request in requests:
        text = tokenizer.apply_chat_template(_messages(request), add_generation_prompt=True, tokenize=False)
        encoded = encode_request(tokenizer, processor, request)
        grids = [] if encoded.image_grid_thw is None else encoded.image_grid_thw.tolist()
        for grid in grids:
            text = text.replace(IMAGE_PAD, "\0" * (grid[0] * grid[1] * grid[2] // 4), 1)
        if encoded.video_grid_thw is not None:
            t, h, w = encoded.video_grid_thw[0].tolist()
            text = text.replace(VIDEO_PAD, "\1" * (t * h * w // 4), 1)
        texts.append(text.replace("\0", IMAGE_PAD).replace("\1", VIDEO_PAD))
    reference = tokenizer(texts, padding=True, return_tensors="pt", padding_side="left")
    assert torch.equal(inputs.input_ids, reference["input_ids"])
    assert torch.equal(inputs.attention_mask, reference["attention_mask"])
    assert int((inputs.mm_token_type_ids == 1).sum()) == int(inputs.image_grid_thw.prod(-1).sum()) // 4


def test_deferred_pixels_batch_equals_the_stock_batch_after_moving_to_the_device():
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    requests = _requests()
    stock = build_inputs(tokenizer, processor, requests)
    deferred = build_inputs(
        tokenizer, processor, requests, [encode_request(tokenizer, processor, r, defer_pixels=True) for r in requests]
    )
    assert deferred.pixel_values is None and deferred.pending_pixels is not None
    moved = deferred.to(DEVICE)
    assert torch.equal(moved.pixel_values.cpu(), stock.pixel_values)
    for name in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
    ):
        assert torch.equal(getattr(moved, name).cpu(), getattr(stock, name)), name
    assert moved.on_host().input_ids.device.type == "cpu"
    assert torch.equal(moved.on_host().image_grid_thw, stock.image_grid_thw)


def test_mixed_deferred_and_stock_rows_keep_image_order():
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    requests = _requests()[:3]
    encoded = [encode_request(tokenizer, processor, r, defer_pixels=(i != 1)) for i, r in enumerate(requests)]
    mixed = build_inputs(tokenizer, processor, requests, encoded)
    assert mixed.pending_pixels is None
    assert torch.equal(mixed.pixel_values, build_inputs(tokenizer, processor, requests).pixel_values)


def test_a_question_holding_the_image_placeholder_is_refused():
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    with pytest.raises(InputError, match="placeholder"):
        build_inputs(tokenizer, processor, [Request(f"what is {IMAGE_PAD} ?", (random_image(56, 56),))])
