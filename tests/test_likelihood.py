"""Scoring given answers after a pruned prompt (`engine.likelihood`, `HawkModel.loglikelihood`): unpruned it is the
model's own forward pass over prompt + answer; pruned it is what hawk's greedy generation computed for the same
tokens (itself checked against the masked and compaction oracles)."""

from __future__ import annotations

import pytest
import torch
from tiny_models import DEVICE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.likelihood import score_continuations
from hawk_cli.errors import InputError, UsageError
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "qwen3_5"]  # plain mRoPE; DeepStack extras; hybrid linear attention
REQUESTS = [
    Request("what color is the circle ?", (random_image(224, 224, 1),)),
    Request("how many stars are there ?", (random_image(112, 168, 2),)),
]


def _setup(family):
    model, tokenizer = tiny_model(family), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    prompts = adapter.prompts(tokenizer, tiny_image_processor(family=family))
    return model, tokenizer, adapter, prompts


def _stock_logprob(model, adapter, prompts, request, continuation):
    """log P(continuation | prompt) from the model's own forward over the unpadded prompt + continuation."""
    kwargs = adapter.stock_generate_inputs(prompts.collate([request]).to(DEVICE))
    extra = torch.tensor([continuation], device=DEVICE)
    kwargs["input_ids"] = torch.cat([kwargs["input_ids"], extra], dim=1)
    kwargs["attention_mask"] = torch.cat([kwargs["attention_mask"], torch.ones_like(extra)], dim=1)
    if "mm_token_type_ids" in kwargs:
        kwargs["mm_token_type_ids"] = torch.cat([kwargs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    with torch.inference_mode():
        logits = model(**kwargs).logits[0].float()
    start = kwargs["input_ids"].shape[1] - len(continuation) - 1
    predicted = logits[start : start + len(continuation)]
    return float(torch.log_softmax(predicted, dim=-1).gather(1, extra[0][:, None]).sum())


@pytest.mark.contract
@pytest.mark.parametrize("family", FAMILIES)
def test_unpruned_scores_equal_the_models_own_forward_over_prompt_and_answer(family):
    model, tokenizer, adapter, prompts = _setup(family)
    continuations = [[5, 9, 11], [7]]  # different lengths: the shorter row is right-padded
    inputs = prompts.collate(REQUESTS).to(DEVICE)  # different prompt lengths: left padding
    scores, stats = score_continuations(adapter, inputs, None, continuations, ratio=0.0)
    for request, continuation, score in zip(REQUESTS, continuations, scores, strict=True):
        expected = _stock_logprob(model, adapter, prompts, request, continuation)
        assert abs(score.logprob - expected) <= 10 * TOLERANCE * len(continuation), (score.logprob, expected)
        assert score.tokens == len(continuation)
    assert [s.visual_tokens_kept for s in stats] == [s.visual_tokens for s in stats]
    # Negative control: another answer has another likelihood under the same oracle.
    other = _stock_logprob(model, adapter, prompts, REQUESTS[0], [6, 9, 11])
    assert abs(scores[0].logprob - other) > 1e-3


@pytest.mark.contract
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_scores_equal_what_greedy_generation_computed_for_the_same_tokens(family):
    _, tokenizer, adapter, prompts = _setup(family)
    inputs = prompts.collate(REQUESTS).to(DEVICE)
    settings = GenerationSettings(ratio=0.8, max_new_tokens=4, record_logits=True)
    greedy = generate(adapter, inputs, HawkScorer(), settings, set())  # no end token: 4 tokens per row
    steps = torch.stack(greedy.step_logits, dim=1).float().log_softmax(dim=-1)  # [B, T, V]
    scores, stats = score_continuations(adapter, inputs, HawkScorer(), greedy.tokens, ratio=0.8)
    for row, (tokens, score) in enumerate(zip(greedy.tokens, scores, strict=True)):
        expected = float(steps[row, torch.arange(len(tokens)), torch.tensor(tokens)].sum())
        assert abs(score.logprob - expected) <= 10 * TOLERANCE * len(tokens), (score.logprob, expected)
        assert score.greedy
    assert [s.visual_tokens_kept for s in stats] == [r.visual_tokens_kept for r in greedy.rows]
    # A different last token: the same prefix, so its score is the prefix's plus that token's step log-probability,
    # and greedy decoding would not write it.
    last = greedy.tokens[0][-1]
    other = (last + 1) % steps.shape[-1]
    changed = [greedy.tokens[0][:-1] + [other], greedy.tokens[1]]
    rescored, _ = score_continuations(adapter, inputs, HawkScorer(), changed, ratio=0.8)
    expected = float(steps[0, torch.arange(3), torch.tensor(greedy.tokens[0][:-1])].sum() + steps[0, 3, other])
    assert abs(rescored[0].logprob - expected) <= 10 * TOLERANCE * 4
    assert not rescored[0].greedy and rescored[1].greedy
    # Negative control: unpruned, the same tokens score differently (the pruning is what was compared above).
    unpruned, _ = score_continuations(adapter, inputs, None, greedy.tokens, ratio=0.0)
    assert any(abs(a.logprob - b.logprob) > 1e-3 for a, b in zip(unpruned, scores, strict=True))


def test_the_library_scores_answer_text_and_refuses_bad_continuations():
    from hawk_cli import api
    from hawk_cli.synthetic.scenes import heldout_set

    model = api.load("builtin", device="cpu")
    scene = heldout_set(1)[0]
    answer = model.generate(scene.image, scene.question, ratio=0.8)
    scored = model.loglikelihood(scene.image, scene.question, answer.text, ratio=0.8)
    assert scored.greedy and scored.tokens == answer.tokens[:-1]  # the answer's tokens before <|im_end|>
    assert scored.stats.visual_tokens_kept == answer.stats.visual_tokens_kept
    wrong = model.loglikelihood(scene.image, scene.question, "purple", ratio=0.8)
    assert not wrong.greedy and wrong.logprob < scored.logprob
    batch = model.loglikelihood([scene.image, None], [scene.question] * 2, [answer.text] * 2, ratio=0.8, batch_size=1)
    assert batch[0].logprob == pytest.approx(scored.logprob, abs=1e-4)
    assert batch[1].ratio == 0.0 and batch[1].stats.visual_tokens == 0  # no image: nothing to prune
    with pytest.raises(InputError, match="continuation"):
        model.loglikelihood(scene.image, scene.question, "")
    with pytest.raises(InputError, match="as many continuations"):
        model.loglikelihood([scene.image] * 2, [scene.question] * 2, ["red"])
    with pytest.raises(InputError, match="control token"):
        model.loglikelihood(scene.image, scene.question, "red <|im_end|>")
    with pytest.raises(UsageError, match="exactly one of prompt or messages"):
        model.loglikelihood(scene.image, None, "red")
