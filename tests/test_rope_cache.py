"""Rotary ids computed one row layout at a time (RopeIndexCache) equal the model's batched get_rope_index."""

from __future__ import annotations

import pytest
import torch
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters.qwen2_vl.adapter import RopeIndexCache
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.io.requests import Request

pytestmark = pytest.mark.contract


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def model(request):
    return tiny_model(request.param, device="cpu", dtype=torch.float32)


def _stock(model, inputs) -> torch.Tensor:
    args = dict(
        image_grid_thw=inputs.image_grid_thw, video_grid_thw=inputs.video_grid_thw, attention_mask=inputs.attention_mask
    )
    if model.config.model_type == "qwen2_5_vl":
        args["second_per_grid_ts"] = inputs.second_per_grid_ts
    return model.model.get_rope_index(inputs.input_ids, inputs.mm_token_type_ids, **args)[0]


def _cache(model) -> RopeIndexCache:
    return RopeIndexCache(model.model.get_rope_index, model.config.model_type == "qwen2_5_vl")


def _batch(requests):
    return build_inputs(tiny_tokenizer(), tiny_image_processor(), requests)


def test_rows_one_layout_at_a_time_equal_the_batched_stock_call_and_stay_equal_when_cached(model):
    frames = tuple(random_image(56, 84, seed=s) for s in range(4))
    requests = [
        Request("what color is the circle ?", (random_image(64, 48),)),
        Request("how many stars are there ?", (random_image(120, 90, 1), random_image(40, 70, 2))),
        Request("what shape is there ?", (random_image(84, 56, 3),), question_first=True),
        Request("what happens ?", video=frames, fps=4.0),  # fractional second_per_grid_t (0.5)
        Request("what changed ?", (random_image(56, 56, 4),), video=frames[:2], fps=1.0),
        Request("what color is the circle ?", (random_image(64, 48, 9),)),
    ]  # layout of row 0 again
    inputs = _batch(requests)
    cache = _cache(model)
    reference = _stock(model, inputs)
    assert torch.equal(cache(inputs), reference)
    assert len(cache._rows) == 5  # the repeated layout was computed once
    assert torch.equal(cache(inputs), reference)  # every row from the cache now
    for size in (1, 3):
        alone = _batch(requests[:size])
        assert torch.equal(cache(alone), _stock(model, alone))


def test_rows_with_equal_token_counts_but_other_grids_get_their_own_ids(model):
    """Negative control: 4x8 and 8x4 patch grids give the same number of tokens (the same runs of token types)
    but different ids; a cache keyed on token runs alone would hand the first row's ids to the second."""
    wide = _batch([Request("what ?", (random_image(112, 56),))])
    tall = _batch([Request("what ?", (random_image(56, 112),))])
    assert torch.equal(wide.input_ids, tall.input_ids) and not torch.equal(_stock(model, wide), _stock(model, tall))
    cache = _cache(model)
    assert torch.equal(cache(wide), _stock(model, wide))
    assert torch.equal(cache(tall), _stock(model, tall))
