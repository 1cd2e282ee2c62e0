"""HAWK scores against a plain-loop implementation of the formula; exact keep counts; stable selection."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import DEVICE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.compaction import compact
from hawk_cli.engine.pruning import scoring_inputs
from hawk_cli.engine.roles import token_roles
from hawk_cli.engine.selection import keep_count, select_keep, validate_ratio
from hawk_cli.errors import UsageError
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer, UniformHawkScorer

pytestmark = pytest.mark.contract


def reference_scores(model, embeds, visual, query, weights, head_of_kv):
    """The formula, written out with loops: layer-0 RMSNorm, q/k projections without RoPE, per query head h
    the mean over instruction tokens of q_i·k_j/sqrt(d), L2-normalised over visual tokens, weighted sum."""
    layer = model.model.language_model.layers[0]
    attention = layer.self_attn
    d = attention.head_dim
    x = layer.input_layernorm(embeds)
    q_all, k_all = attention.q_proj(x), attention.k_proj(x)
    out = torch.full(visual.shape, float("-inf"), device=embeds.device)
    for b in range(embeds.shape[0]):
        vis = visual[b].nonzero().flatten().tolist()
        queries = query[b].nonzero().flatten().tolist()
        total = torch.zeros(len(vis), dtype=torch.float64, device=embeds.device)
        for h in range(len(weights)):
            kv = head_of_kv(h)
            per_token = []
            for j in vis:
                k = k_all[b, j, kv * d : (kv + 1) * d].double()
                dots = [float(q_all[b, i, h * d : (h + 1) * d].double() @ k) / math.sqrt(d) for i in queries]
                per_token.append(sum(dots) / len(dots))
            column = torch.tensor(per_token, dtype=torch.float64, device=embeds.device)
            total += float(weights[h]) * column / column.norm()
        out[b, vis] = total.float()
    return out


def _scored(weights):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    inputs = build_inputs(
        tokenizer,
        tiny_image_processor(),
        [
            Request("what color is the circle ?", (random_image(112, 112, 1),)),
            Request("how many stars are there ?", (random_image(168, 112, 2),)),
        ],
    ).to(DEVICE)
    adapter = adapter_for(model, tokenizer)
    with torch.no_grad():
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
        roles = token_roles(prefill.input_ids, prefill.attention_mask, adapter.tokens)
        scores = HawkScorer(head_weights=weights).score(scoring_inputs(adapter, prefill, roles))
    return model, prefill, roles, scores


def test_head_weighted_score_matches_reference_formula():
    weights = torch.tensor([0.1, 0.5, 0.15, 0.25])
    model, prefill, roles, scores = _scored(weights)
    with torch.no_grad():
        expected = reference_scores(
            model, prefill.inputs_embeds, roles.visual, roles.query, weights, head_of_kv=lambda h: h // 2
        )
    visual = roles.visual
    assert torch.isinf(scores[~visual]).all()
    assert torch.allclose(scores[visual], expected[visual], atol=1e-5)


def test_modulo_head_mapping_is_caught_by_the_reference_check():
    """Negative control: pairing query head h with kv head h % G must fail the same comparison."""
    weights = torch.tensor([0.1, 0.5, 0.15, 0.25])
    model, prefill, roles, scores = _scored(weights)
    with torch.no_grad():
        wrong = reference_scores(
            model, prefill.inputs_embeds, roles.visual, roles.query, weights, head_of_kv=lambda h: h % 2
        )
    assert not torch.allclose(scores[roles.visual], wrong[roles.visual], atol=1e-5)


def test_uniform_scorer_equals_hawk_with_equal_weights():
    _, _, _, equal = _scored(torch.full((4,), 0.25))
    _, _, _, uniform = _scored(None)
    assert torch.allclose(equal, uniform)
    assert UniformHawkScorer().head_weights is None


@pytest.mark.parametrize(
    "n, ratio, expected",
    [
        (10, 0.7, 3),
        (1296, 0.8, 260),
        (1296, 0.802, 257),
        (5, 0.99, 1),
        (256, 0.0, 256),
        (256, 0.8, 52),
        (256, 0.9, 26),
        (256, 0.5, 128),
        (1, 0.99, 1),
        (0, 0.5, 0),
        (3, 0.5, 2),
        (100, 0.999, 1),
    ],
)
def test_keep_count_is_exact(n, ratio, expected):
    assert keep_count(n, ratio) == expected


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_outside_unit_interval_is_rejected(bad):
    with pytest.raises(UsageError):
        validate_ratio(bad)


def test_selection_keeps_all_text_and_breaks_ties_towards_earlier_tokens():
    visual = torch.tensor([[False, True, True, True, True, False]])
    valid = torch.tensor([[0, 1, 1, 1, 1, 1]])  # column 0 is left padding
    scores = torch.tensor([[9.0, 1.0, 2.0, 2.0, 0.5, 9.0]])
    keep = select_keep(scores, visual, valid, ratio=0.5)
    assert keep.tolist() == [[False, False, True, True, False, True]]
    tied = select_keep(torch.zeros(1, 6), visual, valid, ratio=0.5)
    assert tied.tolist() == [[False, True, True, False, False, True]]


def test_compaction_left_pads_and_keeps_original_order():
    keep = torch.tensor([[True, False, True, True], [False, True, False, False]])
    compaction = compact(keep)
    assert compaction.source_index.tolist()[0] == [0, 2, 3]
    assert compaction.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert compaction.source_index[1, -1] == 1
    positions = torch.arange(4).view(1, 1, 4).expand(3, 2, 4) * 10
    assert compaction.gather_positions(positions)[:, 0].tolist() == [[0, 20, 30]] * 3


def test_query_span_is_the_instruction_after_the_last_image():
    tokenizer = tiny_tokenizer()
    model = tiny_model()
    adapter = adapter_for(model, tokenizer)
    inputs = build_inputs(
        tokenizer,
        tiny_image_processor(),
        [Request("how many stars are there ?", (random_image(56, 56), random_image(56, 56)))],
    )
    roles = token_roles(inputs.input_ids, inputs.attention_mask, adapter.tokens)
    words = tokenizer.convert_ids_to_tokens(inputs.input_ids[0][roles.query[0]].tolist())
    assert words == ["how", "many", "stars", "are", "there", "?"]
    assert roles.fallback == [False]


def test_question_before_the_image_falls_back_to_the_users_text():
    tokenizer = tiny_tokenizer()
    adapter = adapter_for(tiny_model(), tokenizer)
    inputs = build_inputs(
        tokenizer,
        tiny_image_processor(),
        [Request("what color is the circle ?", (random_image(56, 56),), question_first=True)],
    )
    roles = token_roles(inputs.input_ids, inputs.attention_mask, adapter.tokens)
    words = tokenizer.convert_ids_to_tokens(inputs.input_ids[0][roles.query[0]].tolist())
    assert words == ["what", "color", "is", "the", "circle", "?"]
    assert roles.fallback == [True]


def test_roles_of_a_padded_batch_equal_each_row_alone():
    """Rows of different lengths, one with the question before the image (fallback), one with two images."""
    tokenizer = tiny_tokenizer()
    adapter = adapter_for(tiny_model(), tokenizer)
    processor = tiny_image_processor()
    requests = [
        Request("what color is the circle ?", (random_image(56, 56),), question_first=True),
        Request("how many stars are there ?", (random_image(112, 56), random_image(56, 112))),
        Request("what digit is in the red box ?", (random_image(168, 168),)),
    ]
    batch = build_inputs(tokenizer, processor, requests)
    roles = token_roles(batch.input_ids, batch.attention_mask, adapter.tokens)
    assert roles.fallback == [True, False, False]
    for index, request in enumerate(requests):
        alone = build_inputs(tokenizer, processor, [request])
        single = token_roles(alone.input_ids, alone.attention_mask, adapter.tokens)
        width = alone.input_ids.shape[1]
        assert torch.equal(roles.query[index, -width:], single.query[0])
        assert torch.equal(roles.visual[index, -width:], single.visual[0])
        assert not roles.query[index, :-width].any()


def test_selection_keeps_the_exact_count_per_row_of_a_batch():
    generator = torch.Generator().manual_seed(3)
    visual = torch.rand(4, 50, generator=generator) < 0.6
    valid = torch.ones(4, 50, dtype=torch.long)
    valid[1, :10] = 0
    visual &= valid.bool()
    scores = torch.rand(4, 50, generator=generator)
    keep = select_keep(scores, visual, valid, ratio=0.7)
    for row in range(4):
        n = int(visual[row].sum())
        kept = (keep[row] & visual[row]).nonzero().flatten()
        assert len(kept) == keep_count(n, 0.7)
        threshold = scores[row][kept].min()
        dropped = visual[row] & ~keep[row]
        assert (scores[row][dropped] <= threshold).all()  # the top-scored visual tokens are the kept ones
        assert torch.equal(keep[row] & ~visual[row], valid[row].bool() & ~visual[row])
