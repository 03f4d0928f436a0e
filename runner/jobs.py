"""The jobs a runner has been handed: the one it runs and those it holds behind it.

Shared by the main thread, which offers jobs as the sheep sends them and withdraws held ones,
and the worker thread, which takes the next job the moment it has reported the last one, with
no hop through the main thread in between.

    jobs = JobQueue(held=1)
    jobs.offer(run)            # main thread: False when the runner is full
    jobs.withdraw(job_id)      # main thread: True if it was held, and is dropped
    run = jobs.take()          # worker: blocks for the next job; None once closed
"""

from __future__ import annotations

import collections
import threading

from schemas.runner import Run


class JobQueue:
    def __init__(self, held: int) -> None:
        self._limit = held
        self._held: collections.deque[Run] = collections.deque()
        self._running: str | None = None
        self._closed = False
        self._changed = threading.Condition()

    @property
    def running(self) -> str | None:
        """The job the worker runs, if any."""
        return self._running

    def offer(self, run: Run) -> bool:
        """Take ``run`` to be run after those before it; False if the runner is busy and
        holds as many jobs as it may."""
        with self._changed:
            room = self._limit + (self._running is None)
            if len(self._held) >= room:
                return False
            self._held.append(run)
            self._changed.notify()
            return True

    def withdraw(self, job_id: str) -> bool:
        """Drop a held job; False if it is not held (it started, or was never here)."""
        with self._changed:
            for run in self._held:
                if run.job_id == job_id:
                    self._held.remove(run)
                    return True
            return False

    def take(self) -> Run | None:
        """The next job, once there is one (the job taken before has ended); None once
        :meth:`close` was called."""
        with self._changed:
            self._running = None
            self._changed.wait_for(lambda: self._held or self._closed)
            if self._closed:
                return None
            run = self._held.popleft()
            self._running = run.job_id
            return run

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
