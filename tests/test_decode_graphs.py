"""The captured decode path: one graph per (batch, capacity bucket), captured after a warm-up step, replayed on
the buffers it was captured with, and equal to the eager step.

On the CPU a test double stands in for the CUDA graph (it replays the recorded step); that checks everything
around the graph: pooling and keys, warm-up, state reset between generations, bucketed capacities, eviction. The
CUDA tests (skipped on CPU) capture real graphs: captured == eager token for token and logits within tolerance,
fp32 and bf16, and no host synchronisation in a captured decode loop.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import pytest
import torch
from tiny_models import DEVICE, DTYPE, random_image, tiny_image_processor, tiny_model, tiny_tokenizer

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.buckets import capacity_bucket
from hawk_cli.engine.decode_step import DecodeState, DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.timing import PhaseTimer
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer

EOS = {2}
REQUESTS = [
    Request("what color is the circle ?", (random_image(224, 224, 1),)),
    Request("how many stars are there ?", (random_image(112, 168, 2),)),
    Request("what digit is in the red box ?", (random_image(168, 112, 3),)),
]


class RecordedStep:
    """GraphRunner test double: keeps the step it was given and replays exactly that (no graph on a CPU)."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def capture(self, step):
        self.captures += 1

        def replay():
            self.replays += 1
            return step()

        return replay


def _inputs(tokenizer, rows, device=DEVICE):
    return build_inputs(tokenizer, tiny_image_processor(), rows).to(device)


def _run(adapter, inputs, step, ratio=0.5, steps=6, eos=EOS):
    settings = GenerationSettings(ratio=ratio, max_new_tokens=steps, record_logits=True)
    return generate(adapter, inputs, HawkScorer(), settings, eos, decode_step=step)


def _assert_same(mine, theirs, tolerance):
    assert mine.tokens == theirs.tokens
    assert len(mine.step_logits) == len(theirs.step_logits)
    for a, b in zip(mine.step_logits, theirs.step_logits, strict=True):
        assert (a - b).abs().max() <= tolerance


def test_graph_orchestration_equals_the_eager_step_across_prompts_and_batches():
    """Several generations through one captured-mode step (two batch sizes, prompts of different lengths in one
    bucket, pruned and not): every one equals a fresh eager static-cache run, one capture per batch size."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    runner = RecordedStep()
    graphs = DecodeStep(adapter, "graphs", runner=runner)
    batches = [REQUESTS[:1], REQUESTS[1:2], REQUESTS[:2], REQUESTS[1:], REQUESTS[:1]]
    decode_steps = 0
    for rows in batches:
        for ratio in (0.0, 0.8):
            inputs = _inputs(tokenizer, rows)
            captured = _run(adapter, inputs, graphs, ratio)
            eager = generate(
                adapter,
                inputs,
                HawkScorer(),
                GenerationSettings(ratio=ratio, max_new_tokens=6, cache="static", record_logits=True),
                EOS,
            )
            _assert_same(captured, eager, 1e-5 if DTYPE is torch.float32 else 5e-2)  # bf16: other kernels
            decode_steps += len(captured.step_logits) - 1
            assert captured.kv_cache_slots == capacity_bucket(max(r.prompt_tokens_kept for r in captured.rows) + 6)
    assert runner.captures == 2  # batch 1 and batch 2: every prompt here falls in the smallest bucket
    assert {key[:2] for key in graphs.pooled_keys} == {(1, 256), (2, 256)}
    assert runner.replays == decode_steps - 2  # each key's first decode step ran eagerly, before its capture


def test_a_row_that_ends_early_pads_the_same_in_both_paths():
    """End-of-sequence handling runs inside the recorded step (finished rows get the pad id)."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    inputs = _inputs(tokenizer, REQUESTS)
    free = _run(adapter, inputs, DecodeStep(adapter, "eager"), steps=8, eos=set())
    stop = free.tokens[1][2]  # row 1's third token ends it; the other rows go on
    eager = _run(adapter, inputs, DecodeStep(adapter, "eager"), steps=8, eos={stop})
    graphs = DecodeStep(adapter, "graphs", runner=RecordedStep())
    for _ in range(2):  # the second run replays from its first step
        captured = _run(adapter, inputs, graphs, steps=8, eos={stop})
        assert captured.tokens == eager.tokens
    assert eager.tokens[1][-1] == stop and len(eager.tokens[1]) <= 3


def test_the_pool_drops_the_least_recently_used_graph():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    runner = RecordedStep()
    graphs = DecodeStep(adapter, "graphs", runner=runner, pool_size=1)
    one, two = _inputs(tokenizer, REQUESTS[:1]), _inputs(tokenizer, REQUESTS[:2])
    for inputs in (one, one, two, one):
        _run(adapter, inputs, graphs)
    assert runner.captures == 3  # batch 1, batch 2 (evicting batch 1), batch 1 again
    assert [key[0] for key in graphs.pooled_keys] == [1]


def test_eager_mode_never_captures_and_sizes_the_cache_exactly():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    runner = RecordedStep()
    result = _run(adapter, _inputs(tokenizer, REQUESTS[:1]), DecodeStep(adapter, "eager", runner=runner))
    assert runner.captures == 0 and result.kv_cache_slots == 0  # dynamic cache: grows, no fixed slots


def test_a_backend_that_builds_its_mask_per_step_is_not_captured():
    """flex attention builds its mask from host values each step: the graphs mode decodes it eagerly."""
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    model.config._attn_implementation = "flex_attention"
    try:
        assert not adapter.decode_capturable and not DecodeStep(adapter, "graphs").captured
        assert adapter.decode_mask(torch.ones(2, 5, dtype=torch.bool)).shape == (2, 5)  # the 2-D form
    finally:
        model.config._attn_implementation = "sdpa"
    assert adapter.decode_capturable and adapter.decode_mask(torch.ones(2, 5, dtype=torch.bool)).shape == (2, 1, 1, 5)


class MaskRecorder:
    """Wraps an adapter's `decode` to note the mask each one-token step received."""

    def __init__(self, adapter) -> None:
        self.adapter, self.masks = adapter, []

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def decode(self, embeds, position_ids, attention_mask, cache, extras=None):
        if embeds.shape[1] == 1:
            self.masks.append(None if attention_mask is None else tuple(attention_mask.shape))
        return self.adapter.decode(embeds, position_ids, attention_mask, cache, extras)


@pytest.mark.parametrize(
    "rows, cache, expect",
    [
        (REQUESTS[:1], "dynamic", "none"),  # one row: nothing to mask, as stock generate
        (REQUESTS, "dynamic", "4d"),  # rows of different lengths: left padding must be masked
        (REQUESTS[:1], "static", "4d"),
    ],
)  # a static cache: its unwritten slots must be masked
def test_a_step_passes_a_mask_only_when_something_must_be_masked(rows, cache, expect):
    model, tokenizer = tiny_model(), tiny_tokenizer()
    recorder = MaskRecorder(adapter_for(model, tokenizer))
    inputs = _inputs(tokenizer, rows)
    settings = GenerationSettings(ratio=0.5, max_new_tokens=4, cache=cache)
    generate(recorder, inputs, HawkScorer(), settings, EOS, decode_step=DecodeStep(recorder, "eager"))
    assert len(recorder.masks) == 3
    assert all((m is None) if expect == "none" else (m is not None and len(m) == 4) for m in recorder.masks)


def test_decode_buffers_cannot_be_rebound():
    """A captured graph reads the buffers it was captured with: the state only allows in-place updates."""
    state = DecodeState.allocate(2, 8, 3, 1, torch.device("cpu"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.slot = torch.tensor([3])


def test_a_step_past_the_cache_is_refused_on_the_host():
    model, tokenizer = tiny_model(), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    decoding = DecodeStep(adapter, "graphs", runner=RecordedStep()).start(
        1, 250, 3, 6, 1, "static", torch.device("cpu")
    )
    assert decoding.capacity == 256
    with pytest.raises(ValueError, match="past the cache"):
        decoding.advance(6)


# --- on a GPU ---------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@cuda_only
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)])
def test_captured_graphs_equal_the_eager_step_on_cuda(dtype, tolerance):
    """Real CUDA graphs against the same step run eagerly on the same pooled buffers and bucketed caches."""
    device = torch.device("cuda")
    model, tokenizer = tiny_model(dtype=dtype, device=device), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    graphs, eager = DecodeStep(adapter, "graphs"), DecodeStep(adapter, "graphs", runner=RecordedStep())
    for rows in (REQUESTS[:1], REQUESTS[:2], REQUESTS[:1], REQUESTS):
        for ratio in (0.0, 0.8):
            inputs = _inputs(tokenizer, rows, device)
            _assert_same(
                _run(adapter, inputs, graphs, ratio, steps=10), _run(adapter, inputs, eager, ratio, steps=10), tolerance
            )
    assert graphs.captures == 3 and graphs.captured


class SyncForbidden(PhaseTimer):
    """Turns torch's sync debug mode to "error" while the decode loop runs."""

    @contextmanager
    def phase(self, name: str):
        with super().phase(name):
            if name != "decode_s":
                yield
                return
            torch.cuda.set_sync_debug_mode("error")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")


@cuda_only
@pytest.mark.parametrize("mode", ["graphs", "eager"])
def test_the_decode_loop_never_synchronises_on_cuda(mode):
    device = torch.device("cuda")
    model, tokenizer = tiny_model(device=device), tiny_tokenizer()
    adapter = adapter_for(model, tokenizer)
    step = DecodeStep(adapter, mode)
    inputs = _inputs(tokenizer, REQUESTS[:2], device)
    settings = GenerationSettings(ratio=0.5, max_new_tokens=12)
    generate(adapter, inputs, HawkScorer(), settings, {60}, decode_step=step)  # captures (capture synchronises)
    result = generate(adapter, inputs, HawkScorer(), settings, {60}, decode_step=step, timer=SyncForbidden(device))
    assert all(len(tokens) == 12 for tokens in result.tokens)
