"""Graphs per input signature (the vision tower per grid list, the prefill per padded length): eager on first
sight, recorded on the second, replayed on fresh inputs after; outputs owned by the caller; bounded in number.

On the CPU a recorder stands in for the CUDA graph (it replays the recorded function over the same static
buffers), which checks everything around the graph; the CUDA tests record real graphs and compare them with the
eager path.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import DEVICE, DTYPE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.graphs import CudaGraphCapture, GraphCache
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.buckets import prefill_bucket
from hawk_cli.engine.decode_step import DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate, pad_left
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer

EOS = {2}
# fp32: padding changes nothing but the reduction order of larger matrix products; bf16 (HAWK_TEST_DTYPE on CUDA):
# the padded prefill runs other kernels, which round differently
TOLERANCE = 1e-5 if DTYPE is torch.float32 else 5e-2


class Recorder:
    """GraphCapture test double: keeps the function it was given and replays exactly that."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def capture(self, fn):
        self.captures += 1

        def replay():
            self.replays += 1
            return fn()

        return replay


class CountedSquare:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> dict:
        self.calls += 1
        return {"square": x * x, "sum": (x * x).sum()}


def test_a_signature_runs_eagerly_first_then_is_recorded_and_replayed_on_fresh_inputs():
    recorder, fn = Recorder(), CountedSquare()
    cache = GraphCache(2, recorder)
    first, second, third = (torch.full((3,), float(v)) for v in (1, 2, 3))
    assert torch.equal(cache("k", fn, first)["square"], first * first)
    assert (recorder.captures, fn.calls) == (0, 1)  # first sight: eager, nothing recorded
    assert torch.equal(cache("k", fn, second)["square"], second * second)
    assert (recorder.captures, recorder.replays) == (1, 1)
    out = cache("k", fn, third)
    assert torch.equal(out["square"], third * third) and float(out["sum"]) == 27.0  # the replay read the new input
    assert (recorder.captures, recorder.replays) == (1, 2)


def test_a_stale_buffer_would_be_caught():
    """Negative control: a cache that forgot to copy the new input into its buffers returns the old answer, which
    the comparison above rejects."""
    recorder, fn = Recorder(), CountedSquare()
    cache = GraphCache(2, recorder)
    cache("k", fn, torch.ones(3))
    cache("k", fn, torch.full((3,), 2.0))
    entry = next(iter(cache._entries.values()))
    stale = entry.replay()["square"]
    assert not torch.equal(stale, torch.full((3,), 9.0))  # what a forgotten copy would hand back for input 3


def test_outputs_belong_to_the_caller_and_survive_later_replays():
    cache = GraphCache(2, Recorder())
    cache("k", lambda x: x + 1, torch.zeros(2))
    held = cache("k", lambda x: x + 1, torch.zeros(2))
    cache("k", lambda x: x + 1, torch.full((2,), 5.0))
    assert torch.equal(held, torch.ones(2))


def test_shapes_are_part_of_the_signature_and_the_oldest_is_dropped():
    recorder = Recorder()
    cache = GraphCache(2, recorder)
    for n in (2, 3, 2, 4, 2):
        assert torch.equal(cache("k", torch.neg, torch.ones(n)), -torch.ones(n))
    assert [key[1][0][0] for key in cache.keys] == [(4,), (2,)]  # (3,) dropped; (2,) used last
    assert recorder.captures == 1  # only (2,) was seen twice while kept
    with pytest.raises(ValueError, match="at least one graph"):
        GraphCache(0)


def test_without_a_capture_every_call_is_eager():
    fn = CountedSquare()
    cache = GraphCache(2, None)
    for _ in range(3):
        cache("k", fn, torch.ones(2))
    assert fn.calls == 3 and cache.captures == 0


def test_prefill_buckets_pad_by_less_than_an_eighth():
    assert [prefill_bucket(n) for n in (1, 32, 33, 256, 257, 282, 513, 1318)] == [32, 32, 64, 256, 288, 288, 576, 1408]
    for n in range(1, 20000):
        bucket = prefill_bucket(n)
        assert bucket >= n and (bucket - n < 32 or (bucket - n) * 8 < n)


# --- the prefill ---------------------------------------------------------------------------------------------
REQUESTS = [
    Request("what color is the circle ?", (random_image(224, 224, 1),)),
    Request("how many stars are there ?", (random_image(112, 168, 2),)),
]


def _generate(adapter, inputs, step, ratio=0.5, steps=6):
    settings = GenerationSettings(ratio=ratio, max_new_tokens=steps, cache="static", record_logits=True)
    return generate(adapter, inputs, HawkScorer(), settings, EOS, decode_step=step)


def test_a_captured_prefill_padded_to_its_bucket_equals_the_eager_prefill():
    """Captured steps pad the prompt on the left to its bucket and prefill through a recorded graph with a prepared
    mask: every step's logits equal the eager static-cache run on the unpadded prompt (fp32), first sight, recorded
    and replayed."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    prefills = Recorder()
    step = DecodeStep(adapter, "graphs", runner=Recorder(), prefill_runner=prefills)
    padding = []
    for rows in (REQUESTS[:1], REQUESTS, REQUESTS[:1], REQUESTS, REQUESTS[:1]):
        inputs = build_inputs(tokenizer, tiny_image_processor(), rows).to(DEVICE)
        captured = _generate(adapter, inputs, step)
        eager = _generate(adapter, inputs, DecodeStep(adapter, "eager"))
        longest = max(row.prompt_tokens_kept for row in captured.rows)
        padding.append(prefill_bucket(longest) - longest)
        assert captured.tokens == eager.tokens
        for a, b in zip(captured.step_logits, eager.step_logits, strict=True):
            assert (a - b).abs().max() <= TOLERANCE
    assert min(padding) > 0  # every prompt was padded (the equality is not that of an unchanged prompt)
    assert (prefills.captures, prefills.replays) == (2, 3)  # batch 1 and batch 2 recorded on second sight


def test_a_prefill_mask_that_lets_tokens_see_ahead_is_caught():
    """Negative control: the same comparison fails when the prepared prefill mask drops causality."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    inputs = build_inputs(tokenizer, tiny_image_processor(), REQUESTS).to(DEVICE)
    eager = _generate(adapter, inputs, DecodeStep(adapter, "eager"))

    def sees_ahead(mask, capacity):  # every real key, earlier or later
        keys = torch.nn.functional.pad(mask.bool(), (0, capacity - mask.shape[1]))
        return keys[:, None, None, :].expand(-1, 1, mask.shape[1], -1)

    adapter.prefill_mask = sees_ahead
    try:
        broken = _generate(adapter, inputs, DecodeStep(adapter, "graphs", runner=Recorder()))
    finally:
        del adapter.prefill_mask
    assert max(float((a - b).abs().max()) for a, b in zip(broken.step_logits, eager.step_logits, strict=False)) > 1e-3


def test_prefills_are_captured_only_where_launches_dominate():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    step = DecodeStep(adapter, "graphs", runner=Recorder())
    assert step.captured_prefill_length(1, 282, has_extras=False) == 288
    assert step.captured_prefill_length(8, 282, has_extras=False) == 288  # 8 x 288 = 2304 tokens
    assert step.captured_prefill_length(8, 1318, has_extras=False) is None  # 8 x 1408 tokens: arithmetic-bound
    assert step.captured_prefill_length(1, 282, has_extras=True) is None  # DeepStack extras: eager
    assert DecodeStep(adapter, "eager").captured_prefill_length(1, 282, has_extras=False) is None


def test_padding_on_the_left_keeps_tokens_ids_and_mask():
    embeds, positions, mask = torch.randn(2, 3, 4), torch.arange(18).view(3, 2, 3), torch.tensor([[0, 1, 1], [1, 1, 1]])
    e, p, m = pad_left(embeds, positions, mask, 5)
    assert torch.equal(e[:, 2:], embeds) and e[:, :2].abs().sum() == 0
    assert torch.equal(p[..., 2:], positions) and torch.equal(m, torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="cannot pad"):
        pad_left(embeds, positions, mask, 2)


# --- the vision tower ----------------------------------------------------------------------------------------
def _tower_features(adapter, tokenizer, images):
    inputs = build_inputs(tokenizer, tiny_image_processor(), [Request("what is it ?", tuple(images))]).to(DEVICE)
    return adapter.encode_vision(inputs)["image"]


def test_the_tower_replays_per_grid_list_and_equals_the_eager_tower():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    eager = [_tower_features(adapter, tokenizer, [random_image(224, 224, s)]) for s in (1, 2, 3)]
    recorder = Recorder()
    adapter.vision_graphs = GraphCache(2, recorder)
    for seed, expected in zip((1, 2, 3), eager, strict=True):
        assert torch.equal(_tower_features(adapter, tokenizer, [random_image(224, 224, seed)]), expected)
    assert (recorder.captures, recorder.replays) == (1, 2)  # one grid list: recorded on its second image
    other = _tower_features(adapter, tokenizer, [random_image(112, 168, 4)])
    adapter.vision_graphs = None
    assert torch.equal(other, _tower_features(adapter, tokenizer, [random_image(112, 168, 4)]))
    assert not torch.equal(eager[0], eager[1])  # negative control: different images differ


# --- on a GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_real_tower_graphs_equal_the_eager_tower_on_cuda(dtype):
    device = torch.device("cuda")
    model, tokenizer = tiny_model(dtype=dtype, device=device), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)

    def features(seed):
        inputs = build_inputs(tokenizer, tiny_image_processor(), [Request("what ?", (random_image(224, 224, seed),))])
        return adapter.encode_vision(inputs.to(device))["image"]

    eager = [features(s) for s in (1, 2, 3)]
    adapter.vision_graphs = GraphCache(2, CudaGraphCapture(shared_pool=True))
    replayed = [features(s) for s in (1, 2, 3)]
    assert adapter.vision_graphs.captures == 1
    for a, b in zip(replayed, eager, strict=True):
        assert (a.float() - b.float()).abs().max() <= (0 if dtype == torch.float32 else 1e-2)
