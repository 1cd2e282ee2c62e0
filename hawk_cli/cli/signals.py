"""SIGTERM and SIGHUP handled as Ctrl-C is: the command unwinds (temporary files removed, workers stopped) and
hawk exits with 128 + the signal's number, as shells report a process a signal ended."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A termination signal, raised where Ctrl-C's KeyboardInterrupt would be, so the same cleanup runs."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


@contextmanager
def signals_as_interrupts() -> Iterator[list[int]]:
    """While active, SIGTERM / SIGHUP raise `Terminated` in the main thread; yields the signals received.

    Only the first signal raises: a second one arriving during the cleanup is recorded, not raised, so the
    cleanup it would interrupt (removing a temporary file) completes. Earlier handlers come back afterwards."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield received
        return

    def handler(signum, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Terminated(signum)

    previous = {signum: signal.signal(signum, handler) for signum in HANDLED}
    try:
        yield received
    finally:
        for signum, earlier in previous.items():
            signal.signal(signum, earlier)
