"""Phase timers (engine/timing.py): the event timer charges device work to its phase without making the host
wait at phase boundaries; on a CPU it times wall clock."""

from __future__ import annotations

import time

import pytest
import torch

from hawk_cli.engine.timing import EventTimer, PhaseTimer


@pytest.mark.parametrize("timer_class", [EventTimer, PhaseTimer])
def test_phases_on_the_cpu_add_up_per_name(timer_class):
    timer = timer_class(torch.device("cpu"))
    for _ in range(2):
        with timer.phase("a"):
            time.sleep(0.02)
    with timer.phase("b"):
        pass
    seconds = timer.seconds
    assert set(seconds) == {"a", "b"}
    assert 0.04 <= seconds["a"] < 0.5 and 0 <= seconds["b"] < 0.01


@pytest.mark.contract
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_event_timer_charges_queued_device_work_without_waiting_for_it():
    device = torch.device("cuda")
    torch.cuda.synchronize()
    cycles = 200_000_000  # ~0.1 s of device spinning on a ~2 GHz GPU clock
    for timer_class, host_waits in ((EventTimer, False), (PhaseTimer, True)):
        timer = timer_class(device)
        started = time.perf_counter()
        with timer.phase("spin"):
            torch.cuda._sleep(cycles)
        host_s = time.perf_counter() - started
        device_s = timer.seconds["spin"]
        assert device_s > 0.02, timer_class
        # The event timer returns to the host at once; the synchronising one waits the spin out (control).
        assert (host_s > 0.5 * device_s) is host_waits, (timer_class, host_s, device_s)
