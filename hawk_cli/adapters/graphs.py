"""CUDA graphs of fixed-shape tensor functions (a vision tower over one grid list, a prefill over one length
bucket), replayed per input signature.

Why: at small batches the vision tower and the prefill are bound by the host, not the device: each is a few
hundred small kernels launched one by one from Python, so the GPU waits between them. A CUDA graph replays all
of them in one launch. A graph replays on the addresses it was recorded on, so each signature (shapes, and
whatever host values the function reads, such as image grids) gets static input buffers that a call copies its
inputs into before the replay, and the outputs are cloned out after it.

Policy: the first call of a signature runs eagerly (lazy library initialisation must not be recorded, and a
signature seen once, like a single `hawk run`, never pays a capture); the second records it, then replays. The
graphs of one cache share one memory pool (each call's outputs are cloned before any other replay, so a later
graph reusing an earlier one's blocks cannot corrupt what a caller holds), and the least recently used graph is
dropped past `size`, so memory stays bounded whatever the stream of inputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["CudaGraphCapture", "GraphCache", "GraphCapture", "clone_outputs"]


class GraphCapture(Protocol):
    """Records `fn()` once and returns a function replaying it (returning the recorded outputs, refreshed)."""

    def capture(self, fn: Callable[[], Any]) -> Callable[[], Any]: ...


class CudaGraphCapture:
    """`torch.cuda.CUDAGraph` capture. `shared_pool`: every graph this object records shares one memory pool
    (for graphs never replayed concurrently whose outputs are consumed right after each replay); otherwise each
    graph has its own pool, freed with it."""

    def __init__(self, shared_pool: bool = False) -> None:
        self.shared_pool = shared_pool
        self._pool: Any = None

    def capture(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        if self.shared_pool and self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = fn()

        def replay() -> Any:
            graph.replay()
            return outputs

        return replay


def clone_outputs(value: Any) -> Any:
    """A copy of every tensor in `value` (a tensor, or dicts / lists / tuples of them), structure kept."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: clone_outputs(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_outputs(item) for item in value)
    return value


@dataclass
class _Entry:
    inputs: tuple[Tensor, ...] | None = None  # the static buffers the graph reads
    replay: Callable[[], Any] | None = None


class GraphCache:
    """`cache(key, fn, *inputs)` returns `fn(*inputs)`: eagerly the first time `key` is seen, from a graph
    recorded on the second and replayed from then on. `key` must determine everything `fn` reads besides
    `inputs` (shapes, dtypes and devices of `inputs` are added to it).

    `capture`: how graphs are recorded (`CudaGraphCapture(shared_pool=True)` on a GPU; tests pass a recorder that
    replays eagerly over the same static buffers); None: every call runs eagerly."""

    def __init__(self, size: int = 2, capture: GraphCapture | None = None) -> None:
        if size < 1:
            raise ValueError(f"a graph cache holds at least one graph, got size={size}")
        self.size = size
        self._capture = capture
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.captures = 0  # graphs recorded so far

    def __call__(self, key: Hashable, fn: Callable[..., Any], *inputs: Tensor) -> Any:
        if self._capture is None or not inputs:
            return fn(*inputs)
        full_key = (key, tuple((tuple(t.shape), t.dtype, str(t.device)) for t in inputs))
        entry = self._entries.get(full_key)
        if entry is None:
            self._entries[full_key] = _Entry()
            self._evict()
            return fn(*inputs)
        self._entries.move_to_end(full_key)
        if entry.replay is None:
            static = tuple(t.clone() for t in inputs)
            entry.replay = self._capture.capture(lambda: fn(*static))
            entry.inputs = static
            self.captures += 1
        else:
            for buffer, value in zip(entry.inputs or (), inputs, strict=True):
                buffer.copy_(value)
        return clone_outputs(entry.replay())

    def _evict(self) -> None:
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    @property
    def keys(self) -> list[Hashable]:
        """The signatures seen (captured or not), least recently used first."""
        return list(self._entries)

    def captured(self, key: Hashable) -> bool:
        return any(k[0] == key and e.replay is not None for k, e in self._entries.items())

    def clear(self) -> None:
        self._entries.clear()
