"""Background duties: one small base for every loop a server runs in a thread of its own.

A :class:`Loop` calls :meth:`~Loop.step` once a round: every ``interval_s``, or at once when
:meth:`~Loop.wake` is called, until :meth:`~Loop.stop`. A step that raises is logged and the loop goes on
with the next round, so a database that is away for a moment never ends a duty. A stopped loop can be
started again (a server that stops leading and later leads again).

The dispatcher (:mod:`.scheduler`), the lease watch (:mod:`.executors.pull`), the engines' reconciling
(:mod:`.executors.engine`), housekeeping (:mod:`labcloud.services.housekeeping`), leadership (:mod:`.leader`)
and the wake-ups listener (:mod:`.wakeups`) are loops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0


class Loop:
    """``step`` every ``interval_s`` seconds, in a daemon thread named ``labcloud-<name>``.

    Subclass and override :meth:`step`, or pass ``step``. ``step_first``: the first step runs as soon as the
    loop starts, rather than after the first interval. ``min_gap_s``: after a step the loop rests this long
    before a wake-up can start the next, so a burst of wake-ups (a submit each) becomes one step.
    """

    def __init__(
        self,
        name: str,
        interval_s: float,
        step: Callable[[], None] | None = None,
        *,
        step_first: bool = False,
        min_gap_s: float = 0.0,
    ) -> None:
        if step is None and type(self).step is Loop.step:
            raise TypeError(f"loop {name!r} needs a step: pass one or override Loop.step")
        self.name = name
        self.interval_s = interval_s
        self.step_first = step_first
        self.min_gap_s = min(min_gap_s, interval_s)
        self._step = step
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        """One round of the duty."""
        assert self._step is not None  # checked when the loop was made
        self._step()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a long step ends early when it sees it."""
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = threading.Event()  # a fresh one: a loop that was stopped may start again
        self._thread = threading.Thread(target=self._run, name=f"labcloud-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next step now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the loop to end and wait (up to ``timeout_s``) for the step in progress to finish."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_s)

    def _run(self) -> None:
        stop = self._stop
        if not self.step_first and self._pause(stop):
            return
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("%s failed; trying again in %g s", self.name, self.interval_s)
            if self._pause(stop):
                return

    def _pause(self, stop: threading.Event) -> bool:
        """Wait for the next round; True when the loop is stopping."""
        # Resting, the thread is not woken by each wake-up: they stay set for the next round.
        if self.min_gap_s > 0 and stop.wait(self.min_gap_s):
            return True
        self._wake.wait(self.interval_s - self.min_gap_s)
        self._wake.clear()
        return stop.is_set()
