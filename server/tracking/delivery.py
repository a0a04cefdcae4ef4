"""Delivery that never blocks training: one background thread sends queued jobs in order, retrying with backoff.

The training side only appends to a queue (:meth:`Delivery.put` returns at once). A daemon
thread runs the jobs one after another, in order; a job that fails is retried with
exponential backoff (capped) while later ones wait behind it, so a tracking server that
comes back receives everything in the order it was produced. An outage is logged once
when it starts and once when it ends, not per attempt. A job whose failure cannot be
cured by retrying (``permanent``) is dropped with a warning. :meth:`Delivery.close`
waits a bounded time for the queue to drain and returns what was not delivered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    """One thing to deliver.

    Attributes:
        label: what it is, as reported (``round 3``, ``artifact model_card.json``).
        action: sends it; raises on failure.
    """

    label: str
    action: Callable[[], None]


@dataclass(slots=True)
class Outcome:
    """What a delivery achieved so far (labels in the order they were queued)."""

    delivered: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Refused by the receiver for good (e.g. a parameter that changed value)."""
    pending: list[str] = field(default_factory=list)
    """Still queued; after :meth:`Delivery.close`: not delivered."""


class Delivery:
    """A queue of jobs sent by one daemon thread.

    Args:
        target: what the jobs go to, for log lines (``MLflow at http://...``).
        on_change: called (from the delivery thread) with the outcome after every job
            delivered or dropped, e.g. to keep ``tracking.json`` current; must not raise.
        permanent: tells a failure that retrying cannot cure.
        backoff: first and largest wait between attempts of a failing job, seconds.
    """

    def __init__(
        self,
        target: str,
        on_change: Callable[[Outcome], None] = lambda _: None,
        permanent: Callable[[Exception], bool] = lambda _: False,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.target = target
        self._on_change = on_change
        self._permanent = permanent
        self._backoff = backoff
        self._jobs: deque[Job] = deque()
        self._outcome = Outcome()
        self._cond = threading.Condition()
        self._closing = False
        self._give_up = False
        self._wake = False
        self._thread = threading.Thread(target=self._work, name="fedward-tracking", daemon=True)
        self._thread.start()

    def put(self, job: Job) -> None:
        """Queue ``job``; returns at once."""
        with self._cond:
            if self._closing:
                raise RuntimeError("delivery is closed")
            self._jobs.append(job)
            self._cond.notify_all()

    def outcome(self) -> Outcome:
        """A snapshot of what was delivered, dropped and is still pending."""
        with self._cond:
            return Outcome(
                list(self._outcome.delivered), list(self._outcome.dropped), [job.label for job in self._jobs]
            )

    def close(self, wait: float) -> Outcome:
        """Let the queue drain for at most ``wait`` seconds (a failing job is retried at once, then
        with backoff again), then stop; what is still queued was not delivered."""
        with self._cond:
            self._closing = self._wake = True
            self._cond.notify_all()
        self._thread.join(timeout=wait)
        with self._cond:
            self._give_up = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)  # a call in flight may still finish; then it counts as delivered
        return self.outcome()

    def _next(self) -> Job | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._jobs) or self._closing or self._give_up)
            if self._give_up or not self._jobs:
                return None
            return self._jobs[0]

    def _work(self) -> None:
        failures = 0
        while (job := self._next()) is not None:
            try:
                job.action()
            except Exception as err:
                if self._permanent(err):
                    log.warning("%s refused %s (%s); it stays in the run directory only", self.target, job.label, err)
                    self._settle(job, self._outcome.dropped)
                    continue
                failures += 1
                if failures == 1:
                    log.warning(
                        "%s is unreachable (%s); the run goes on, its records stay in the run directory and "
                        "are retried with backoff",
                        self.target,
                        _short(err),
                    )
                if not self._pause(min(self._backoff[1], self._backoff[0] * 2 ** (failures - 1))):
                    return
                continue
            if failures:
                log.warning("%s is reachable again after %d failed attempts", self.target, failures)
                failures = 0
            self._settle(job, self._outcome.delivered)

    def _pause(self, seconds: float) -> bool:
        """Wait before the next attempt (cut short when closing starts); ``False`` when giving up."""
        deadline = time.monotonic() + seconds
        with self._cond:
            self._cond.wait_for(lambda: self._give_up or self._wake or time.monotonic() >= deadline, timeout=seconds)
            self._wake = False
            return not self._give_up

    def _settle(self, job: Job, into: list[str]) -> None:
        with self._cond:
            if self._jobs and self._jobs[0] is job:
                self._jobs.popleft()
            into.append(job.label)
        try:
            self._on_change(self.outcome())
        except Exception as err:  # pragma: no cover - on_change must not raise
            log.warning("could not record the tracking state: %s", err)


def _short(err: Exception) -> str:
    """The first line of an error, at most 200 characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]
