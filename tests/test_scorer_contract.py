"""Every registered scorer honours the contract: [B, L] float32, finite on visual tokens, -inf elsewhere (padding
included), deterministic for a seed, and a prompt scores the same alone as inside a left-padded batch."""

from __future__ import annotations

import pytest
import torch
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.pruning import scoring_inputs
from hawk_cli.engine.roles import token_roles
from hawk_cli.errors import UsageError
from hawk_cli.io.requests import Request
from hawk_cli.scorers import SCORERS, NormScorer, OracleScorer, RandomScorer

REQUESTS = [
    Request("what color is the circle ?", (random_image(112, 112, 1),)),
    Request("how many stars are there ?", (random_image(168, 112, 2),)),
    Request("what digit is in the red box ?", (random_image(56, 84, 3),)),
]


@pytest.fixture(scope="module")
def setup():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    return model, tokenizer, adapter_for(model, tokenizer)


def _inputs(setup, requests, with_targets=True):
    model, tokenizer, adapter = setup
    inputs = build_inputs(tokenizer, tiny_image_processor(), requests)
    with torch.no_grad():
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
    roles = token_roles(prefill.input_ids, prefill.attention_mask, adapter.tokens)
    targets = None
    if with_targets:  # a fixed pattern over each row's visual tokens: every third one is a "target"
        targets = torch.zeros_like(roles.visual)
        for row in range(roles.visual.shape[0]):
            index = roles.visual[row].nonzero().flatten()
            targets[row, index[::3]] = True
    return scoring_inputs(adapter, prefill, roles, targets), roles


@pytest.fixture(scope="module")
def batch(setup):
    return _inputs(setup, REQUESTS)


@pytest.fixture(scope="module")
def singles(setup):
    return [_inputs(setup, [request]) for request in REQUESTS]


def _score(scorer, inputs):
    with torch.no_grad():
        return scorer.score(inputs)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_shape_finiteness_and_minus_inf_off_visual_tokens(batch, name):
    inputs, roles = batch
    scores = _score(SCORERS[name](), inputs)
    assert scores.shape == roles.visual.shape and scores.dtype == torch.float32
    assert torch.isfinite(scores[roles.visual]).all()
    assert torch.isneginf(scores[~roles.visual]).all()  # text, specials and left padding


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_deterministic_for_a_seed(batch, name):
    inputs, _ = batch
    assert torch.equal(_score(SCORERS[name](), inputs), _score(SCORERS[name](), inputs))


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_batch_rows_equal_single_rows(batch, singles, name):
    batch_inputs, batch_roles = batch
    batch_scores = _score(SCORERS[name](), batch_inputs)
    for row, (single_inputs, single_roles) in enumerate(singles):
        single = _score(SCORERS[name](), single_inputs)[0][single_roles.visual[0]]
        batched = batch_scores[row][batch_roles.visual[row]]
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_seeds_and_row_keys_change_random_draws(batch):
    inputs, roles = batch
    base = _score(RandomScorer(seed=0), inputs)
    assert not torch.equal(base, _score(RandomScorer(seed=1), inputs))
    keyed = _score(RandomScorer(seed=0, row_keys=(7, 8, 9)), inputs)
    assert not torch.equal(base[roles.visual], keyed[roles.visual])
    assert torch.equal(keyed, _score(RandomScorer(seed=0, row_keys=(7, 8, 9)), inputs))
    with pytest.raises(UsageError):
        RandomScorer(seed=-1)
    with pytest.raises(UsageError, match="row keys"):
        _score(RandomScorer(row_keys=(1,)), inputs)


def test_norm_is_the_l2_norm_of_each_visual_feature(batch):
    inputs, roles = batch
    scores = _score(NormScorer(), inputs)
    for row in range(roles.visual.shape[0]):
        for position in roles.visual[row].nonzero().flatten().tolist()[:5]:
            expected = float(torch.sqrt((inputs.embeds[row, position].double() ** 2).sum()))
            assert abs(float(scores[row, position]) - expected) < 1e-4


def test_oracle_ranks_every_target_above_every_other_visual_token(batch):
    inputs, roles = batch
    scores = _score(OracleScorer(), inputs)
    for row in range(roles.visual.shape[0]):
        target = inputs.target_mask[row] & roles.visual[row]
        other = roles.visual[row] & ~inputs.target_mask[row]
        assert scores[row][target].min() > scores[row][other].max()


def test_oracle_without_target_masks_is_a_usage_error(setup):
    inputs, _ = _inputs(setup, REQUESTS, with_targets=False)
    with pytest.raises(UsageError, match="hawk eval"):
        _score(OracleScorer(), inputs)


def test_attention_mass_matches_a_loop_over_heads_and_instruction_tokens(batch):
    """hawk-attn by hand: per query head h (key head h // G), per instruction token i, softmax over the row's
    visual tokens of q_i·k_j/sqrt(d); mean over i; weighted sum over heads."""
    import math

    from hawk_cli.scorers import AttentionMassScorer

    inputs, roles = batch
    weights = torch.full((4,), 0.25)  # hawk-attn always weighs heads equally
    scores = _score(AttentionMassScorer(head_weights=torch.tensor([0.1, 0.5, 0.15, 0.25])), inputs)
    with torch.no_grad():
        q, k = inputs.query_key(0)
    heads, groups, dim = q.shape[1], q.shape[1] // k.shape[1], q.shape[-1]
    for row in range(q.shape[0]):
        visual = roles.visual[row].nonzero().flatten().tolist()
        queries = roles.query[row].nonzero().flatten().tolist()
        expected = torch.zeros(len(visual), dtype=torch.float64)
        for h in range(heads):
            per_head = torch.zeros(len(visual), dtype=torch.float64)
            for i in queries:
                logits = torch.tensor(
                    [float(q[row, h, i].double() @ k[row, h // groups, j].double()) / math.sqrt(dim) for j in visual],
                    dtype=torch.float64,
                )
                per_head += torch.softmax(logits, dim=0) / len(queries)
            expected += float(weights[h]) * per_head
        torch.testing.assert_close(scores[row, visual].double(), expected, atol=1e-6, rtol=1e-5)


def test_saliency_prior_adds_standardised_feature_norms(batch):
    from hawk_cli.scorers import AttentionMassPriorScorer, AttentionMassScorer

    inputs, roles = batch
    text_only = _score(AttentionMassScorer(), inputs)
    fused = _score(AttentionMassPriorScorer(), inputs)
    for row in range(roles.visual.shape[0]):
        visual = roles.visual[row]
        mass, norms = text_only[row][visual].double(), inputs.embeds[row][visual].double().norm(dim=-1)
        z = lambda x: (x - x.mean()) / x.std(unbiased=False)  # noqa: E731
        torch.testing.assert_close(fused[row][visual].double(), z(mass) + 0.5 * z(norms), atol=1e-4, rtol=1e-4)
    with pytest.raises(UsageError):
        AttentionMassScorer(saliency_prior=-1.0)
