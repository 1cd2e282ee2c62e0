"""Keep request preparation off one CPU, so the thread that launches the device's work always finds it free
(Linux).

Why: with a small model on a GPU the main thread is bound by the host: it launches hundreds of small kernels
per batch, and when busy preparation threads or processes (PNG decoding, resizing) share its CPU, every
operator it dispatches gets slower: traced operators took markedly longer at batch 8 than at batch 1, whose
preparation is eight times lighter (figures, machine and command: docs/run-workloads.md#throughput).

How: for the length of a stream the helpers (the reader thread, and the threads or processes it starts, which
inherit its CPUs) run on every allowed CPU but one physical core. The main thread itself is NOT pinned: pinned to
one core, its later CPU work (torch's intra-op threads it starts, NumPy) was confined there too, and the 7B
config's 1008-pixel vision phase ran several times slower (docs/run-workloads.md#throughput). The scheduler puts it
on the free core. Nothing happens with fewer than four allowed CPUs, off Linux, or when the topology cannot be
read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_CPUS = 4


@dataclass(frozen=True)
class CpuSplit:
    """CPUs kept free for the thread that launches device work, and CPUs for the threads that help it."""

    launcher: frozenset[int]
    helpers: frozenset[int]


def plan_split(allowed: set[int], siblings_of: Callable[[int], set[int]]) -> CpuSplit | None:
    """The launcher keeps the physical core of the highest allowed CPU (its allowed hardware threads); helpers
    get the rest. None when too few CPUs would be left to help (fewer than MIN_CPUS allowed)."""
    if len(allowed) < MIN_CPUS:
        return None
    launcher = (siblings_of(max(allowed)) | {max(allowed)}) & allowed
    helpers = allowed - launcher
    if len(helpers) < 2:
        return None
    return CpuSplit(launcher=frozenset(launcher), helpers=frozenset(helpers))


def _siblings(cpu: int) -> set[int]:
    """Hardware threads sharing `cpu`'s core, from sysfs ("3,11" or "2-3")."""
    text = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


class HelperCpus:
    """Where helper threads may run: `confine()` is called on each helper thread as it starts (threads and
    processes it starts inherit its CPUs). Inactive (a no-op) when no split is possible or it is disabled."""

    def __init__(self, split: CpuSplit | None = None, enabled: bool = True) -> None:
        self.split = None
        if not enabled or not hasattr(os, "sched_setaffinity"):
            return
        try:
            self.split = split or plan_split(os.sched_getaffinity(0), _siblings)
        except (OSError, ValueError):
            self.split = None

    @property
    def active(self) -> bool:
        return self.split is not None

    def confine(self) -> None:
        """Called on a helper thread: run it on the helper CPUs only."""
        if self.split is not None:
            os.sched_setaffinity(0, self.split.helpers)
