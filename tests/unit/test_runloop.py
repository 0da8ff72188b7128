"""The run loop shared by trace-drops, encap-stats, xdp-decap and serve: steps, duration,
count, and one stop on signals. A fake clock makes the step arithmetic exact."""
import os
import signal
import threading

import pytest

from bpftools.runloop import Every, RunLoop


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.waits = []

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float) -> None:
        self.waits.append(round(timeout, 6))
        self.now += timeout


def test_steps_every_interval_until_the_duration():
    clock = FakeClock()
    with RunLoop(interval=1.0, duration=3.5, clock=clock, wait=clock.wait) as loop:
        steps = [round(now - 100.0, 6) for now in loop]
    assert steps == [1.0, 2.0, 3.0]
    assert clock.waits == [1.0, 1.0, 1.0, 0.5]  # the last wait ends at the deadline, not a step later
    assert loop.stopped_by == "duration"


def test_a_duration_on_a_step_boundary_ends_without_that_step():
    """The caller reports the final totals after the loop: no report twice at the same moment."""
    clock = FakeClock()
    with RunLoop(interval=1.0, duration=2.0, clock=clock, wait=clock.wait) as loop:
        steps = [now for now in loop]
    assert len(steps) == 1 and loop.stopped_by == "duration"


def test_a_wait_that_returns_early_still_gets_a_step():
    """trace-drops' ring-buffer poll returns as soon as events came: each poll is a step."""
    clock = FakeClock()

    def poll(timeout):
        clock.now += min(0.25, timeout)

    with RunLoop(interval=1.0, duration=1.0, clock=clock, wait=poll) as loop:
        steps = list(loop)
    assert len(steps) == 3 and loop.stopped_by == "duration"  # 0.25, 0.5, 0.75; then the deadline


def test_count_ends_the_loop_and_left_says_how_many_may_follow():
    clock = FakeClock()
    with RunLoop(interval=0.1, count=5, clock=clock, wait=clock.wait) as loop:
        for _ in loop:
            assert loop.left() in (5, 3, 1)
            loop.add(min(2, loop.left()))
    assert loop.seen == 5 and loop.left() == 0 and loop.stopped_by == "count"


def test_no_limits_runs_until_stopped():
    clock = FakeClock()
    with RunLoop(interval=1.0, clock=clock, wait=clock.wait) as loop:
        for n, _ in enumerate(loop):
            if n == 9:
                loop.stop("enough")
    assert n == 9 and loop.stopped_by == "enough" and loop.left() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_stops_after_the_current_step_and_handlers_are_restored(sig):
    before = signal.getsignal(sig)
    clock = FakeClock()
    steps = 0
    with RunLoop(interval=1.0, clock=clock, wait=clock.wait) as loop:
        for _ in loop:
            steps += 1
            os.kill(os.getpid(), sig)  # handled at once, in this thread: the step still finishes
            steps += 10
    assert steps == 11
    assert loop.stopped_by == signal.Signals(sig).name
    assert signal.getsignal(sig) is before


def test_a_signal_wakes_the_default_sleep_at_once():
    """A real sleep of a minute ends when SIGTERM arrives from another thread."""
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    with RunLoop(interval=60.0, duration=30.0) as loop:
        timer.start()
        steps = list(loop)
    timer.join()
    assert steps == [] and loop.stopped_by == "SIGTERM"


def test_stop_from_another_thread_wakes_the_sleep():
    with RunLoop(interval=60.0, duration=30.0) as loop:
        threading.Timer(0.1, loop.stop, ("done",)).start()
        assert list(loop) == []
    assert loop.stopped_by == "done"


def test_on_hangup_runs_between_steps_and_the_loop_goes_on():
    clock = FakeClock()
    reloads = []
    with RunLoop(interval=1.0, duration=3.5, clock=clock, wait=clock.wait,
                 on_hangup=lambda: reloads.append(clock.now)) as loop:
        for n, _ in enumerate(loop):
            if n == 0:
                os.kill(os.getpid(), signal.SIGHUP)
    assert reloads == [102.0] and loop.stopped_by == "duration"


def test_iterating_outside_with_is_an_error():
    with pytest.raises(RuntimeError):
        list(RunLoop(interval=1.0))


def test_every_is_due_once_per_period_without_bursts_after_a_slow_step():
    every = Every(10.0, now=0.0)
    assert [every(t) for t in (5.0, 10.0, 12.0, 20.0)] == [False, True, False, True]
    assert every(75.0) is True and every(80.0) is False and every(85.0) is True
