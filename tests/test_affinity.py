"""CPU affinity for JSONL streams (engine/affinity.py): preparation threads keep off one core, left free for
the main thread, whose own CPUs are never changed."""

from __future__ import annotations

import os
import threading

import pytest

from hawk_cli.errors import UsageError
from hawk_cli.serving.affinity import CpuSplit, HelperCpus, plan_split
from hawk_cli.serving.stream import Prefetcher, prepare_in_processes

linux_only = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="per-thread affinity is Linux's, and moving a thread needs two CPUs",
)


def hyperthreaded(cpu: int) -> set[int]:
    """8 cores with two hardware threads each: cpu c and c + 8 share a core."""
    return {cpu % 8, cpu % 8 + 8}


def test_the_launcher_gets_a_whole_core_and_the_helpers_everything_else():
    split = plan_split(set(range(16)), hyperthreaded)
    assert split == CpuSplit(launcher=frozenset({7, 15}), helpers=frozenset(set(range(16)) - {7, 15}))


def test_without_hardware_threads_the_launcher_gets_one_cpu():
    split = plan_split(set(range(16)), lambda cpu: {cpu})
    assert split.launcher == {15} and split.helpers == set(range(15))


def test_siblings_outside_the_allowed_set_are_not_taken():
    split = plan_split({0, 1, 2, 3, 7}, hyperthreaded)  # 15 (7's sibling) is not ours
    assert split.launcher == {7} and split.helpers == {0, 1, 2, 3}


@pytest.mark.parametrize("allowed", [{0}, {0, 1, 2}, {4, 12, 5}])
def test_fewer_than_four_cpus_means_no_split(allowed):
    assert plan_split(allowed, hyperthreaded) is None


def test_no_split_when_the_launchers_core_would_leave_fewer_than_two_helpers():
    four_way = {0, 1, 2, 3}  # one core with four hardware threads, and one more CPU
    assert plan_split(four_way | {4}, lambda cpu: four_way if cpu < 4 else {cpu}) == CpuSplit(
        launcher=frozenset({4}), helpers=frozenset(four_way)
    )
    assert plan_split(four_way, lambda cpu: four_way) is None


def test_two_hyperthreaded_cores_leave_two_helpers():
    split = plan_split({3, 11, 4, 12}, hyperthreaded)
    assert split.launcher == {4, 12} and split.helpers == {3, 11}


@linux_only
def test_helpers_are_confined_and_the_main_thread_is_left_alone():
    original = os.sched_getaffinity(0)
    launcher_cpu, helper_cpu = max(original), min(original)
    helpers = HelperCpus(split=CpuSplit(launcher=frozenset({launcher_cpu}), helpers=frozenset({helper_cpu})))
    seen = []
    helper = threading.Thread(target=lambda: (helpers.confine(), seen.append(os.sched_getaffinity(0))))
    helper.start()
    helper.join()
    assert helpers.active and seen == [{helper_cpu}]
    assert os.sched_getaffinity(0) == original


@linux_only
def test_disabled_helper_cpus_touch_nothing():
    original = os.sched_getaffinity(0)
    seen = []
    helper = threading.Thread(
        target=lambda: (HelperCpus(enabled=False).confine(), seen.append(os.sched_getaffinity(0)))
    )
    helper.start()
    helper.join()
    assert not HelperCpus(enabled=False).active and seen == [original]


@linux_only
def test_preparation_threads_inherit_what_the_reader_thread_set():
    """The pool's threads are started by the reader thread, so they run where `on_thread_start` put it."""
    original = os.sched_getaffinity(0)
    helper_cpu = min(original)

    class Item:
        def __init__(self, line):
            self.line, self.id = line, line

    reader = Prefetcher(
        [Item(i) for i in range(6)],
        lambda item: (os.sched_getaffinity(0), None),
        lookahead=4,
        workers=2,
        on_thread_start=lambda: os.sched_setaffinity(0, {helper_cpu}),
    )
    try:
        rows = [row for window in reader.windows(3, wait_for_full=True) for row in window]
    finally:
        reader.close()
    assert [row.request for row in rows] == [{helper_cpu}] * 6  # what each worker thread saw
    assert os.sched_getaffinity(0) == original  # the main thread was not moved


def test_preparation_runs_on_threads_unless_processes_are_asked_for():
    assert prepare_in_processes() is False and prepare_in_processes("threads") is False
    assert prepare_in_processes("processes") is True
    with pytest.raises(UsageError, match="unknown preparation mode"):
        prepare_in_processes("auto")
