"""The decode loop never makes the host wait for the device: no value is read back per step.

On the CPU there is no asynchrony to observe, so the counter is structural: a TorchDispatchMode, entered only for
the decode phase (through the engine's timer seam), counts every operator that reads tensor contents back to
Python (`bool()`, `.item()`, `int()`, `.tolist()`, data-dependent shapes such as `nonzero`). On CUDA each of those
is a host synchronisation. The end-of-sequence flag reaches the host through FinishWatch's asynchronous copies into
host memory, read as plain memory, which on CUDA is no synchronisation either (checked on the device with
torch's sync debug mode in test_decode_graphs.py).
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from tiny_models import random_image, tiny_image_processor, tiny_model, tiny_tokenizer
from torch.utils._python_dispatch import TorchDispatchMode

from hawk_cli.adapters import adapter_for
from hawk_cli.adapters.qwen2_vl.adapter import QwenVLAdapter
from hawk_cli.adapters.qwen2_vl.prompts import build_inputs
from hawk_cli.engine.decode_step import DecodeStep
from hawk_cli.engine.generation import GenerationSettings, generate
from hawk_cli.engine.timing import PhaseTimer
from hawk_cli.io.requests import Request
from hawk_cli.scorers import HawkScorer

# Operators that hand tensor contents to Python (each a device synchronisation on CUDA).
HOST_READS = {
    "aten.is_nonzero.default",
    "aten.item.default",
    "aten._local_scalar_dense.default",
    "aten.equal.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.resolve_conj.default",  # what .tolist() dispatches before reading
    "aten._unique2.default",
    "aten.unique_consecutive.default",
    "aten.unique_dim.default",
}
STEPS = 6


class OperatorCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def host_reads(self) -> int:
        return sum(n for name, n in self.calls.items() if name in HOST_READS)


class DecodePhaseCounter(PhaseTimer):
    """The engine's timer, counting operators only while the decode loop runs."""

    def __init__(self, device) -> None:
        super().__init__(device)
        self.counter = OperatorCounter()

    @contextmanager
    def phase(self, name: str):
        with super().phase(name):
            if name != "decode_s":
                yield
                return
            with self.counter:
                yield


class NaNCheckingAdapter(QwenVLAdapter):
    """Negative control: checks every step's logits for NaN on the host, as a careless loop would."""

    def logits(self, hidden):
        logits = super().logits(hidden)
        if bool(logits.isnan().any()):
            raise FloatingPointError("NaN logits")
        return logits


def _setup(batch: int = 2):
    model, tokenizer = tiny_model(device="cpu", dtype=torch.float32), tiny_tokenizer()  # CPU by design
    requests = [
        Request("what color is the circle ?", (random_image(224, 224, 1),)),
        Request("how many stars are there ?", (random_image(112, 168, 2),)),
    ][:batch]
    return model, tokenizer, build_inputs(tokenizer, tiny_image_processor(), requests)


def _decode(adapter, inputs, eos_ids, cache="auto", mode="eager", steps=STEPS):
    timer = DecodePhaseCounter(torch.device("cpu"))
    result = generate(
        adapter,
        inputs,
        HawkScorer(),
        GenerationSettings(ratio=0.5, max_new_tokens=steps, cache=cache),
        eos_ids,
        decode_step=DecodeStep(adapter, mode),
        timer=timer,
    )
    return result, timer.counter


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("eos_ids", [set(), {2, 60}], ids=["forced-length", "watching-eos"])
def test_the_decode_loop_reads_nothing_back_per_step(cache, eos_ids):
    model, tokenizer, inputs = _setup()
    result, counter = _decode(adapter_for(model, tokenizer), inputs, eos_ids, cache)
    assert all(len(tokens) == STEPS for tokens in result.tokens)  # no row ended: every step ran
    assert counter.calls["aten.argmax.default"] == STEPS  # the counter saw the loop: one greedy pick per token
    assert counter.host_reads == 0, {k: v for k, v in counter.calls.items() if k in HOST_READS}


def test_the_counter_sees_a_host_read_in_every_step():
    """Negative control: one `bool()` per decode step is counted once per step (not in the prefill)."""
    model, tokenizer, inputs = _setup()
    honest = adapter_for(model, tokenizer)
    _, counter = _decode(NaNCheckingAdapter(model, honest.tokens), inputs, {2, 60})
    assert counter.host_reads == STEPS - 1  # the first token comes from the prefill's logits


def test_the_counter_sees_the_old_per_step_eos_check():
    """Negative control: the loop this replaced read `bool(finished.all())` after every token."""
    finished = torch.zeros(2, dtype=torch.bool)
    with OperatorCounter() as counter:
        for _ in range(STEPS):
            if bool(finished.all()):
                break
    assert counter.host_reads == STEPS


def test_end_of_sequence_still_stops_the_loop_on_time():
    """With the EOS flag read asynchronously, a row that ends still ends there, and on the CPU (every copy has
    landed when read) the loop stops on the step the last row finished: no wasted steps."""
    model, tokenizer, inputs = _setup(batch=1)
    adapter = adapter_for(model, tokenizer)
    free, _ = _decode(adapter, inputs, set(), steps=8)
    stop_id = free.tokens[0][3]
    first = free.tokens[0].index(stop_id)
    stopped, counter = _decode(adapter, inputs, {stop_id}, steps=8)
    assert stopped.tokens[0] == free.tokens[0][: first + 1]
    assert counter.calls["aten.argmax.default"] == first + 1
