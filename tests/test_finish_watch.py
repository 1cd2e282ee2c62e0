"""FinishWatch on a simulated asynchronous device: it reads only landed flags, keeps at most `lag` in flight,
and learns that every row finished at most `lag` steps late (on time when the device keeps up)."""

from __future__ import annotations

import pytest
import torch

from hawk_cli.engine.finish_watch import FinishWatch


class SimulatedDevice:
    """A queue of steps the device completes only when the test says so (or when the host waits on one)."""

    def __init__(self) -> None:
        self.queued = 0  # steps queued so far
        self.completed = 0  # steps done
        self.waits = 0

    def marker(self):
        device = self

        class Marker:
            step = None

            def record(self) -> None:
                device.queued += 1
                self.step = device.queued

            def query(self) -> bool:
                return device.completed >= self.step

            def synchronize(self) -> None:
                device.waits += 1
                device.completed = max(device.completed, self.step)

        return Marker()


def _run(lag: int, finish_at: int, steps: int, device_keeps_up: bool) -> tuple[int | None, int, int]:
    """Push `steps` flags (all rows finished from step `finish_at`); returns (step at which done() said so,
    most flags in flight after done(), host waits)."""
    device = SimulatedDevice()
    watch = FinishWatch(torch.device("cpu"), lag=lag, marker=device.marker)
    most_in_flight = 0
    for step in range(steps):
        watch.push(torch.tensor([step >= finish_at, True]))
        if device_keeps_up:
            device.completed = device.queued
        stopped = watch.done()
        most_in_flight = max(most_in_flight, watch.in_flight)
        if stopped:
            return step, most_in_flight, device.waits
    return None, most_in_flight, device.waits


@pytest.mark.parametrize("lag", [0, 1, 4])
def test_a_device_that_keeps_up_is_read_on_time_without_waiting(lag):
    stopped, in_flight, waits = _run(lag, finish_at=5, steps=20, device_keeps_up=True)
    assert stopped == 5 and waits == 0 and in_flight == 0


@pytest.mark.parametrize("lag", [0, 1, 4])
def test_a_stalled_device_costs_at_most_lag_steps_and_waits_on_the_oldest_only(lag):
    stopped, in_flight, waits = _run(lag, finish_at=5, steps=40, device_keeps_up=False)
    assert stopped == 5 + lag  # the flag of step 5 is read once lag newer steps are queued
    assert in_flight <= lag
    assert waits == stopped - lag + 1  # one wait per step beyond the lag, each on one flag


def test_unlanded_flags_are_not_read():
    """Negative control of the reading rule: every row finished from step 0, the device has done nothing, so
    with lag 3 the first three calls must still say "not done"."""
    device = SimulatedDevice()
    watch = FinishWatch(torch.device("cpu"), lag=3, marker=device.marker)
    answers = []
    for _ in range(4):
        watch.push(torch.tensor([True]))
        answers.append(watch.done())
    assert answers == [False, False, False, True] and device.waits == 1


def test_without_markers_the_cpu_reads_each_flag_at_once():
    watch = FinishWatch(torch.device("cpu"))
    watch.push(torch.tensor([True, False]))
    assert not watch.done()
    watch.push(torch.tensor([True, True]))
    assert watch.done() and watch.waits == 0


def test_slots_are_reused_without_mixing_flags():
    """More steps than slots: a reused slot carries its new flag, not an old one."""
    device = SimulatedDevice()
    watch = FinishWatch(torch.device("cpu"), lag=1, marker=device.marker)
    for _ in range(50):
        watch.push(torch.tensor([False]))
        device.completed = device.queued
        assert not watch.done()
    watch.push(torch.tensor([True]))
    device.completed = device.queued
    assert watch.done()
