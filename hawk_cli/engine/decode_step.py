"""The decode step: one new token per row through the decoder with a KV cache, run eagerly, replayed from a
captured CUDA graph, or compiled.

Everything a step reads or changes lives in fixed buffers (`DecodeState`, and the static cache's own tensors),
updated in place by the step itself: it marks the fed token's cache slot valid, runs the decoder on the fed
token at its rotary ids, advances ids and slot by one, picks the next token greedily and writes it where the
next step reads it. So the host does nothing per step but launch it, and the same Python code is what runs
eagerly and what a CUDA graph records: captured equals eager.

Why buffers: a CUDA graph replays the recorded kernels on the recorded addresses with no Python in between. A
step that builds its mask, positions or cache index from host values (or allocates them afresh) bakes the values
of the capture into the graph; replays then write the cache at the captured slot again, or past its end
(`index_copy_(): index out of bounds`). transformers' `StaticCache` layers (5.17 through 5.25) keep their write
position as a device tensor (`cumulative_length`) and advance it in place inside `update`, and build the write
index from it, so a captured step writes one slot further on every replay, as long as the cache object, and so
that tensor, is the one the graph was captured with. The decoder gets its mask prepared (`adapter.decode_mask`:
for sdpa a view of `valid`), so transformers builds none per step; an eager step over a dynamic cache of
unpadded rows passes none at all, as stock `generate` does.

Captured and compiled steps keep one static cache, state and graph per (batch, capacity bucket) (`buckets.py`),
the least recently used dropped past `pool_size`: a graph cannot outlive the tensors it was captured on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hawk_cli.adapters.base import ModelAdapter
from hawk_cli.adapters.graphs import CudaGraphCapture, GraphCache, GraphCapture
from hawk_cli.engine.buckets import capacity_bucket, prefill_bucket

DECODE_MODES = ("eager", "graphs", "compile")
DEFAULT_POOL_SIZE = 4
# Eager steps a new (batch, bucket) runs before its capture (lazy library initialisation must not be captured);
# they are real decode steps, whose results are used.
WARMUP_STEPS = 1
NO_EOS = -1  # stands for "no end-of-sequence id": token ids are never negative
# A prefill is captured (padded on the left to a length bucket) while batch x padded length stays within this
# many tokens: below it the eager prefill is bound by kernel launches, above it by arithmetic, which padding
# would only add to (docs/benchmarks.md, "Launch-free prefill").
PREFILL_GRAPH_TOKENS = 4096
PREFILL_GRAPHS_PER_CACHE = 4
# Calls of a compiled step per batch size that compile or record ("reduce-overhead" records CUDA graphs on its
# second and third calls); their host time is the compilation's cost.
COMPILE_WARMUP_CALLS = 3


@dataclass(frozen=True)
class DecodeState:
    """The fixed buffers of one decoding; frozen, so they can only be updated in place."""

    token: Tensor  # [B, 1] long: the token the next step feeds
    positions: Tensor  # [P, B, 1] long: its rotary ids (the unpruned run's)
    valid: Tensor  # [B, S] bool: the cache slots the next step's query may attend
    slot: Tensor  # [1] long: the cache slot the next fed token fills
    finished: Tensor  # [B] bool: rows that have produced an end-of-sequence id
    eos: Tensor  # [E] long: end-of-sequence ids

    @classmethod
    def allocate(cls, batch: int, capacity: int, rope_rows: int, eos_count: int, device: torch.device) -> DecodeState:
        long, flag = torch.long, torch.bool
        return cls(
            token=torch.zeros(batch, 1, dtype=long, device=device),
            positions=torch.zeros(rope_rows, batch, 1, dtype=long, device=device),
            valid=torch.zeros(batch, capacity, dtype=flag, device=device),
            slot=torch.zeros(1, dtype=long, device=device),
            finished=torch.zeros(batch, dtype=flag, device=device),
            eos=torch.full((max(1, eos_count),), NO_EOS, dtype=long, device=device),
        )

    def load(self, prompt_mask: Tensor, next_positions: Tensor, eos_ids: list[int]) -> None:
        """Start a decoding after a prefill of `prompt_mask` [B, L] (queued copies: no host wait)."""
        length = prompt_mask.shape[1]
        self.valid.zero_()
        self.valid[:, :length] = prompt_mask != 0
        self.positions.copy_(next_positions)
        self.slot.fill_(length)
        self.finished.zero_()
        ids = eos_ids or [NO_EOS]
        self.eos.copy_(torch.tensor(ids, dtype=torch.long), non_blocking=True)


@dataclass
class _Pooled:
    """What one (batch, bucket) keeps between decodings: the addresses its graph was captured on."""

    cache: Any  # the adapter's static cache (transformers' StaticCache)
    state: DecodeState
    prefills: GraphCache  # prefill graphs writing into `cache`, one per padded prompt length
    replay: Callable[[], tuple[Tensor, Tensor]] | None = None
    eager_steps: int = 0


class DecodeStep:
    """Runs decode steps in one mode; keeps captured graphs (and compiled caches) between generations.

    mode: "eager" (any device), "graphs" (CUDA graphs without compilation; eager where the adapter's decoder
    cannot be captured, e.g. a backend that builds its mask from host values) or "compile" (`torch.compile`,
    "reduce-overhead").
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        mode: str = "eager",
        pool_size: int = DEFAULT_POOL_SIZE,
        runner: GraphCapture | None = None,
        warmup_steps: int = WARMUP_STEPS,
        prefill_runner: GraphCapture | None = None,
        prefill_graph_tokens: int = PREFILL_GRAPH_TOKENS,
    ) -> None:
        if mode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode '{mode}'; expected one of {', '.join(DECODE_MODES)}")
        self.adapter, self.mode, self.pool_size, self.warmup_steps = adapter, mode, pool_size, warmup_steps
        graphs = mode == "graphs"
        self.runner = runner if runner is not None else (CudaGraphCapture() if graphs else None)
        # prefill graphs of every cache share one pool: each prefill's logits are cloned out before the next
        if prefill_runner is None and graphs and runner is None:
            prefill_runner = CudaGraphCapture(shared_pool=True)
        self.prefill_runner = prefill_runner
        self.prefill_graph_tokens = prefill_graph_tokens
        self._pool: OrderedDict[tuple, _Pooled] = OrderedDict()
        self.captures = 0  # graphs captured so far (each costs a capture once)
        self._forward = self._forward_eager
        self.compile_seconds = 0.0  # host time of compiled steps' first calls per shape (compilation, mostly)
        if mode == "compile":
            compiled = torch.compile(self._forward_eager, mode="reduce-overhead", dynamic=True)
            self._forward = self._timed_first_calls(compiled)

    def _timed_first_calls(self, forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """`forward`, adding to `compile_seconds` the host time of the first few calls per batch size (torch
        compiles on a new shape and records its graphs over the next calls; later calls only launch)."""
        calls: dict[int, int] = {}

        def timed(token: Tensor, positions: Tensor, mask: Tensor | None, cache: Any) -> Tensor:
            seen = calls.get(token.shape[0], 0)
            if seen >= COMPILE_WARMUP_CALLS:
                return forward(token, positions, mask, cache)
            calls[token.shape[0]] = seen + 1
            started = time.perf_counter()
            logits = forward(token, positions, mask, cache)
            self.compile_seconds += time.perf_counter() - started
            return logits

        return timed

    @property
    def compiled(self) -> bool:
        return self.mode == "compile"

    @property
    def captured(self) -> bool:
        """Steps replay CUDA graphs (the mode asks for them and the adapter's decoder allows them)."""
        return self.mode == "graphs" and self.adapter.decode_capturable

    def cache_kind(self, requested: str) -> str:
        """ "auto": a static cache where steps are captured or compiled (fixed addresses), else dynamic."""
        if requested != "auto":
            return requested
        return "static" if self.mode != "eager" else "dynamic"

    def start(
        self,
        batch: int,
        length: int,
        rope_rows: int,
        max_new_tokens: int,
        eos_count: int,
        cache_kind: str,
        device: torch.device,
        padded: bool = True,
    ) -> Decoding:
        """The cache and buffers of one generation (a prompt of `length` columns), before its prefill.

        `padded`: whether some prompt row is left-padded. Without padding a dynamic cache holds only real
        tokens, so steps pass no mask at all, as stock `generate` does (sdpa then attends grouped kv heads
        natively instead of repeating them per query head)."""
        needed = length + max_new_tokens
        pooled = self.mode != "eager" and cache_kind == "static"
        if not pooled:
            static = cache_kind == "static"
            return Decoding(
                self,
                self.adapter.new_cache(cache_kind, needed),
                DecodeState.allocate(batch, needed, rope_rows, eos_count, device),
                length,
                None,
                static=static,
                masked=static or padded,
            )
        capacity = capacity_bucket(needed)
        key = (batch, capacity, rope_rows, max(1, eos_count), str(device))
        entry = self._pool.get(key)
        if entry is None:
            entry = self._pool[key] = _Pooled(
                self.adapter.new_cache("static", capacity),
                DecodeState.allocate(batch, capacity, rope_rows, eos_count, device),
                GraphCache(PREFILL_GRAPHS_PER_CACHE, self.prefill_runner),
            )
            while len(self._pool) > self.pool_size:
                self._pool.popitem(last=False)
        else:
            entry.cache.reset()  # in place: the graph's addresses stay valid
        self._pool.move_to_end(key)
        return Decoding(self, entry.cache, entry.state, length, entry, static=True)

    def captured_prefill_length(self, batch: int, length: int, has_extras: bool) -> int | None:
        """The length (a bucket, `buckets.prefill_bucket`) a prefill of `length` columns is padded to on the left
        and captured at, or None: it runs eagerly at its own length. Captured where decode steps are, for a
        decoder fed embeddings alone (no per-visual-token extras), while batch x bucket stays within
        `prefill_graph_tokens`."""
        if not self.captured or has_extras:
            return None
        bucket = prefill_bucket(length)
        return bucket if batch * bucket <= self.prefill_graph_tokens else None

    @property
    def pooled_keys(self) -> list[tuple]:
        """(batch, capacity, rope rows, eos count, device) of the kept caches, least recently used first."""
        return list(self._pool)

    # --- the step itself: the same code runs eagerly and is what a graph records --------------------------
    def _forward_eager(self, token: Tensor, positions: Tensor, mask: Tensor | None, cache: Any) -> Tensor:
        hidden = self.adapter.decode(self.adapter.embed(token), positions, mask, cache)
        return self.adapter.logits(hidden[:, -1]).float()

    def choose(self, state: DecodeState, logits: Tensor) -> Tensor:
        """Greedy next token [B] (the pad id for finished rows); marks rows that produced an end id."""
        chosen = torch.where(state.finished, self.adapter.tokens.pad, self.pick(logits))
        # a broadcast compare, not torch.isin: isin sorts (and synchronises) for larger id sets
        state.finished.logical_or_((chosen[:, None] == state.eos[None, :]).any(-1))
        state.token.copy_(chosen[:, None])
        return chosen

    def pick(self, logits: Tensor) -> Tensor:
        """The next token of every row from its logits [B, V]: argmax (a policy step overrides this)."""
        return logits.argmax(-1)

    def advance(
        self, state: DecodeState, cache: Any, mask_length: int | None = None, masked: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Feed `state.token`; returns (its next-token logits [B, V] float32, the chosen tokens [B]).

        `mask_length`: for a dynamic cache, the slots it holds after this step (a static cache's mask covers
        all of its slots); `masked` False: every cached slot is a real token (a dynamic cache, no padding)."""
        state.valid.index_fill_(1, state.slot, True)
        valid = state.valid if mask_length is None else state.valid[:, :mask_length]
        mask = self.adapter.decode_mask(valid) if masked else None
        logits = self._forward(state.token, state.positions, mask, cache)
        state.positions.add_(1)
        state.slot.add_(1)
        return logits, self.choose(state, logits)


class Decoding:
    """One generation's decode steps: eager, or the pooled graph (captured after the warm-up steps)."""

    def __init__(
        self,
        step: DecodeStep,
        cache: Any,
        state: DecodeState,
        length: int,
        entry: _Pooled | None,
        static: bool,
        masked: bool = True,
    ) -> None:
        self.step, self.cache, self.state, self.length, self.entry, self.static = (
            step,
            cache,
            state,
            length,
            entry,
            static,
        )
        self.masked = masked

    @property
    def capacity(self) -> int:
        return int(self.state.valid.shape[1])

    @property
    def cache_slots(self) -> int:
        """Positions a static cache holds (0 for a dynamic cache, which grows)."""
        return self.capacity if self.static else 0

    def prefill(
        self, embeds: Tensor, positions: Tensor, mask: Tensor, extras: Any = None, captured: bool = False
    ) -> Tensor:
        """Run the prompt (`embeds` [B, L, D], rotary ids [P, B, L], left-padded `mask` [B, L]) into the cache;
        returns the last column's next-token logits [B, V] float32.

        `captured` (a length from `DecodeStep.captured_prefill_length`, on a pooled cache): through a graph per
        prompt length (`entry.prefills`: eager the first time a length is seen, recorded the second, replayed
        after) with a prepared mask over the cache's slots, so the recorded prefill reads nothing from the host.
        Otherwise the decoder runs eagerly and builds its own mask."""
        adapter, entry = self.step.adapter, self.entry
        if captured and entry is not None and extras is None:
            cache = self.cache

            def run(embeds: Tensor, positions: Tensor, prepared: Tensor) -> Tensor:
                return adapter.logits(adapter.decode(embeds, positions, prepared, cache)[:, -1]).float()

            return entry.prefills("prefill", run, embeds, positions, adapter.prefill_mask(mask, self.capacity))
        hidden = adapter.decode(embeds, positions, mask, self.cache, extras)
        return adapter.logits(hidden[:, -1]).float()

    def advance(self, t: int) -> tuple[Tensor, Tensor]:
        """Decode step `t` (feeding the token chosen `t` steps after the prefill)."""
        if self.length + t >= self.capacity:
            raise ValueError(f"decode step {t} would write past the cache's {self.capacity} slots")
        entry, step, runner = self.entry, self.step, self.step.runner
        if entry is not None and runner is not None and step.captured:
            if entry.replay is None:
                if entry.eager_steps < step.warmup_steps:
                    entry.eager_steps += 1
                    return step.advance(self.state, self.cache)
                state, cache = self.state, self.cache
                entry.replay = runner.capture(lambda: step.advance(state, cache))
                step.captures += 1
            return entry.replay()
        return step.advance(self.state, self.cache, None if self.static else self.length + t + 1, self.masked)
