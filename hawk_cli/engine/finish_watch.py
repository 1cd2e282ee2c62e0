"""Learning that every row has finished without making the device wait for the host.

Reading a device flag each step (`bool(finished.all())`) is a host synchronisation: the host stops queuing work
until the device has drained its queue, so the device idles while the host queues the next step. Instead, each
step queues a copy of the flag into host memory (pinned on CUDA, so the copy is asynchronous) followed by an
event, and the loop reads only flags whose copies have landed (`Event.query()` does not wait). The host blocks
only when more than `lag` steps are in flight, and then on the oldest one: the device still has `lag` steps
queued, so it never idles, and at most `lag` steps are computed after the last row finished.

On a CPU device every operation has completed when it returns, so each flag has landed when it is read and the
loop stops on the step where the last row finished, as a per-step check would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

DEFAULT_LAG = 4


class Marker(Protocol):
    """What the watch needs of a CUDA event (tests substitute a simulated device)."""

    def record(self) -> None: ...

    def query(self) -> bool: ...

    def synchronize(self) -> None: ...


class FinishWatch:
    """Tells the decode loop whether every row had finished, `lag` steps late at most, never stalling the device."""

    def __init__(
        self, device: torch.device, lag: int = DEFAULT_LAG, marker: Callable[[], Marker] | None = None
    ) -> None:
        if lag < 0:
            raise ValueError(f"lag must be at least 0, got {lag}")
        device = torch.device(device)
        asynchronous = device.type == "cuda"
        self.lag = lag
        slots = lag + 2  # a slot is reused only after its flag was read
        pinned = asynchronous and torch.cuda.is_available()
        self._host = torch.zeros(slots, dtype=torch.bool, pin_memory=pinned)
        self._flags = self._host.numpy()  # host memory: reading it is no device access
        if marker is None and asynchronous:
            marker = torch.cuda.Event
        self._markers = [marker() for _ in range(slots)] if marker is not None else None
        self._pending: deque[int] = deque()
        self._next = 0
        self.waits = 0  # times the host blocked on an in-flight flag

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def push(self, finished: Tensor) -> None:
        """Queue this step's "all rows finished" flag for the host."""
        slot = self._next
        self._next = (slot + 1) % len(self._flags)
        self._host[slot : slot + 1].copy_(finished.all().view(1), non_blocking=True)
        if self._markers is not None:
            self._markers[slot].record()
        self._pending.append(slot)

    def done(self) -> bool:
        """True once a landed flag says every row had finished; blocks only to keep at most `lag` in flight."""
        while self._pending:
            slot = self._pending[0]
            if self._markers is not None and not self._markers[slot].query():
                if len(self._pending) <= self.lag:
                    return False
                self._markers[slot].synchronize()
                self.waits += 1
            self._pending.popleft()
            if self._flags[slot]:
                return True
        return False
