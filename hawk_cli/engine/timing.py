"""Phase timers: which part of a generation the time went to, with asynchronous CUDA work charged correctly.

Two kinds. `PhaseTimer` waits for the device at every phase boundary: exact host wall time per phase, and what
`hawk bench` needs to read a memory peak per phase. `EventTimer` records CUDA events instead and waits once, when
the times are read: each phase's span on the device's timeline, without stalling the host between phases. In
JSONL mode a batch has five phases, and every wait also hands the interpreter lock to the preparation threads,
which keep it for up to Python's switch interval when they are busy (traces: docs/run-workloads.md#throughput).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


def synchronize(devices: Iterable[torch.device | str]) -> None:
    """Wait for every CUDA device among `devices` (a model spread over GPUs works on all of them)."""
    for device in devices:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)


class PhaseTimer:
    """Seconds per named phase, host wall time, synchronising the device(s) before and after each phase.
    `devices`: every device the model uses, when it spans several (default: `device` alone)."""

    def __init__(self, device: torch.device, devices: Iterable[torch.device] | None = None) -> None:
        self.device = torch.device(device)
        self.devices = tuple(devices) if devices else (self.device,)
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        synchronize(self.devices)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class EventTimer:
    """Seconds per named phase from CUDA events on the current stream: no host wait until `seconds` is read.

    A phase's time is the span between its start and end events on the device's timeline, i.e. from when the
    device reached the phase's first queued work to when it finished its last. On a CPU device there is nothing
    asynchronous and it times host wall clock like `PhaseTimer`. Nor for a model spread over several devices
    (`devices`): events on one device's stream do not bound work queued on the others, so each phase then
    synchronises every device and times host wall clock.
    """

    def __init__(self, device: torch.device, devices: Iterable[torch.device] | None = None) -> None:
        self.device = torch.device(device)
        self.devices = tuple(torch.device(d) for d in devices) if devices else (self.device,)
        self._spans: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._host: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if len(self.devices) > 1:
            synchronize(self.devices)
            start = time.perf_counter()
            try:
                yield
            finally:
                synchronize(self.devices)
                self._host[name] = self._host.get(name, 0.0) + time.perf_counter() - start
            return
        if self.device.type != "cuda":
            start = time.perf_counter()
            try:
                yield
            finally:
                self._host[name] = self._host.get(name, 0.0) + time.perf_counter() - start
            return
        begin, finish = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        try:
            yield
        finally:
            finish.record()
            self._spans.append((name, begin, finish))

    @property
    def seconds(self) -> dict[str, float]:
        """Waits for the last phase to finish on the device, then sums each phase's spans."""
        totals = dict(self._host)
        if self._spans:
            self._spans[-1][2].synchronize()
        for name, start, end in self._spans:
            totals[name] = totals.get(name, 0.0) + start.elapsed_time(end) / 1e3
        return totals
