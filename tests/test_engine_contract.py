"""Engine contract: hawk's pruned decoding equals the model's own generate with dropped tokens masked out.

Tiny fp32 models built in code; the oracle is stock `generate` on the unpruned prompt (stock vision, stock
embeddings, stock decode positions) with a holey attention mask, so it shares no code with hawk's loop.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import DEVICE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer
from hawk_cli.scorers.base import Scorer
from hawk_cli.tasks.oracle import check_against_oracle, compare_step_logits

pytestmark = pytest.mark.contract
EOS = {2}
TOL = TOLERANCE
FAMILIES = ["qwen2_5_vl", "qwen2_vl"]


class RandomScores(Scorer):
    """Test double: random scores, so keep sets are arbitrary and non-contiguous."""

    name = "test-random"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def score(self, inputs):
        generator = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(inputs.visual_mask.shape, generator=generator).to(inputs.visual_mask.device)
        return scores.masked_fill(~inputs.visual_mask, float("-inf"))


class RenumberingAdapter(QwenVLAdapter):
    """Negative control: feeds the pruned prompt contiguous positions, as a naive implementation would."""

    def decode(self, embeds, position_ids, attention_mask, cache, extras=None):
        batch, length = embeds.shape[:2]
        past = int(cache.get_seq_length())
        contiguous = torch.arange(past, past + length, device=embeds.device).view(1, 1, length).expand(3, batch, length)
        return super().decode(embeds, contiguous, attention_mask, cache, extras)


def _setup(family="qwen2_5_vl", attn="sdpa", requests=None):
    model, tokenizer = tiny_model(family, attn), tiny_tokenizer()
    requests = requests or [Request("what color is the circle ?", (random_image(224, 224, 1),))]
    return model, tokenizer, build_inputs(tokenizer, tiny_image_processor(), requests).to(DEVICE)


def _batch_requests():
    return [
        Request("what color is the circle ?", (random_image(224, 224, 1),)),
        Request("how many stars are there ?", (random_image(112, 168, 2),)),
        Request("what digit is in the red box ?", (random_image(168, 112, 3),)),
    ]


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_zero_is_identical_to_stock_generate(family, attn, cache):
    model, tokenizer, inputs = _setup(family, attn, _batch_requests())
    ours = generate(
        adapter_for(model, tokenizer),
        inputs,
        None,
        GenerationSettings(ratio=0.0, max_new_tokens=6, cache=cache, record_logits=True),
        EOS,
    )
    stock = model.generate(
        input_ids=inputs.input_ids,
        attention_mask=inputs.attention_mask,
        mm_token_type_ids=inputs.mm_token_type_ids,
        pixel_values=inputs.pixel_values,
        image_grid_thw=inputs.image_grid_thw,
        max_new_tokens=6,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        eos_token_id=2,
    )
    comparison = compare_step_logits(ours.step_logits, list(stock.logits))
    assert comparison.passed(TOL), comparison
    if comparison.diverged_at_step is None:  # same greedy path: same tokens and as many steps
        stock_tokens = stock.sequences[:, inputs.input_ids.shape[1] :]
        for row, tokens in enumerate(ours.tokens):
            assert tokens == stock_tokens[row, : len(tokens)].tolist()
        assert len(ours.step_logits) == len(stock.logits)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_logits_match_unpruned_with_dropped_tokens_masked(family, attn, cache):
    model, tokenizer, inputs = _setup(family, attn, _batch_requests())
    adapter = adapter_for(model, tokenizer)
    settings = GenerationSettings(ratio=0.8, max_new_tokens=6, cache=cache, record_logits=True)
    pruned = generate(adapter, inputs, HawkScorer(), settings, EOS)
    oracle = adapter.masked_generate(inputs, pruned.keep_mask.to(DEVICE), 6, EOS)
    assert all(row.visual_tokens_kept < row.visual_tokens for row in pruned.rows)  # pruning happened
    comparison = compare_step_logits(pruned.step_logits, oracle)
    assert comparison.passed(TOL), comparison
    assert comparison.diverged_at_step is not None or len(pruned.step_logits) == len(oracle)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ratio", [0.3, 0.7, 0.95])
def test_random_noncontiguous_keep_sets_match_oracle(ratio, seed):
    model, tokenizer, inputs = _setup(requests=_batch_requests())
    report = check_against_oracle(adapter_for(model, tokenizer), inputs, RandomScores(seed), ratio, 5, EOS, TOL)
    assert report.visual_tokens_kept < report.visual_tokens
    assert report.passed, report


def test_renumbered_positions_fail_the_oracle_check():
    model, tokenizer, inputs = _setup(requests=_batch_requests())
    honest = adapter_for(model, tokenizer)
    broken = RenumberingAdapter(model, honest.tokens)
    assert check_against_oracle(honest, inputs, HawkScorer(), 0.8, 4, EOS, TOL).passed
    report = check_against_oracle(broken, inputs, HawkScorer(), 0.8, 4, EOS, TOL)
    assert not report.passed
    assert max(report.step_max_abs_logit_diff) > TOL  # outside the tolerance, not just a near-tie flip


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_rows_equal_single_rows(family):
    model, tokenizer = tiny_model(family), tiny_tokenizer()
    adapter, processor = adapter_for(model, tokenizer), tiny_image_processor()
    requests = _batch_requests()
    settings = GenerationSettings(ratio=0.8, max_new_tokens=6, record_logits=True)
    batched = generate(adapter, build_inputs(tokenizer, processor, requests).to(DEVICE), HawkScorer(), settings, EOS)
    kept_counts = {row.visual_tokens_kept for row in batched.rows}
    assert len(kept_counts) > 1  # rows really differ in kept count
    for index, request in enumerate(requests):
        alone = generate(adapter, build_inputs(tokenizer, processor, [request]).to(DEVICE), HawkScorer(), settings, EOS)
        assert alone.tokens[0] == batched.tokens[index]
        assert alone.rows[0] == batched.rows[index]
        for mine, theirs in zip(alone.step_logits, batched.step_logits, strict=False):
            assert (mine[0] - theirs[index]).abs().max() <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_two_images_in_one_prompt_match_oracle(family):
    requests = [
        Request("how many stars are there ?", (random_image(224, 112, 4), random_image(112, 224, 5))),
        Request("what color is the circle ?", (random_image(168, 168, 6),)),
    ]
    model, tokenizer, inputs = _setup(family, requests=requests)
    report = check_against_oracle(adapter_for(model, tokenizer), inputs, HawkScorer(), 0.8, 5, EOS, TOL)
    assert inputs.image_grid_thw.shape[0] == 3
    assert report.passed, report


def test_decode_positions_equal_unpruned_run():
    model, tokenizer, inputs = _setup(requests=_batch_requests())
    adapter = adapter_for(model, tokenizer)
    prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
    _, rope_deltas = model.model.get_rope_index(
        inputs.input_ids,
        inputs.mm_token_type_ids,
        image_grid_thw=inputs.image_grid_thw,
        attention_mask=inputs.attention_mask,
    )
    stock_next = inputs.attention_mask.sum(-1) + rope_deltas.view(-1).to(DEVICE)  # unpadded length + rope_deltas
    assert torch.equal(adapter.next_positions(prefill.position_ids, prefill.attention_mask), stock_next)
