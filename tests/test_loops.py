"""The one base of the server's background duties: a step every interval or at once when woken, errors
logged and retried, a prompt stop, and a start again after it."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from labcloud.execution.loops import Loop
from live_server import eventually


def test_a_loop_steps_when_woken_without_waiting_for_its_interval() -> None:
    steps: list[float] = []
    loop = Loop("woken", 600, lambda: steps.append(time.monotonic()))
    loop.start()
    try:
        assert steps == []  # the first step waits for the interval unless step_first
        loop.wake()
        eventually(lambda: len(steps) == 1, 5, "the woken step")
        loop.wake()
        eventually(lambda: len(steps) == 2, 5, "the second woken step")
    finally:
        loop.stop()


def test_a_failing_step_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("the database is away")

    loop = Loop("flaky", 0.01, flaky, step_first=True)
    with caplog.at_level(logging.ERROR, logger="labcloud.execution.loops"):
        loop.start()
        try:
            eventually(lambda: len(calls) >= 4, 5, "steps after the failures")
        finally:
            loop.stop()
    failures = [r for r in caplog.records if "flaky failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None


def test_stop_is_prompt_waits_for_the_step_in_progress_and_a_stopped_loop_starts_again() -> None:
    steps: list[str] = []
    in_step, release = threading.Event(), threading.Event()

    def step() -> None:
        in_step.set()
        release.wait(10)
        steps.append("done")

    loop = Loop("slow", 600, step, step_first=True)
    loop.start()
    assert in_step.wait(5)
    stopper = threading.Thread(target=loop.stop)
    stopper.start()
    eventually(lambda: loop.stopping, 5, "the loop to be stopping")
    release.set()
    stopper.join(5)
    assert not stopper.is_alive() and steps == ["done"]  # stop returned after the step, not before

    started = time.monotonic()
    loop.start()  # again: the first step at once, then the 600 s pause, which stop cuts short
    eventually(lambda: len(steps) == 2, 5, "the step of the restarted loop")
    loop.stop()
    assert time.monotonic() - started < 5


def test_a_loop_needs_a_step() -> None:
    with pytest.raises(TypeError, match="needs a step"):
        Loop("nothing", 1)


def test_wake_ups_within_the_rest_after_a_step_become_one_step() -> None:
    steps: list[float] = []
    loop = Loop("rested", 600, lambda: steps.append(time.monotonic()), min_gap_s=0.3)
    loop.start()
    try:
        loop.wake()
        eventually(lambda: len(steps) == 1, 5, "the woken step")
        for _ in range(50):  # a burst of submits, each waking the dispatcher
            loop.wake()
            time.sleep(0.002)
        eventually(lambda: len(steps) == 2, 5, "the step after the rest")
        time.sleep(0.4)
        assert len(steps) == 2  # one step for the whole burst
        assert steps[1] - steps[0] >= 0.3  # not before the rest was over
        loop.wake()  # rested: a wake-up steps at once
        eventually(lambda: len(steps) == 3, 5, "the next woken step")
    finally:
        loop.stop()
