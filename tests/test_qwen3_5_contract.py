"""Engine contract for Qwen3.5 (dense and MoE): a hybrid decoder whose Gated DeltaNet layers convolve and recur
over the sequence, so a pruned run must equal the COMPACTION oracle: the model's own `generate` on the stock
embeddings of the kept tokens alone, at their original position ids (tiny fp32 models built in code).

Negative controls prove the checks can fail: the masked oracle (right for attention-only families) differs here,
renumbered positions fail, and pairing query head h with kv head h % G misses the reference scores.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_engine_contract import RandomScores
from tiny_models import DEVICE, DTYPE, TOLERANCE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen3_5 import Qwen35Adapter
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.pruning import scoring_inputs
from hawk_cli.engine.roles import token_roles
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer
from hawk_cli.tasks.oracle import check_against_oracle, compare_step_logits

pytestmark = pytest.mark.contract
EOS = {2}
TOL = TOLERANCE
DELTANET_LAYER, ATTENTION_LAYER = 0, 3  # of the tiny config's layer_types (linear x3, full, linear)


class RenumberingAdapter(Qwen35Adapter):
    """Negative control: feeds the pruned prompt contiguous positions, as a naive implementation would."""

    def decode(self, embeds, position_ids, attention_mask, cache, extras=None):
        batch, length = embeds.shape[:2]
        past = int(cache.get_seq_length())  # a tensor on hybrid caches of transformers 5.25
        contiguous = torch.arange(past, past + length, device=embeds.device).view(1, 1, length).expand(3, batch, length)
        return super().decode(embeds, contiguous, attention_mask, cache, extras)


def _requests():
    return [
        Request("what color is the circle ?", (random_image(224, 224, 1),)),
        Request("how many stars are there ?", (random_image(112, 168, 2),)),
        Request("what digit is in the red box ?", (random_image(168, 112, 3),)),
    ]


def _setup(family="qwen3_5", attn="sdpa", requests=None):
    model, tokenizer = tiny_model(family, attn), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    prompts = adapter.prompts(tokenizer, tiny_image_processor(family=family))
    return model, adapter, prompts.collate(requests or _requests()).to(DEVICE)


@pytest.mark.parametrize(
    "family, attn, cache",
    [
        ("qwen3_5", "sdpa", "dynamic"),
        ("qwen3_5", "sdpa", "static"),
        ("qwen3_5", "eager", "dynamic"),
        ("qwen3_5_moe", "sdpa", "dynamic"),
    ],
)
def test_ratio_zero_is_identical_to_stock_generate(family, attn, cache):
    model, adapter, inputs = _setup(family, attn)
    ours = generate(
        adapter, inputs, None, GenerationSettings(ratio=0.0, max_new_tokens=5, cache=cache, record_logits=True), EOS
    )
    stock = model.generate(
        **adapter.stock_generate_inputs(inputs),
        max_new_tokens=5,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        eos_token_id=2,
    )
    comparison = compare_step_logits(ours.step_logits, list(stock.logits))
    assert comparison.passed(TOL), comparison
    if comparison.diverged_at_step is None:
        stock_tokens = stock.sequences[:, inputs.input_ids.shape[1] :]
        for row, tokens in enumerate(ours.tokens):
            assert tokens == stock_tokens[row, : len(tokens)].tolist()


@pytest.mark.parametrize(
    "family, layer, cache",
    [
        ("qwen3_5", ATTENTION_LAYER, "dynamic"),
        ("qwen3_5", ATTENTION_LAYER, "static"),
        ("qwen3_5", DELTANET_LAYER, "dynamic"),
        ("qwen3_5_moe", ATTENTION_LAYER, "dynamic"),
    ],
)
def test_pruned_logits_match_the_compaction_oracle(family, layer, cache):
    model, adapter, inputs = _setup(family)
    settings = GenerationSettings(ratio=0.8, max_new_tokens=5, cache=cache, record_logits=True)
    pruned = generate(adapter, inputs, HawkScorer(layer=layer), settings, EOS)
    assert all(row.visual_tokens_kept < row.visual_tokens for row in pruned.rows)  # pruning happened
    oracle = adapter.compaction_generate(inputs, pruned.keep_mask.to(DEVICE), 5, EOS)
    comparison = compare_step_logits(pruned.step_logits, oracle)
    assert comparison.passed(TOL), comparison
    assert comparison.diverged_at_step is not None or len(pruned.step_logits) == len(oracle)


@pytest.mark.parametrize("seed, ratio", [(0, 0.3), (1, 0.9)])
def test_random_noncontiguous_keep_sets_match_the_compaction_oracle(seed, ratio):
    _, adapter, inputs = _setup()
    report = check_against_oracle(adapter, inputs, RandomScores(seed), ratio, 4, EOS, TOL)
    assert report.oracle == "compaction" and report.visual_tokens_kept < report.visual_tokens
    assert report.passed, report


def test_the_masked_oracle_does_not_apply_to_the_hybrid_decoder():
    """Negative control for the choice of oracle: with the same keep set, masking the dropped tokens (what is exact
    for attention-only families) moves the logits far outside the tolerance, while compaction matches."""
    _, adapter, inputs = _setup()
    pruned = generate(
        adapter, inputs, HawkScorer(), GenerationSettings(ratio=0.8, max_new_tokens=3, record_logits=True), EOS
    )
    keep = pruned.keep_mask.to(DEVICE)
    masked = compare_step_logits(pruned.step_logits, adapter.masked_generate(inputs, keep, 3, EOS))
    assert not masked.passed(TOL) and masked.step_max_abs_logit_diff[0] > TOL
    assert compare_step_logits(pruned.step_logits, adapter.compaction_generate(inputs, keep, 3, EOS)).passed(TOL)


def test_renumbered_positions_fail_the_compaction_check():
    if torch.float32 != DTYPE:
        pytest.skip(
            "on this tiny partial-rotary model renumbering moves bf16 logits by about 0.09, under bf16's "
            "tolerance of 0.1 (H200); the control is pinned in fp32 on the CPU and the GPU"
        )
    _, honest, inputs = _setup()
    broken = RenumberingAdapter(honest.model, honest.tokens)
    assert check_against_oracle(honest, inputs, HawkScorer(), 0.8, 3, EOS, TOL).passed
    report = check_against_oracle(broken, inputs, HawkScorer(), 0.8, 3, EOS, TOL)
    assert not report.passed and max(report.step_max_abs_logit_diff) > TOL


def test_batch_rows_with_ragged_kept_counts_equal_single_rows():
    """Left padding is exact for the hybrid decoder: the stock DeltaNet zeroes padded rows, so its convolution
    sees zeros (as at the start of a row alone) and its recurrent state, zero at the start, stays zero."""
    model, adapter, inputs = _setup()
    prompts = adapter.prompts(tiny_tokenizer(), tiny_image_processor(family="qwen3_5"))
    settings = GenerationSettings(ratio=0.8, max_new_tokens=4, record_logits=True)
    batched = generate(adapter, inputs, HawkScorer(), settings, EOS)
    assert len({row.visual_tokens_kept for row in batched.rows}) > 1  # rows really differ in kept count
    for index, request in enumerate(_requests()):
        alone = generate(adapter, prompts.collate([request]).to(DEVICE), HawkScorer(), settings, EOS)
        assert alone.tokens[0] == batched.tokens[index] and alone.rows[0] == batched.rows[index]
        for mine, theirs in zip(alone.step_logits, batched.step_logits, strict=False):  # a row may end first
            assert (mine[0] - theirs[index]).abs().max() <= TOL


def test_two_images_in_one_prompt_match_the_compaction_oracle():
    requests = [
        Request("how many stars are there ?", (random_image(224, 112, 4), random_image(112, 224, 5))),
        Request("what color is the circle ?", (random_image(168, 168, 6),)),
    ]
    _, adapter, inputs = _setup(requests=requests)
    report = check_against_oracle(adapter, inputs, HawkScorer(), 0.8, 4, EOS, TOL)
    assert inputs.image_grid_thw.shape[0] == 3
    assert report.passed, report


# --- scoring: q/k of the two mixers against independent references ------------------------------------------


def _prefill_and_roles(adapter, inputs):
    with torch.no_grad():
        prefill = adapter.build_prefill(inputs, adapter.encode_vision(inputs))
    return prefill, token_roles(prefill.input_ids, prefill.attention_mask, adapter.tokens)


def _captured_attention_qk(model, prefill, layer):
    """q after `q_norm` and k after `k_norm` [B, L, heads, d] as the STOCK forward computes them (forward hooks on
    those norm modules during an ordinary forward): the reference for pre-RoPE q/k."""
    attention = model.model.language_model.layers[layer].self_attn
    captured = {}
    hooks = [
        attention.q_norm.register_forward_hook(lambda m, a, out: captured.__setitem__("q", out)),
        attention.k_norm.register_forward_hook(lambda m, a, out: captured.__setitem__("k", out)),
    ]
    try:
        with torch.no_grad():
            model.model.language_model(
                inputs_embeds=prefill.inputs_embeds,
                position_ids=prefill.position_ids,
                attention_mask=prefill.attention_mask,
                use_cache=False,
            )
    finally:
        for hook in hooks:
            hook.remove()
    return captured["q"], captured["k"]


def _reference_scores(q_all, k_all, visual, query, weights, head_of_kv):
    """The HAWK formula with loops over captured q [B, L, H, d] and k [B, L, H_kv, d]."""
    d = q_all.shape[-1]
    out = torch.full(visual.shape, float("-inf"))
    for b in range(q_all.shape[0]):
        vis, queries = visual[b].nonzero().flatten().tolist(), query[b].nonzero().flatten().tolist()
        total = torch.zeros(len(vis), dtype=torch.float64)
        for h in range(len(weights)):
            column = torch.tensor(
                [
                    sum(float(q_all[b, i, h].double() @ k_all[b, j, head_of_kv(h)].double()) for i in queries)
                    / len(queries)
                    / math.sqrt(d)
                    for j in vis
                ],
                dtype=torch.float64,
            )
            total += float(weights[h]) * column / column.norm()
        out[b, vis] = total.float()
    return out


def test_attention_layer_scores_match_the_formula_on_stock_q_k_and_h_mod_g_does_not():
    model, adapter, inputs = _setup()
    prefill, roles = _prefill_and_roles(adapter, inputs)
    weights = torch.tensor([0.1, 0.5, 0.15, 0.25])
    with torch.no_grad():
        scores = HawkScorer(head_weights=weights, layer=ATTENTION_LAYER).score(scoring_inputs(adapter, prefill, roles))
    q_all, k_all = _captured_attention_qk(model, prefill, ATTENTION_LAYER)
    visual = roles.visual
    right = _reference_scores(q_all, k_all, visual, roles.query, weights, head_of_kv=lambda h: h // 2)
    assert torch.allclose(scores[visual].cpu(), right[visual.cpu()], atol=1e-5)
    wrong = _reference_scores(q_all, k_all, visual, roles.query, weights, head_of_kv=lambda h: h % 2)
    assert not torch.allclose(scores[visual].cpu(), wrong[visual.cpu()], atol=1e-5)  # negative control


def _naive_gated_delta_rule(q, k, v, g, beta):
    """The gated delta rule token by token (float64): decay the state, correct it towards v along k, read with q.
    q, k [B, H, L, dk] (L2-normalised), v [B, H, L, dv], g and beta [B, L, H]."""
    batch, heads, length, dk = q.shape
    state = torch.zeros(batch, heads, dk, v.shape[-1], dtype=torch.float64, device=q.device)
    out = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64, device=q.device)
    q, k, v = q.double() / math.sqrt(dk), k.double(), v.double()
    for t in range(length):
        state = state * g[:, t].double().exp()[..., None, None]
        remembered = (state * k[:, :, t, :, None]).sum(-2)
        state = state + k[:, :, t, :, None] * ((v[:, :, t] - remembered) * beta[:, t].double()[..., None])[..., None, :]
        out[:, :, t] = (state * q[:, :, t, :, None]).sum(-2)
    return out


def _deltanet_output(block, hidden, q, k, v):
    """The DeltaNet layer's output rebuilt from (q, k, v) with the naive recurrence and the layer's own gates,
    gated norm and output projection."""
    mixer = block.linear_attn
    normed = block.input_layernorm(hidden)
    batch, length, _ = normed.shape
    g = -mixer.A_log.float().exp() * torch.nn.functional.softplus(mixer.in_proj_a(normed).float() + mixer.dt_bias)
    beta = mixer.in_proj_b(normed).sigmoid()
    repeat = mixer.num_v_heads // mixer.num_k_heads
    core = _naive_gated_delta_rule(q.repeat_interleave(repeat, 1), k.repeat_interleave(repeat, 1), v, g, beta)
    core = core.transpose(1, 2).to(normed.dtype).reshape(-1, mixer.head_v_dim)
    gate = mixer.in_proj_z(normed).reshape(-1, mixer.head_v_dim)
    return mixer.out_proj(mixer.norm(core, gate).reshape(batch, length, -1))


def test_deltanet_q_k_are_what_the_layer_recurs_on():
    """The adapter's DeltaNet q/k (after the causal convolution and the L2 norm) rebuild the stock layer's output
    through an independent token-by-token delta rule; q/k taken before the convolution do not (negative control)."""
    from hawk_cli.adapters.qwen3_5.mixers import deltanet_qkv, l2_normalised

    model, adapter, inputs = _setup(requests=_requests()[:1])
    block = model.model.language_model.layers[DELTANET_LAYER]
    prefill, _ = _prefill_and_roles(adapter, inputs)
    hidden = prefill.inputs_embeds
    with torch.no_grad():
        stock = block.linear_attn(block.input_layernorm(hidden))
        q, k, v = deltanet_qkv(block, hidden)
        assert torch.equal(adapter.query_key(hidden, DELTANET_LAYER)[0], q)
        assert torch.allclose(_deltanet_output(block, hidden, q, k, v), stock, atol=TOL)
        raw_q, raw_k, _ = torch.split(
            block.linear_attn.in_proj_qkv(block.input_layernorm(hidden)),
            [block.linear_attn.key_dim] * 2 + [block.linear_attn.value_dim],
            dim=-1,
        )
        unconvolved = [
            l2_normalised(x.reshape(*x.shape[:2], -1, block.linear_attn.head_k_dim)).transpose(1, 2)
            for x in (raw_q, raw_k)
        ]
        assert not torch.allclose(_deltanet_output(block, hidden, *unconvolved, v), stock, atol=10 * TOL)


# --- caches ------------------------------------------------------------------------------------------------


def test_cache_bytes_count_the_conv_and_recurrent_states():
    """Bytes from the config's shapes alone: keys and values of the attention layer for the kept prompt, a conv
    window and a recurrent matrix per DeltaNet layer (the recurrent state is float32 in transformers' delta rule
    even when the model runs in 16 bits; either width is accepted)."""
    model, adapter, inputs = _setup()
    result = generate(adapter, inputs, HawkScorer(), GenerationSettings(ratio=0.8, max_new_tokens=2), EOS)
    text = model.config.text_config
    size = next(model.parameters()).element_size()
    batch, kept = inputs.batch_size, max(row.prompt_tokens_kept for row in result.rows)
    kinds = list(text.layer_types)
    attention = kinds.count("full_attention") * 2 * batch * text.num_key_value_heads * kept * text.head_dim * size
    conv_dim = (
        2 * text.linear_num_key_heads * text.linear_key_head_dim
        + text.linear_num_value_heads * text.linear_value_head_dim
    )
    linear = kinds.count("linear_attention") * batch
    conv = linear * conv_dim * text.linear_conv_kernel_dim * size
    recurrent = linear * text.linear_num_value_heads * text.linear_key_head_dim * text.linear_value_head_dim
    assert result.cache_state_bytes in (conv + 4 * recurrent, conv + size * recurrent)
    assert result.kv_cache_bytes == attention + result.cache_state_bytes
